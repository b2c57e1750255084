"""Reading pages of sensor_readings in (ts, robot_id, sensor_type) order, by keyset.

Every filter combination becomes a UNION ALL of "arms", each of which an index serves in ts
order with its own LIMIT:
- robot ids given: one arm per (robot, sensor type) pair, on the primary key
  (robot_id, sensor_type, ts);
- otherwise: one arm per sensor type, on sensor_readings_type_ts (sensor_type, ts, robot_id).
The arms are merged by PostgreSQL (Merge Append) and cut to the page size, so a page touches
about `limit` rows per arm at most, however large the table: no OFFSET, no scan of the range.

A keyset position (the last row of the previous page) is compared in SQL, in the database's
collation, so that the tie-break on robot_id agrees with the index's own order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from db.executor import Reader
from telemetry.sensors import SENSOR_TYPES

# Stand-ins for "no bound": one statement shape whether or not since/until are given, and still
# an index range condition (PostgreSQL prunes partitions with them at run time).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)

_SELECT = (
    "SELECT robot_id, sensor_type, ts, received_at, seq, data::text AS data FROM sensor_readings"
)


@dataclass(frozen=True, slots=True)
class ReadingKey:
    """A row's place in the order: the identity, time first."""

    ts: datetime
    robot_id: str
    sensor_type: str


@dataclass(frozen=True, slots=True)
class ReadingFilter:
    robot_ids: tuple[str, ...] = ()
    sensor_types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    descending: bool = True


class _Params:
    """Collects bind values; each call returns the placeholder of the value it added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True, slots=True)
class _Shared:
    since: str
    until: str
    limit: str
    key: tuple[str, str, str] | None  # placeholders of the key's ts, robot_id, sensor_type


def _pair_arm(robot: str, sensor: str, s: _Shared, descending: bool) -> str:
    # Within one (robot, type) pair ts is unique; the pair's place against the key's pair
    # decides whether a row at exactly the key's ts comes after the key.
    cmp, strict, order = ("<=", "<", "DESC") if descending else (">=", ">", "ASC")
    key = ""
    if s.key:
        kts, krobot, ksensor = s.key
        key = (
            f" AND ts {cmp} {kts} AND (ts {strict} {kts} OR ({robot}::text, {sensor}::text) "
            f"{strict} ({krobot}::text, {ksensor}::text))"
        )
    return (
        f"({_SELECT} WHERE robot_id = {robot} AND sensor_type = {sensor} "
        f"AND ts >= {s.since} AND ts < {s.until}{key} ORDER BY ts {order} LIMIT {s.limit})"
    )


def _type_arm(sensor: str, s: _Shared, descending: bool) -> str:
    cmp, strict, order = ("<=", "<", "DESC") if descending else (">=", ">", "ASC")
    key = ""
    if s.key:
        kts, krobot, ksensor = s.key
        key = (
            f" AND (ts, robot_id) {cmp} ({kts}, {krobot}::text) "
            f"AND ((ts, robot_id) {strict} ({kts}, {krobot}::text) "
            f"OR {sensor}::text {strict} {ksensor}::text)"
        )
    return (
        f"({_SELECT} WHERE sensor_type = {sensor} AND ts >= {s.since} AND ts < {s.until}{key} "
        f"ORDER BY ts {order}, robot_id {order} LIMIT {s.limit})"
    )


def build_page_query(
    reading_filter: ReadingFilter, *, after: ReadingKey | None, limit: int
) -> tuple[str, list[Any]]:
    """The statement and its arguments for one page; public so that EXPLAIN can use it."""
    p = _Params()
    shared = _Shared(
        since=p(reading_filter.since or EARLIEST),
        until=p(reading_filter.until or LATEST),
        limit=p(limit),
        key=(p(after.ts), p(after.robot_id), p(after.sensor_type)) if after else None,
    )
    arms: list[str] = []
    robots = sorted(set(reading_filter.robot_ids))
    for t in sorted(set(reading_filter.sensor_types) or SENSOR_TYPES):
        sensor = p(t)
        if robots:
            arms.extend(_pair_arm(p(r), sensor, shared, reading_filter.descending) for r in robots)
        else:
            arms.append(_type_arm(sensor, shared, reading_filter.descending))
    if len(arms) == 1:
        return arms[0][1:-1], p.values
    order = "DESC" if reading_filter.descending else "ASC"
    sql = (
        " UNION ALL ".join(arms)
        + f" ORDER BY ts {order}, robot_id {order}, sensor_type {order} LIMIT {shared.limit}"
    )
    return sql, p.values


async def read_page(
    db: Reader, reading_filter: ReadingFilter, *, after: ReadingKey | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` readings after `after` (exclusive) in the filter's order."""
    sql, args = build_page_query(reading_filter, after=after, limit=limit)
    return await db.fetch(sql, *args)
