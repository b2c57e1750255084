"""The shared write path against real PostgreSQL and Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from db.stats import count_readings
from ingest.counters import Counters
from ingest.rebuild import rebuild_counters
from ingest.write import IngestWriter
from telemetry.payload import Decoded, PayloadDecoder, TimeWindow


def decode_batch(robot_id: str, n: int, *, start_ms: int, seq0: int = 0) -> Decoded:
    out = Decoded()
    readings = ",".join(
        f'{{"ts":{start_ms + i},"seq":{seq0 + i},"data":{{"level":{i % 100}}}}}' for i in range(n)
    )
    PayloadDecoder(window=TimeWindow()).decode(
        robot_id=robot_id,
        sensor_type="battery",
        topic=f"robots/{robot_id}/sensors/battery",
        payload=f'{{"readings":[{readings}]}}'.encode(),
        received_at=datetime.now(UTC),
        into=out,
    )
    return out


@pytest.fixture
async def writer(clean_db: asyncpg.Pool[Any], counters: Counters) -> IngestWriter:
    await clean_db.execute("INSERT INTO robots (id) VALUES ('r1'), ('r2')")
    return IngestWriter(pool=clean_db, counters=counters)


def minute_of(ms: int) -> int:
    return ms // 60000 * 60


async def test_duplicates_are_stored_and_counted_once(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000) // 60000 * 60000  # all in one minute
    batch = decode_batch("r1", 500, start_ms=start)
    first = await writer.write(batch.readings)
    second = await writer.write(batch.readings)
    assert (first.inserted, first.duplicates) == (500, 0)
    assert (second.inserted, second.duplicates) == (0, 500)
    async with clean_db.acquire() as conn:
        assert await count_readings(conn) == 500
    [totals] = await counters.minute_totals([minute_of(start)])
    assert totals == {"*": 500, "battery": 500}


async def test_unknown_robot_is_dead_lettered_not_stored(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000)
    good, bad = decode_batch("r1", 3, start_ms=start), decode_batch("ghost", 2, start_ms=start)
    result = await writer.write([*good.readings, *bad.readings])
    assert result.inserted == 3
    assert result.unknown_robots == {"ghost"}
    rows = await clean_db.fetch("SELECT reason, topic FROM dead_letters")
    assert [(r["reason"], r["topic"]) for r in rows] == [
        ("unknown_robot", "robots/ghost/sensors/battery")
    ] * 2


async def test_seq_gaps_and_latest(writer: IngestWriter, counters: Counters) -> None:
    start = int(time.time() * 1000)
    batch = decode_batch("r2", 10, start_ms=start, seq0=100)
    kept = [r for r in batch.readings if r.seq not in (103, 104)]
    await writer.write(kept)
    stats = await counters.seq_stats("r2", "battery")
    assert stats is not None
    assert (stats.count, stats.first, stats.last, stats.gaps) == (8, 100, 109, 2)
    latest = await counters.latest("r2")
    assert latest["battery"]["seq"] == 109


async def test_journal_makes_counters_exact_after_a_lost_redis_update(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000) // 60000 * 60000
    batch = decode_batch("r1", 50, start_ms=start)

    async def redis_down(entry_id: int | str, entry: str) -> bool:
        raise ConnectionError("injected: Redis unreachable")

    real_apply = counters.apply
    counters.apply = redis_down  # type: ignore[method-assign]
    result = await writer.write(batch.readings)
    counters.apply = real_apply  # type: ignore[method-assign]
    assert not result.counters_applied
    assert await counters.minute_totals([minute_of(start)]) == [{}]
    assert await writer.replay_journal() == 1
    assert await writer.replay_journal() == 0
    assert await counters.minute_totals([minute_of(start)]) == [{"*": 50, "battery": 50}]


async def test_rebuild_reproduces_the_live_counters(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000) - 90_000  # spans two or three minutes
    await writer.write(decode_batch("r1", 900, start_ms=start, seq0=0).readings)
    await writer.write(decode_batch("r2", 300, start_ms=start, seq0=0).readings)
    minutes = sorted({minute_of(start + i) for i in range(0, 900)})
    live = await counters.minute_totals(minutes)
    live_latest = await counters.latest("r1")
    await rebuild_counters(pool=clean_db, counters=counters)
    assert await counters.minute_totals(minutes) == live
    assert await counters.latest("r1") == live_latest
    assert sum(m["*"] for m in live) == 1200
