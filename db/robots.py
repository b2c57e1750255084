"""The robot registry: register, look up, list with a keyset on id, update, delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db.executor import Executor, Reader
from telemetry.errors import ConflictError

_COLUMNS = (
    "id, name, model, status, battery_level, metadata::text AS metadata, created_at, updated_at"
)

_INSERT = f"""
INSERT INTO robots (id, name, model, status, battery_level, metadata)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
RETURNING {_COLUMNS}
"""

_GET = f"SELECT {_COLUMNS} FROM robots WHERE id = $1"

# One statement per filter combination, so each one is planned for its own index
# (robots_status_id, robots_model_id, or the primary key) instead of a catch-all OR.
_LIST = {
    (False, False): f"SELECT {_COLUMNS} FROM robots WHERE id > $1 ORDER BY id LIMIT $2",
    (True, False): (
        f"SELECT {_COLUMNS} FROM robots WHERE status = $3 AND id > $1 ORDER BY id LIMIT $2"
    ),
    (False, True): (
        f"SELECT {_COLUMNS} FROM robots WHERE model = $3 AND id > $1 ORDER BY id LIMIT $2"
    ),
    (True, True): (
        f"SELECT {_COLUMNS} FROM robots WHERE status = $3 AND model = $4 AND id > $1 "
        "ORDER BY id LIMIT $2"
    ),
}

# A flag per column says whether the PATCH named it, so that an explicit null (battery level
# unknown) differs from "leave it as it is".
_UPDATE = f"""
UPDATE robots SET
    name = CASE WHEN $2 THEN $3 ELSE name END,
    model = CASE WHEN $4 THEN $5 ELSE model END,
    status = CASE WHEN $6 THEN $7 ELSE status END,
    battery_level = CASE WHEN $8 THEN $9::real ELSE battery_level END,
    metadata = CASE WHEN $10 THEN $11::jsonb ELSE metadata END,
    updated_at = now()
WHERE id = $1
RETURNING {_COLUMNS}
"""

_DELETE = "DELETE FROM robots WHERE id = $1"


@dataclass(frozen=True, slots=True)
class RobotFields:
    """The registry's writable columns; metadata is JSON text."""

    name: str = ""
    model: str = ""
    status: str = "active"
    battery_level: float | None = None
    metadata: str = "{}"


@dataclass(frozen=True, slots=True)
class RobotChanges:
    """A partial update: only the fields that are not None in `given` change."""

    given: frozenset[str]
    fields: RobotFields


async def register_robot(db: Executor, robot_id: str, fields: RobotFields) -> asyncpg.Record:
    try:
        row: asyncpg.Record | None = await db.fetchrow(
            _INSERT,
            robot_id,
            fields.name,
            fields.model,
            fields.status,
            fields.battery_level,
            fields.metadata,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ConflictError("robot", robot_id) from exc
    assert row is not None  # INSERT ... RETURNING answers with the row it inserted
    return row


async def find_robot(db: Reader, robot_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(_GET, robot_id)
    return row


async def list_robots(
    db: Reader,
    *,
    status: str | None,
    model: str | None,
    after_id: str,
    limit: int,
) -> list[asyncpg.Record]:
    """Robots in id order after `after_id` ('' for the first page)."""
    args: list[Any] = [after_id, limit]
    args.extend(v for v in (status, model) if v is not None)
    return await db.fetch(_LIST[status is not None, model is not None], *args)


async def update_robot(db: Executor, robot_id: str, changes: RobotChanges) -> asyncpg.Record | None:
    f, given = changes.fields, changes.given
    row: asyncpg.Record | None = await db.fetchrow(
        _UPDATE,
        robot_id,
        "name" in given,
        f.name,
        "model" in given,
        f.model,
        "status" in given,
        f.status,
        "battery_level" in given,
        f.battery_level,
        "metadata" in given,
        f.metadata,
    )
    return row


async def delete_robot(db: Executor, robot_id: str) -> bool:
    """Removes the registry entry; the robot's readings stay (see docs/api.md)."""
    result: str = await db.execute(_DELETE, robot_id)
    return result == "DELETE 1"


async def all_robot_ids(db: Reader) -> list[str]:
    """Every registered robot's id (the live service's periodic view of the registry)."""
    rows = await db.fetch("SELECT id FROM robots ORDER BY id")
    return [r["id"] for r in rows]


# battery_at is the time of the reading last written. A PATCH sets battery_level and leaves
# battery_at, so it holds until a reading newer than that one arrives; an older reading never
# overwrites a newer one (docs/api.md, Robots).
_FOLLOW_BATTERY = """
UPDATE robots AS r SET battery_level = b.level, battery_at = b.at
FROM unnest($1::text[], $2::real[], $3::timestamptz[]) AS b(id, level, at)
WHERE r.id = b.id AND (r.battery_at IS NULL OR r.battery_at < b.at)
"""


async def follow_battery_readings(
    db: Executor, readings: Sequence[tuple[str, float, datetime]]
) -> int:
    """Writes each robot's newest battery level (robot id, percent, reading time) into the
    registry, unless it holds a newer one; returns how many robots changed."""
    if not readings:
        return 0
    ids, levels, ats = zip(*readings, strict=True)
    result: str = await db.execute(_FOLLOW_BATTERY, list(ids), list(levels), list(ats))
    return int(result.rsplit(" ", 1)[1])
