"""Aggregates of the routes: the moving average (`/api/sensors/aggregate` and the older
clients' `/api/sensors/filtered`) and time buckets, added up from minutes kept in Redis.

An hour of one-minute buckets read every reading of the hour (the cost grew with the fleet's
rate: BENCHMARKS.md, round 9). Buckets of whole minutes are now sums of per-minute partials
(count, sum, min, max of the field) kept in Redis beside the live counters and trusted while
the counters' count of that minute's readings is the one the partial was made from; only the
minutes written since, the ones the counters no longer hold, and the cut minutes at either end
of the range are read from PostgreSQL. Recent minutes, the one still being written among them,
are kept the same way in slots of db.readings.SLOT_SECONDS, checked against the counters' slot
counts, so the open minute is read from its last slot on rather than from its start (it was
57 % of PostgreSQL's statement time in our REST mix: BENCHMARKS.md, round 10). A partial is as
fresh as the counters: a batch committed but not yet counted (its journal entry is applied just
after the commit) is missed for that long, as by GET /api/stats. Buckets that are not whole
minutes read the rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.exceptions import RedisClusterException, RedisError

from api.query_params import parse_time_range
from api.resources import Resources
from db.readings import SLOT_SECONDS as _SLOT
from db.sensor_aggregates import (
    AggregateFn,
    MinutePartial,
    MovingSeries,
    bucket_aggregate,
    moving_average,
    moving_average_series,
    slot_partials,
)
from ingest.counters import SLOT_PARTIALS_S

log = logging.getLogger("api")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_SLOT_DELTA = timedelta(seconds=_SLOT)
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
    moving average over `window` (`moving_avg`): records, not dicts, since making a dict of
    each of ~100 rows was ~2 % of a worker's CPU under the older clients' mix."""
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


async def moving_average_of_robot(
    res: Resources,
    *,
    sensor_type: str,
    path: list[str],
    window: int,
    limit: int,
    robot_id: str,
) -> MovingSeries:
    """The older clients' /api/sensors/filtered: moving_average_points' `value` and
    `moving_avg` of one robot's newest `limit` samples (up to now), as two lists."""
    return await moving_average_series(
        res.read_pool,
        sensor_type=sensor_type,
        path=path,
        window=window,
        limit=limit,
        until=datetime.now(UTC),
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
    # Recent minutes, and the whole slots of the cut minute at the end, are kept by slots: the
    # minute still being written is then read from its last slot on, not from its start.
    # Minutes ahead of the clock have no slot counts (a range may end days ahead).
    now = _epoch(datetime.now(UTC))
    recent = range(now - SLOT_PARTIALS_S, now + 1)
    first, last = _epoch(whole), _epoch(end)
    minutes = [m for m in range(first, last, 60) if m not in recent]
    slots = [s for m in range(first, last, 60) if m in recent for s in range(m, m + 60, _SLOT)]
    tail = end
    if last in recent:
        tail = end + (until - end) // _SLOT_DELTA * _SLOT_DELTA
        slots += range(last, _epoch(tail), _SLOT)
    try:
        kept, kept_slots = await res.counters.kept_partials(
            sensor_type=sensor_type, path=path, robot_id=robot_id, minutes=minutes, slots=slots
        )
    except (RedisError, RedisClusterException) as exc:
        log.warning("bucket aggregate without kept minutes: Redis unavailable (%s)", exc)
        kept, kept_slots = {}, {}
    missing = [m for m in minutes if kept.get(m) is None]
    missing_slots = [s for s in slots if kept_slots.get(s) is None]
    ranges = _ranges(sorted([(m, 60) for m in missing] + [(s, _SLOT) for s in missing_slots]))
    if since < whole:
        ranges.insert(0, (since, whole))
    if tail < until:
        ranges.append((tail, until))
    read = (
        await slot_partials(
            res.read_pool, sensor_type=sensor_type, path=path, robot_id=robot_id, ranges=ranges
        )
        if ranges
        else {}
    )
    # Only periods the counters hold can be checked later: the others are not kept.
    keep = {m: _sum(read, m, 60) for m in missing if m in kept}
    keep_slots = {s: read.get(s, _NONE) for s in missing_slots if s in kept_slots}
    whole_kept = {m: p for m, p in kept.items() if p is not None}
    slots_kept = {s: p for s, p in kept_slots.items() if p is not None}
    slot_parts = slots_kept | keep_slots
    for m in {s - s % 60 for s in keep_slots if s < last}:
        # A recent minute whose slots are all known is kept whole as well, for when it is no
        # longer recent (the minute's count is the sum of its slots' counts); once, when the
        # last of them is read.
        if all(s in slot_parts for s in range(m, m + 60, _SLOT)):
            keep[m] = _sum(slot_parts, m, 60)
    if keep or keep_slots:
        try:
            await res.counters.store_partials(
                sensor_type=sensor_type,
                path=path,
                robot_id=robot_id,
                minutes=keep,
                slots=keep_slots,
            )
        except (RedisError, RedisClusterException) as exc:
            log.warning("bucket aggregate minutes not kept: Redis unavailable (%s)", exc)
    # The kept periods and the slots read (whole or cut), by minute; merged ranges may have
    # read kept periods as well.
    parts: dict[int, MinutePartial] = {}
    for start, p in [
        *whole_kept.items(),
        *slots_kept.items(),
        *((s, p) for s, p in read.items() if s not in slots_kept and s - s % 60 not in whole_kept),
    ]:
        minute = start - start % 60
        parts[minute] = parts[minute] + p if minute in parts else p
    return _buckets(parts.items(), fn, int(bucket.total_seconds()))


def _sum(parts: Mapping[int, MinutePartial], start: int, seconds: int) -> MinutePartial:
    """The partial of [start, start + seconds) from its slots' (absent: no readings)."""
    return sum((parts[s] for s in range(start, start + seconds, _SLOT) if s in parts), start=_NONE)


def _epoch(at: datetime) -> int:
    return int((at - _EPOCH).total_seconds())


def _minute_after(at: datetime) -> datetime:
    """The first minute boundary at or after `at`."""
    floor = _EPOCH + timedelta(minutes=(at - _EPOCH) // _MINUTE)
    return floor if floor == at else floor + _MINUTE


def _minute_before(at: datetime) -> datetime:
    """The last minute boundary at or before `at`."""
    return _EPOCH + timedelta(minutes=(at - _EPOCH) // _MINUTE)


def _ranges(periods: list[tuple[int, int]]) -> list[tuple[datetime, datetime]]:
    """Runs of adjacent periods (start, seconds; sorted) as [start, end) ranges (one index
    scan each)."""
    out: list[tuple[datetime, datetime]] = []
    for start, seconds in periods:
        lo = _EPOCH + timedelta(seconds=start)
        hi = lo + timedelta(seconds=seconds)
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
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
