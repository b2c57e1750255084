"""Aggregates of the routes: the moving average (`/api/sensors/aggregate` and the older
clients' `/api/sensors/filtered`) and time buckets, added up from minutes kept in Redis.

An hour of one-minute buckets read every reading of the hour (the cost grew with the fleet's
rate: BENCHMARKS.md, round 9). Buckets of whole minutes are now sums of per-minute partials
(count, sum, min, max of the field) kept in Redis beside the live counters and trusted while
the counters' count of that minute's readings is the one the partial was made from; only the
minutes written since, the ones the counters no longer hold, and the cut minutes at either end
of the range are read from PostgreSQL. A partial is as fresh as the counters: a batch committed
but not yet counted (its journal entry is applied just after the commit) is missed for that
long, as by GET /api/stats. Buckets that are not whole minutes read the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.exceptions import RedisClusterException, RedisError

from api.query_params import parse_time_range
from api.resources import Resources
from db.sensor_aggregates import (
    AggregateFn,
    MinutePartial,
    bucket_aggregate,
    minute_partials,
    moving_average,
)

log = logging.getLogger("api")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_NONE = MinutePartial(0, 0, None, None, None)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    value: float | None
    samples: int


async def moving_average_points(
    res: Resources,
    *,
    sensor_type: str,
    path: list[str],
    window: int,
    limit: int,
    since: datetime | None,
    until: datetime | None,
    robot_id: str | None,
) -> list[asyncpg.Record]:
    """The newest `limit` samples, oldest first (`ts`, `robot_id`, `value`), each with its
    moving average over `window` (`moving_avg`); also the older clients'
    /api/sensors/filtered, which answers two of those columns: records, not dicts, since
    making a dict of each of ~100 rows was ~2 % of a worker's CPU under that mix."""
    since, until = parse_time_range(since, until)
    return await moving_average(
        res.read_pool,
        sensor_type=sensor_type,
        path=path,
        window=window,
        limit=limit,
        since=since,
        until=until or datetime.now(UTC),
        robot_id=robot_id,
    )


async def bucket_points(
    res: Resources,
    *,
    sensor_type: str,
    path: list[str],
    fn: AggregateFn,
    bucket: timedelta,
    since: datetime,
    until: datetime,
    robot_id: str | None,
) -> list[Bucket]:
    """One bucket per bucket with readings, oldest first: `fn` over the field, and the samples
    holding it (db.sensor_aggregates.bucket_aggregate's answer, summed from minutes)."""
    whole = _minute_after(since)
    end = _minute_before(until)
    if bucket % _MINUTE or whole >= end:
        rows = await bucket_aggregate(
            res.read_pool,
            sensor_type=sensor_type,
            path=path,
            fn=fn,
            bucket=bucket,
            since=since,
            until=until,
            robot_id=robot_id,
        )
        return [Bucket(r["bucket"], r["value"], r["samples"]) for r in rows]
    minutes = list(range(_epoch(whole), _epoch(end), 60))
    try:
        kept = await res.counters.minute_partials(
            sensor_type=sensor_type, path=path, robot_id=robot_id, minutes=minutes
        )
    except (RedisError, RedisClusterException) as exc:
        log.warning("bucket aggregate without kept minutes: Redis unavailable (%s)", exc)
        kept = {}
    missing = [m for m in minutes if kept.get(m) is None]
    ranges = _ranges(missing)
    if since < whole:
        ranges.insert(0, (since, whole))
    if end < until:
        ranges.append((end, until))
    read = (
        await minute_partials(
            res.read_pool, sensor_type=sensor_type, path=path, robot_id=robot_id, ranges=ranges
        )
        if ranges
        else {}
    )
    # Only minutes the counters hold can be checked later: the others are not kept.
    keep = {m: read.get(m, _NONE) for m in missing if m in kept}
    if keep:
        try:
            await res.counters.store_minute_partials(
                sensor_type=sensor_type, path=path, robot_id=robot_id, partials=keep
            )
        except (RedisError, RedisClusterException) as exc:
            log.warning("bucket aggregate minutes not kept: Redis unavailable (%s)", exc)
    # The cut minutes' parts (read above, not kept) join the whole minutes.
    parts = dict(read)
    parts.update((m, p) for m, p in kept.items() if p is not None)
    return _buckets(parts.items(), fn, int(bucket.total_seconds()))


def _epoch(at: datetime) -> int:
    return int((at - _EPOCH).total_seconds())


def _minute_after(at: datetime) -> datetime:
    """The first minute boundary at or after `at`."""
    floor = _EPOCH + timedelta(minutes=(at - _EPOCH) // _MINUTE)
    return floor if floor == at else floor + _MINUTE


def _minute_before(at: datetime) -> datetime:
    """The last minute boundary at or before `at`."""
    return _EPOCH + timedelta(minutes=(at - _EPOCH) // _MINUTE)


def _ranges(minutes: list[int]) -> list[tuple[datetime, datetime]]:
    """Runs of consecutive minutes as [start, end) ranges (one index scan each)."""
    out: list[tuple[datetime, datetime]] = []
    for m in minutes:
        lo = _EPOCH + timedelta(seconds=m)
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], lo + _MINUTE)
        else:
            out.append((lo, lo + _MINUTE))
    return out


def _buckets(
    parts: Iterable[tuple[int, MinutePartial]], fn: AggregateFn, seconds: int
) -> list[Bucket]:
    by_bucket: dict[int, list[MinutePartial]] = {}
    for minute, p in parts:
        if p.readings:
            by_bucket.setdefault(minute - minute % seconds, []).append(p)
    return [_bucket(start, by_bucket[start], fn) for start in sorted(by_bucket)]


def _bucket(start: int, parts: list[MinutePartial], fn: AggregateFn) -> Bucket:
    """As SQL's aggregates over the bucket's rows: NULL (None) over no value, but count 0."""
    samples = sum(p.samples for p in parts)
    value: float | None
    if fn is AggregateFn.COUNT:
        value = float(samples)
    elif not samples:
        value = None
    elif fn is AggregateFn.AVG:
        value = sum(p.total or 0.0 for p in parts) / samples
    elif fn is AggregateFn.SUM:
        value = sum(p.total or 0.0 for p in parts)
    elif fn is AggregateFn.MIN:
        value = min(p.least for p in parts if p.least is not None)
    else:
        value = max(p.greatest for p in parts if p.greatest is not None)
    return Bucket(_EPOCH + timedelta(seconds=start), value, samples)
