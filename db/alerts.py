"""Alerts: raise (once per robot or site and kind while open), clear, the open ones, and a
keyset-paged list.

Rows come back with epoch-millisecond times, the contract's unit (telemetry/live.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from db.executor import Executor, Reader

_COLUMNS = (
    "id, kind, severity, robot_id, site_id, "
    "(extract(epoch FROM raised_at) * 1000)::bigint AS raised_at, "
    "(extract(epoch FROM cleared_at) * 1000)::bigint AS cleared_at, "
    "message, detail::text AS detail"
)

# ON CONFLICT names the partial unique index alerts_open: an open alert of the same robot (or
# site) and kind (raised by an earlier run of the service) is kept, and returned by the second
# statement.
_RAISE = f"""
INSERT INTO alerts (kind, severity, robot_id, raised_at, message, detail, site_id)
VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5, $6::jsonb, $7)
ON CONFLICT (kind, coalesce(robot_id, ''), coalesce(site_id, '')) WHERE cleared_at IS NULL
DO NOTHING
RETURNING {_COLUMNS}
"""

_FIND_OPEN = f"""
SELECT {_COLUMNS} FROM alerts
WHERE kind = $1 AND coalesce(robot_id, '') = coalesce($2, '')
    AND coalesce(site_id, '') = coalesce($3, '') AND cleared_at IS NULL
"""

_CLEAR = f"""
UPDATE alerts SET cleared_at = to_timestamp($2 / 1000.0)
WHERE id = $1 AND cleared_at IS NULL
RETURNING {_COLUMNS}
"""

_OPEN = f"SELECT {_COLUMNS} FROM alerts WHERE cleared_at IS NULL ORDER BY id"

# Each filter adds one condition; every combination walks an index on (filter, id) or the
# partial one on open alerts, newest first.
_ACTIVE = {True: "cleared_at IS NULL", False: "cleared_at IS NOT NULL"}
_EQUALS = {"robot_id": "robot_id = ${n}", "kind": "kind = ${n}"}


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    kind: str
    severity: str
    robot_id: str | None
    raised_at: int
    cleared_at: int | None
    message: str
    detail: dict[str, Any]
    # The site an alert is about (`site_unreachable`); None for a robot's alerts.
    site_id: str | None = None


def _row(r: asyncpg.Record) -> AlertRow:
    return AlertRow(
        id=r["id"],
        kind=r["kind"],
        severity=r["severity"],
        robot_id=r["robot_id"],
        site_id=r["site_id"],
        raised_at=r["raised_at"],
        cleared_at=r["cleared_at"],
        message=r["message"],
        detail=orjson.loads(r["detail"]),
    )


async def raise_alert(
    db: Executor,
    *,
    kind: str,
    severity: str,
    robot_id: str | None,
    raised_at_ms: int,
    message: str,
    detail: dict[str, Any],
    site_id: str | None = None,
) -> tuple[AlertRow, bool]:
    """The open alert of this robot (or site) and kind, and whether this call raised it
    (False: it was already open)."""
    row: asyncpg.Record | None = await db.fetchrow(
        _RAISE,
        kind,
        severity,
        robot_id,
        raised_at_ms,
        message,
        orjson.dumps(detail).decode(),
        site_id,
    )
    if row is not None:
        return _row(row), True
    existing: asyncpg.Record | None = await db.fetchrow(_FIND_OPEN, kind, robot_id, site_id)
    if existing is None:
        # Cleared between the two statements (by another live service): raise it again.
        return await raise_alert(
            db,
            kind=kind,
            severity=severity,
            robot_id=robot_id,
            raised_at_ms=raised_at_ms,
            message=message,
            detail=detail,
            site_id=site_id,
        )
    return _row(existing), False


async def clear_alert(db: Executor, alert_id: int, *, cleared_at_ms: int) -> AlertRow | None:
    """The cleared alert; None when it was cleared already."""
    row: asyncpg.Record | None = await db.fetchrow(_CLEAR, alert_id, cleared_at_ms)
    return None if row is None else _row(row)


async def open_alerts(db: Reader) -> list[AlertRow]:
    return [_row(r) for r in await db.fetch(_OPEN)]


async def list_alerts(
    db: Reader,
    *,
    active: bool | None,
    robot_id: str | None,
    kind: str | None,
    before_id: int | None,
    limit: int,
) -> list[AlertRow]:
    """Alerts newest first (by id), before `before_id` (None: from the newest)."""
    conditions: list[str] = []
    args: list[Any] = [limit]
    if active is not None:
        conditions.append(_ACTIVE[active])
    for name, value in (("robot_id", robot_id), ("kind", kind)):
        if value is not None:
            args.append(value)
            conditions.append(_EQUALS[name].format(n=len(args)))
    if before_id is not None:
        args.append(before_id)
        conditions.append(f"id < ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    query = f"SELECT {_COLUMNS} FROM alerts {where}ORDER BY id DESC LIMIT $1"
    return [_row(r) for r in await db.fetch(query, *args)]
