"""Repairing drift between the Redis minute counters and PostgreSQL (real services)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from harness.services import free_port
from ingest.counters import Counters
from ingest.reconcile import reconcile_minutes
from ingest.write import IngestWriter
from tests.ingest.test_write import decode_batch


@pytest.fixture
async def writer(clean_db: asyncpg.Pool[Any], counters: Counters) -> IngestWriter:
    await clean_db.execute("INSERT INTO robots (id) VALUES ('r1'), ('r2')")
    return IngestWriter(pool=clean_db, counters=counters)


def this_minute() -> int:
    return int(time.time()) // 60 * 60


async def totals(counters: Counters, minutes: list[int]) -> list[int]:
    return [b.get("*", 0) for b in (await counters.window(minutes, top=0)).totals]


async def test_drifted_minutes_are_rewritten_from_postgres(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    now = this_minute()
    m1, m2, m3, m4 = now - 240, now - 180, now - 120, now - 60
    await writer.write(decode_batch("r1", 300, start_ms=m1 * 1000).readings)
    await writer.write(decode_batch("r2", 200, start_ms=m2 * 1000).readings)
    await writer.write(decode_batch("r1", 100, start_ms=m3 * 1000).readings)
    assert await totals(counters, [m1, m2, m3, m4]) == [300, 200, 100, 0]
    # Redis comes back stale: one minute short, one gone, one counting readings never stored.
    # (In a cluster, each key of a shard on its own master: one command per key.)
    r = counters.redis
    await r.hincrby(counters.minute_keys(m1, "t")[0], "*", -120)
    await r.hincrby(counters.minute_keys(m1, "rs")[0], "r1/battery", -120)
    for kind in ("t", "r", "rs"):
        for key in counters.minute_keys(m2, kind):
            await r.delete(key)
    await r.hset(counters.minute_keys(m4, "t")[-1], mapping={"*": 7, "battery": 7})
    await r.hset(counters.minute_keys(m4, "rs")[-1], mapping={"r2/battery": 7})
    assert await totals(counters, [m1, m2, m3, m4]) == [180, 0, 100, 7]

    result = await reconcile_minutes(
        pool=clean_db, counters=counters, first_minute=m1 - 60, last_minute=now
    )
    assert (result.repaired, result.drift, result.skipped) == (3, 120 + 200 + 7, 0)
    assert await totals(counters, [m1, m2, m3, m4]) == [300, 200, 100, 0]
    [b1] = (await counters.window([m1], top=0)).totals
    assert b1 == {"*": 300, "battery": 300}
    assert (await counters.window([m2], top=5)).top_robots == [("r2", 200)]
    # Nothing left to repair.
    again = await reconcile_minutes(
        pool=clean_db, counters=counters, first_minute=m1 - 60, last_minute=now
    )
    assert (again.repaired, again.drift) == (0, 0)


async def test_a_committed_batch_whose_update_is_pending_is_not_counted_twice(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    m = this_minute() - 120
    await writer.write(decode_batch("r1", 100, start_ms=m * 1000).readings)
    # Another writer commits a batch while Redis is unreachable for it: the rows are in
    # PostgreSQL, the counter update waits in the journal.
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        cut_off = IngestWriter(
            pool=clean_db,
            counters=Counters(redis=unreachable, prefix=counters.prefix, shards=counters.shards),
        )
        result = await cut_off.write(decode_batch("r1", 50, start_ms=m * 1000 + 100).readings)
    finally:
        await unreachable.aclose()
    assert not result.counters_applied
    assert await totals(counters, [m]) == [100]

    reconciled = await reconcile_minutes(
        pool=clean_db, counters=counters, first_minute=m, last_minute=m
    )
    # Redis is 50 short, but the journal says why: the minute waits for the replay.
    assert (reconciled.repaired, reconciled.skipped) == (0, 1)
    # The first batch's entry (applied, not yet retired) replays as a no-op.
    assert await writer.replay_journal() == 2
    assert await totals(counters, [m]) == [150]
    after = await reconcile_minutes(pool=clean_db, counters=counters, first_minute=m, last_minute=m)
    assert (after.repaired, after.skipped) == (0, 0)
