"""The bucket aggregate's plan (rows grouped in a hash table of buckets, not sorted), the
per-minute partials of many ranges, and the moving average as two lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from db.readings import SLOT_SECONDS, SLOTS_PER_MINUTE
from db.sensor_aggregates import (
    MAX_RANGES,
    AggregateFn,
    MinutePartial,
    MovingSeries,
    bucket_aggregate,
    moving_average,
    moving_average_series,
    slot_partials,
)
from telemetry.payload import Reading

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


async def test_bucket_aggregate_hashes_buckets_instead_of_sorting_every_reading(
    clean_db: asyncpg.Pool[Any],
) -> None:
    """Sorting each reading with its whole `data` document by bucket spilled to disk once a
    range held ~25,000 readings; grouping (bucket, value) pairs in a hash table does not. The
    only sort left orders the buckets the aggregate yields."""
    async with clean_db.acquire() as conn:
        await conn.execute("INSERT INTO robots (id) VALUES ('r1')")
        readings = [
            Reading("r1", "imu", NOW - timedelta(seconds=i), NOW, None, f'{{"a":{{"x":{i}}}}}')
            for i in range(1, 301)
        ]
        await conn.executemany(
            "INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            readings,
        )
        await conn.execute("ANALYZE sensor_readings")
    plans: list[dict[str, Any]] = []

    class Explaining:
        async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
            async with clean_db.acquire() as conn:
                [row] = await conn.fetch(f"EXPLAIN (FORMAT JSON) {query}", *args)
            plans.append(json.loads(row[0])[0]["Plan"])
            return []

    await bucket_aggregate(
        Explaining(),  # type: ignore[arg-type]
        sensor_type="imu",
        path=["a", "x"],
        fn=AggregateFn.AVG,
        bucket=timedelta(minutes=1),
        since=NOW - timedelta(hours=1),
        until=NOW,
        robot_id="r1",
    )
    [plan] = plans
    assert plan["Node Type"] == "Sort", plan
    [under] = plan["Plans"]
    assert (under["Node Type"], under.get("Strategy")) == ("Aggregate", "Hashed"), plan

    def sorts(node: dict[str, Any]) -> int:
        below: list[dict[str, Any]] = node.get("Plans", [])
        return int(node["Node Type"] == "Sort") + sum(sorts(n) for n in below)

    assert sorts(plan) == 1, plan


async def test_slot_partials_of_many_ranges_are_those_of_their_slots(
    clean_db: asyncpg.Pool[Any],
) -> None:
    """Past MAX_RANGES the ranges are merged into fewer scans; every slot asked for still
    gets its partial, and a slot cut by a range gives only its part in the range."""
    start = NOW - timedelta(minutes=60)
    async with clean_db.acquire() as conn:
        await conn.execute("INSERT INTO robots (id) VALUES ('r1')")
        await conn.executemany(
            "INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            [
                Reading("r1", "imu", start + timedelta(seconds=5 * i), NOW, None, f'{{"x":{i}}}')
                for i in range(720)
            ],
        )
    every_third = [start + timedelta(minutes=m) for m in range(0, 60, 3)]  # 20 minutes
    ranges = [(lo, lo + timedelta(minutes=1)) for lo in every_third]
    ranges[-1] = (ranges[-1][0], ranges[-1][0] + timedelta(seconds=25))  # a cut slot
    assert len(ranges) > MAX_RANGES
    got = await slot_partials(clean_db, sensor_type="imu", path=["x"], ranges=ranges, robot_id="r1")
    for k, lo in enumerate(every_third):
        minute = int(lo.timestamp())
        last = k == len(every_third) - 1
        for j in range(3 if last else SLOTS_PER_MINUTE):
            first = 12 * 3 * k + 2 * j  # the reading number at the slot's start
            values = [float(first + i) for i in range(1 if last and j == 2 else 2)]
            assert got[minute + SLOT_SECONDS * j] == MinutePartial(
                len(values), len(values), sum(values), min(values), max(values)
            ), (k, j, got[minute + SLOT_SECONDS * j])


async def test_moving_average_series_is_the_moving_average_of_one_robot(
    clean_db: asyncpg.Pool[Any],
) -> None:
    """Two lists with moving_average's `value` and `moving_avg` columns: the newest `limit`
    samples of that robot alone, each window reaching before the first, readings without the
    field as None (not counted in a mean), nothing after `until`."""
    async with clean_db.acquire() as conn:
        await conn.execute("INSERT INTO robots (id) VALUES ('r1'), ('r2')")
        docs = [f'{{"a":{{"x":{i}}}}}' if i % 4 else '{"b":1}' for i in range(1, 13)]
        readings = [
            Reading("r1", "imu", NOW - timedelta(seconds=20 - i), NOW, None, doc)
            for i, doc in enumerate(docs)
        ]
        readings += [  # another robot's, interleaved in time; and one of r1's in the future
            Reading(
                "r2",
                "imu",
                NOW - timedelta(seconds=20 - i, milliseconds=500),
                NOW,
                None,
                '{"a":{"x":1000}}',
            )
            for i in range(12)
        ]
        readings.append(Reading("r1", "imu", NOW + timedelta(hours=1), NOW, None, '{"a":{"x":9}}'))
        await conn.executemany(
            "INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
            readings,
        )
    kw: dict[str, Any] = {"sensor_type": "imu", "path": ["a", "x"], "robot_id": "r1"}
    series = await moving_average_series(clean_db, window=3, limit=5, until=NOW, **kw)
    rows = await moving_average(clean_db, window=3, limit=5, since=None, until=NOW, **kw)
    assert series.samples == [r["value"] for r in rows] == [None, 9.0, 10.0, 11.0, None]
    assert series.means == [r["moving_avg"] for r in rows]
    assert series.means == [6.5, 8.0, 9.5, 10.0, 10.5]
    assert await moving_average_series(
        clean_db, window=3, limit=5, until=NOW - timedelta(minutes=5), **kw
    ) == MovingSeries([], [])
