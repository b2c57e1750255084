"""Aggregates of one numeric field of a sensor type: time buckets and a moving average.

The field path is bound as a text[] parameter (`data #>> $path`) and the aggregate function is
chosen from a closed set, so no client text reaches the SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from db.executor import Reader
from db.readings import SLOT_SECONDS
from db.sensor_reads import EARLIEST


class AggregateFn(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"


def _bucket_sql(fn: AggregateFn, by_robot: bool) -> str:
    robot = "AND robot_id = $6 " if by_robot else ""
    # Origin at the epoch: boundaries are multiples of the bucket size, as time_bucket does,
    # so requests over overlapping ranges agree on every bucket they share.
    # OFFSET 0 keeps the subquery from being flattened: the scan then yields (bucket, value)
    # alone, and the planner, which knows nothing of the bucket column, groups it in a hash
    # table of a few hundred buckets. Flattened, it sorted every row with its whole `data`
    # document, spilling to disk past ~25,000 rows (BENCHMARKS.md, round 9).
    return f"""
SELECT bucket, {fn.value}(v)::float8 AS value, count(v)::bigint AS samples
FROM (SELECT date_bin($1::interval, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS bucket,
             (data #>> $3::text[])::float8 AS v
      FROM sensor_readings
      WHERE sensor_type = $4 {robot}AND ts >= $2 AND ts < $5 OFFSET 0) AS s
GROUP BY bucket ORDER BY bucket
"""


_BUCKETS = {(fn, r): _bucket_sql(fn, r) for fn in AggregateFn for r in (False, True)}


@dataclass(frozen=True, slots=True)
class MinutePartial:
    """What one minute of readings, or one slot of a minute (one sensor type, of one robot or
    of every robot), gives every aggregate function of a field: an hour's buckets add sixty of
    these up instead of reading the hour's rows. `readings` counts rows (the live counters'
    figure), `samples` those holding the field."""

    readings: int
    samples: int
    total: float | None
    least: float | None
    greatest: float | None

    def __add__(self, other: MinutePartial) -> MinutePartial:
        """The partial of both periods' readings together."""
        return MinutePartial(
            self.readings + other.readings,
            self.samples + other.samples,
            _either(self.total, other.total, lambda a, b: a + b),
            _either(self.least, other.least, min),
            _either(self.greatest, other.greatest, max),
        )


def _either(
    a: float | None, b: float | None, both: Callable[[float, float], float]
) -> float | None:
    """As SQL's aggregates combine: NULL only where both are."""
    if a is None:
        return b
    if b is None:
        return a
    return both(a, b)


# One index scan per range, each with its own bounds: bound as plain parameters (not unnested
# and joined laterally), they let the planner see the range and pick the primary key for one
# robot rather than the type index, which walks every robot's entries of the range.
def _partials_sql(ranges: int, by_robot: bool) -> str:
    robot = "AND robot_id = $3 " if by_robot else ""
    first = 4 if by_robot else 3
    w = SLOT_SECONDS
    scans = "\n    UNION ALL\n".join(
        f"""    SELECT (floor(extract(epoch FROM ts) / {w}) * {w})::bigint AS slot,
           (data #>> $1::text[])::float8 AS v
    FROM sensor_readings
    WHERE sensor_type = $2 {robot}AND ts >= ${first + 2 * i} AND ts < ${first + 2 * i + 1}"""
        for i in range(ranges)
    )
    return f"""
SELECT slot, count(*) AS readings, count(v) AS samples,
       sum(v) AS total, min(v) AS least, max(v) AS greatest
FROM (
{scans}
    OFFSET 0) AS s
GROUP BY slot
"""


# The newest `limit + window - 1` samples, so that each of the newest `limit` has a full
# window behind it (where the range holds that many).
_MOVING = {
    by_robot: f"""
SELECT ts, robot_id, v AS value,
       avg(v) OVER (ORDER BY ts, robot_id ROWS BETWEEN $6::int - 1 PRECEDING AND CURRENT ROW)
           AS moving_avg
FROM (SELECT ts, robot_id, (data #>> $1::text[])::float8 AS v FROM sensor_readings
      WHERE sensor_type = $2 {"AND robot_id = $7 " if by_robot else ""}AND ts >= $3 AND ts < $4
      ORDER BY ts DESC{", robot_id DESC" if not by_robot else ""} LIMIT $5::int + $6::int - 1) AS s
ORDER BY ts, robot_id
"""
    for by_robot in (False, True)
}


# moving_average's `value` and `moving_avg` alone, for one robot: the older clients'
# /api/sensors/filtered answers those two, and decoding each row's timestamp and robot id was
# most of that route's own cost (BENCHMARKS.md, round 12). Two arrays in one row cost the API a
# little less again, but PostgreSQL more (a sort per array_agg). The rows come sorted already.
_MOVING_VALUES = f"""
SELECT value, moving_avg FROM ({_MOVING[True]}) AS m
ORDER BY ts
"""


# Ranges beyond this are merged (the gaps between them read too), so that a scattered range
# costs one statement of bounded size.
MAX_RANGES = 16


async def bucket_aggregate(
    db: Reader,
    *,
    sensor_type: str,
    path: list[str],
    fn: AggregateFn,
    bucket: timedelta,
    since: datetime,
    until: datetime,
    robot_id: str | None,
) -> list[asyncpg.Record]:
    """One row per non-empty bucket: bucket start, fn over the field, samples with the field.

    Buckets are aligned to the clock (multiples of `bucket` from the epoch), so the first one
    may start before `since`; it holds only readings from `since` on. Cost grows with the rows
    in [since, until).
    """
    args: list[object] = [bucket, since, path, sensor_type, until]
    if robot_id is not None:
        args.append(robot_id)
    return await db.fetch(_BUCKETS[fn, robot_id is not None], *args)


async def slot_partials(
    db: Reader,
    *,
    sensor_type: str,
    path: list[str],
    ranges: Sequence[tuple[datetime, datetime]],
    robot_id: str | None,
) -> dict[int, MinutePartial]:
    """The partials of the slots of minutes (epoch seconds of their start,
    db.readings.SLOT_SECONDS long) with readings in the `[lo, hi)` ranges (sorted, not
    overlapping); a range cut inside a slot gives that slot's part in it. Past MAX_RANGES,
    neighbouring ranges are merged, so the answer may hold slots between them as well."""
    merged = list(ranges)
    while len(merged) > MAX_RANGES:
        gaps = [merged[i + 1][0] - merged[i][1] for i in range(len(merged) - 1)]
        i = gaps.index(min(gaps))
        merged[i : i + 2] = [(merged[i][0], merged[i + 1][1])]
    args: list[object] = [path, sensor_type]
    if robot_id is not None:
        args.append(robot_id)
    for lo, hi in merged:
        args += [lo, hi]
    rows = await db.fetch(_partials_sql(len(merged), robot_id is not None), *args)
    return {
        r["slot"]: MinutePartial(r["readings"], r["samples"], r["total"], r["least"], r["greatest"])
        for r in rows
    }


async def moving_average(
    db: Reader,
    *,
    sensor_type: str,
    path: list[str],
    window: int,
    limit: int,
    since: datetime | None,
    until: datetime,
    robot_id: str | None,
) -> list[asyncpg.Record]:
    """The newest `limit` samples, oldest first, each with the mean of it and the `window - 1`
    samples before it. Reads `limit + window - 1` rows through an index."""
    args: list[object] = [path, sensor_type, since or EARLIEST, until, limit, window]
    if robot_id is not None:
        args.append(robot_id)
    rows = await db.fetch(_MOVING[robot_id is not None], *args)
    return rows[max(0, len(rows) - limit) :]


@dataclass(frozen=True, slots=True)
class MovingSeries:
    """A robot's newest samples of one field, oldest first (None where a reading lacks the
    field), and each one's moving average."""

    samples: list[float | None]
    means: list[float | None]


async def moving_average_series(
    db: Reader,
    *,
    sensor_type: str,
    path: list[str],
    window: int,
    limit: int,
    until: datetime,
    robot_id: str,
) -> MovingSeries:
    """moving_average's `value` and `moving_avg` columns for one robot's readings before
    `until`, as two lists."""
    rows = await db.fetch(
        _MOVING_VALUES, path, sensor_type, EARLIEST, until, limit, window, robot_id
    )
    kept = rows[max(0, len(rows) - limit) :]
    return MovingSeries([r[0] for r in kept], [r[1] for r in kept])
