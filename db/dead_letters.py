"""The dead-letter table: every refused message or reading, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from db import Connection
from db.executor import Reader
from telemetry.payload import Rejection, storable_text

_COLUMNS = ("received_at", "topic", "reason", "detail", "payload", "payload_size")


async def store_dead_letters(conn: Connection, rejections: Sequence[Rejection]) -> None:
    """The payload is stored as sent (bytea); topic and detail, which may quote anything the
    message held, are made storable (NUL and lone surrogates escaped) so that no content can
    make PostgreSQL refuse a dead letter."""
    if rejections:
        await conn.copy_records_to_table(
            "dead_letters",
            records=[
                (
                    r.received_at,
                    storable_text(r.topic),
                    str(r.reason),
                    storable_text(r.detail),
                    r.payload,
                    r.payload_size,
                )
                for r in rejections
            ],
            columns=_COLUMNS,
        )


async def delete_dead_letters_before(
    conn: Connection, *, cutoff: datetime, chunk: int = 10_000
) -> int:
    """Deletes dead letters received before `cutoff`, a chunk per statement (short locks, no
    long transaction); returns how many."""
    deleted = 0
    while True:
        status = await conn.execute(
            """DELETE FROM dead_letters WHERE id IN (
                   SELECT id FROM dead_letters WHERE received_at < $1 LIMIT $2)""",
            cutoff,
            chunk,
        )
        n = int(status.rsplit(" ", 1)[1])
        deleted += n
        if n < chunk:
            return deleted


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to list: all when every field is None. `robot_id` is the topic's
    second segment (`robots/{id}/...`), so refusals of a malformed topic under a robot's
    prefix count for that robot too. `since` inclusive, `until` exclusive."""

    robot_id: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterKey:
    """Where a page ended, in the listing's order (newest first)."""

    received_at: datetime
    id: int


# Each condition spells its column exactly as the index of migration 0004 does, so every
# filter is a range scan of an index that ends in (received_at, id), read backwards.
_CONDITIONS = {
    "robot_id": "split_part(topic, '/', 2) = ${}",
    "reason": "reason = ${}",
    "since": "received_at >= ${}",
    "until": "received_at < ${}",
}
_LIST_COLUMNS = "id, received_at, topic, reason, detail, payload, payload_size"


async def list_dead_letters(
    db: Reader, where: DeadLetterFilter, *, after: DeadLetterKey | None, limit: int
) -> list[asyncpg.Record]:
    """Dead letters newest first (received_at, then id, descending), after `after`."""
    conditions: list[str] = []
    args: list[Any] = []
    for name, condition in _CONDITIONS.items():
        value = getattr(where, name)
        if value is not None:
            args.append(value)
            conditions.append(condition.format(len(args)))
    if after is not None:
        args.extend((after.received_at, after.id))
        conditions.append(f"(received_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    sql = (
        f"SELECT {_LIST_COLUMNS} FROM dead_letters"
        + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        + f" ORDER BY received_at DESC, id DESC LIMIT ${len(args)}"
    )
    return await db.fetch(sql, *args)


# Rows arrive in id order (bigserial) closely enough for a live count: the index on the
# primary key bounds each round to what was refused since the last one. The robot is the
# topic's second level (robots/{id}/...); other topics count under ''.
_REFUSED_SINCE = """
SELECT CASE WHEN topic LIKE 'robots/%' THEN split_part(topic, '/', 2) ELSE '' END AS robot_id,
       count(*) AS n, max(id) AS last_id
FROM dead_letters WHERE id > $1 GROUP BY 1
"""


async def newest_dead_letter_id(db: Reader) -> int:
    value = await db.fetchval("SELECT coalesce(max(id), 0) FROM dead_letters")
    return int(value)


async def refused_by_robot_since(db: Reader, after_id: int) -> tuple[dict[str, int], int]:
    """Dead letters stored after id `after_id`, counted per robot, and the newest id seen (to
    pass next time). Sources that flood are stored up to the bridge's per-source limit only
    (DEAD_LETTERS_PER_SOURCE_PER_MINUTE), so a count here is at most that limit a minute."""
    rows = await db.fetch(_REFUSED_SINCE, after_id)
    last = max((r["last_id"] for r in rows), default=after_id)
    return {r["robot_id"]: r["n"] for r in rows}, last
