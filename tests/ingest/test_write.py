"""The shared write path against real PostgreSQL and Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

import ingest.write
from ingest.counters import ROLLING_WINDOW_MINUTES, Counters
from ingest.rebuild import rebuild_counters
from ingest.write import IngestWriter
from telemetry.payload import Decoded, PayloadDecoder, Reading, TimeWindow


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


@pytest.fixture(params=["one statement", "transaction"])
async def writer(
    clean_db: asyncpg.Pool[Any], counters: Counters, request: pytest.FixtureRequest
) -> IngestWriter:
    """Both ways a batch is written: small batches in one statement where they can be (the
    default), every batch in a transaction (one_statement_max=0)."""
    await clean_db.execute("INSERT INTO robots (id) VALUES ('r1'), ('r2')")
    if request.param == "transaction":
        return IngestWriter(pool=clean_db, counters=counters, one_statement_max=0)
    return IngestWriter(pool=clean_db, counters=counters)


async def latest_decoded(counters: Counters, robot_id: str) -> dict[str, Any]:
    # The rebuild takes `data` from jsonb, which spaces it differently: compare values.
    [latest] = await counters.latest([robot_id])
    return {sensor: orjson.loads(reading) for sensor, reading in latest.items()}


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
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == 500
    [totals] = (await counters.window([minute_of(start)], top=0)).totals
    assert totals == {"*": 500, "battery": 500}


def decode_levels(robot_id: str, levels: list[tuple[int, int]]) -> Decoded:
    """One batch of (ts, level) readings of one robot's battery."""
    out = Decoded()
    readings = ",".join(f'{{"ts":{ts},"data":{{"level":{level}}}}}' for ts, level in levels)
    PayloadDecoder(window=TimeWindow()).decode(
        robot_id=robot_id,
        sensor_type="battery",
        topic=f"robots/{robot_id}/sensors/battery",
        payload=f'{{"readings":[{readings}]}}'.encode(),
        received_at=datetime.now(UTC),
        into=out,
    )
    return out


async def test_conflicting_duplicates_are_told_apart_from_redeliveries(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    """Same identity, different data: dead-lettered as conflicting_duplicate and counted apart
    from true redeliveries, across batches and inside one batch."""
    t = int(time.time() * 1000) // 60000 * 60000
    first = await writer.write(decode_levels("r1", [(t, 1), (t + 1, 1), (t + 2, 1)]).readings)
    assert (first.inserted, first.duplicates, first.conflicting) == (3, 0, 0)
    # t: redelivered as is; t + 1: different data; t + 3: new, then again in the same batch
    # with different data; t + 4: twice in the batch, the same.
    again = decode_levels(
        "r1", [(t, 1), (t + 1, 2), (t + 3, 5), (t + 3, 6), (t + 4, 7), (t + 4, 7)]
    )
    second = await writer.write(again.readings)
    assert (second.inserted, second.duplicates, second.conflicting) == (2, 2, 2)
    assert second.rejected == {"conflicting_duplicate": 2}
    dead = await clean_db.fetch(
        "SELECT reason, detail, convert_from(payload, 'UTF8') AS payload FROM dead_letters "
        "ORDER BY payload"
    )
    assert [r["reason"] for r in dead] == ["conflicting_duplicate"] * 2
    refused = sorted(
        (r["ts"], r["data"]["level"]) for r in map(orjson.loads, (d["payload"] for d in dead))
    )
    assert [level for _, level in refused] == [2, 6]
    assert all(r["detail"].startswith("a different reading with this robot") for r in dead)
    stored = await clean_db.fetch(
        "SELECT (data->>'level')::float::int AS level FROM sensor_readings ORDER BY ts"
    )
    assert [r["level"] for r in stored] == [1, 1, 1, 5, 7]
    window = await counters.window([minute_of(int(time.time() * 1000))], top=0)
    assert window.rejected == [{"conflicting_duplicate": 2}]
    # A redelivery of only matching readings costs nothing more and finds no conflict.
    third = await writer.write(again.readings[:1])
    assert (third.inserted, third.duplicates, third.conflicting) == (0, 1, 0)


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
    [latest] = await counters.latest(["r2"])
    assert orjson.loads(latest["battery"])["seq"] == 109


async def test_fleet_gaps_follow_every_robot_and_fall_when_a_hole_fills(
    writer: IngestWriter, counters: Counters
) -> None:
    start = int(time.time() * 1000)
    r1 = decode_batch("r1", 10, start_ms=start, seq0=0).readings
    r2 = decode_batch("r2", 10, start_ms=start, seq0=50).readings
    await writer.write([r for r in r1 if r.seq not in (3, 4, 5)])
    await writer.write([r for r in r2 if r.seq != 55])
    assert await counters.fleet_sequence_gaps(["battery", "imu"]) == {"battery": 4}
    detail = await counters.robot_detail("r1", ["battery", "imu"])
    assert detail.sequence_gaps == {"battery": 3}
    # Late readings of r1 fill two of its three holes; a redelivery changes nothing.
    late = [r for r in r1 if r.seq in (3, 4)]
    await writer.write(late)
    await writer.write(late)
    assert await counters.fleet_sequence_gaps(["battery", "imu"]) == {"battery": 2}
    assert (await counters.robot_detail("r1", ["battery"])).sequence_gaps == {"battery": 1}


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
    assert (await counters.window([minute_of(start)], top=0)).totals == [{}]
    assert await writer.replay_journal() == 1
    assert await writer.replay_journal() == 0
    assert (await counters.window([minute_of(start)], top=0)).totals == [{"*": 50, "battery": 50}]


async def test_rebuild_reproduces_the_live_counters(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000) - 90_000  # spans two or three minutes
    await writer.write(decode_batch("r1", 900, start_ms=start, seq0=0).readings)
    await writer.write(decode_batch("r2", 300, start_ms=start, seq0=0).readings)
    minutes = sorted({minute_of(start + i) for i in range(0, 900)})
    live = (await counters.window(minutes, top=0)).totals
    live_latest = await latest_decoded(counters, "r1")
    await rebuild_counters(pool=clean_db, counters=counters)
    assert (await counters.window(minutes, top=0)).totals == live
    assert await latest_decoded(counters, "r1") == live_latest
    assert sum(m["*"] for m in live) == 1200


async def test_a_rebuild_leaves_no_window_summed_from_what_it_cleared(
    writer: IngestWriter,
    counters: Counters,
    clean_db: asyncpg.Pool[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stats read during a rebuild's clear may keep a window (its per-robot sums) built from
    minutes the clear then deletes; if the clear's scan misses the window's keys, the
    rebuild's batches add to it and the top robots count twice. The rebuild forgets the
    windows it did not build: the top robots after it are the table's."""
    now = int(time.time() * 1000)
    await writer.write(decode_batch("r1", 600, start_ms=now - 600_000, seq0=0).readings)
    await writer.write(decode_batch("r2", 400, start_ms=now - 400_000, seq0=0).readings)
    minute = now // 60000 * 60
    hour = [minute - 60 * (59 - i) for i in range(60)]
    assert (await counters.window(hour, top=5)).top_robots == [("r1", 600), ("r2", 400)]
    real_clear = counters.clear

    async def clear_missing_the_windows() -> int:
        windows = [
            f"{shard}w:{n}:{kind}"
            for shard in counters._shard_prefixes
            for n in ROLLING_WINDOW_MINUTES
            for kind in ("from", "r")
        ]
        kept = {key: await counters.redis.dump(key) for key in windows}
        cleared = await real_clear()
        for key, dumped in kept.items():
            if dumped is not None:
                await counters.redis.restore(key, 0, dumped)
        return cleared

    monkeypatch.setattr(counters, "clear", clear_missing_the_windows)
    await rebuild_counters(pool=clean_db, counters=counters)
    assert (await counters.window(hour, top=5)).top_robots == [("r1", 600), ("r2", 400)]


@pytest.mark.parametrize(("races", "committed"), [(2, True), (3, False)])
async def test_a_write_that_loses_a_race_runs_again_a_bounded_number_of_times(
    writer: IngestWriter,
    clean_db: asyncpg.Pool[Any],
    monkeypatch: pytest.MonkeyPatch,
    races: int,
    committed: bool,
) -> None:
    # A deadlock between two writes cannot be had from PostgreSQL on demand: the write (the
    # merge in its real transaction, or the one statement) raises PostgreSQL's deadlock error
    # `races` times, then runs.
    name = "insert_all_new" if writer.one_statement_max else "merge_readings"
    real_write = getattr(ingest.write, name)
    lost = 0

    async def write_losing_races(*args: Any, **kwargs: Any) -> Any:
        nonlocal lost
        if lost < races:
            lost += 1
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await real_write(*args, **kwargs)

    monkeypatch.setattr(ingest.write, name, write_losing_races)
    batch = decode_batch("r1", 10, start_ms=int(time.time() * 1000))
    if committed:
        assert (await writer.write(batch.readings)).inserted == 10
    else:
        with pytest.raises(asyncpg.DeadlockDetectedError):
            await writer.write(batch.readings)
    assert lost == races
    async with clean_db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == (
            10 if committed else 0
        )


async def test_a_journal_entry_left_in_the_old_positional_form_is_replayed(
    writer: IngestWriter, counters: Counters, clean_db: asyncpg.Pool[Any]
) -> None:
    # Written by the version before named fields, left unapplied (Redis away), then replayed
    # by this one.
    minute = int(time.time()) // 60 * 60
    legacy = {
        "g": [["r1", "battery", minute, 3, 3, 10, 12]],
        "x": [[minute, "invalid_json", 2]],
        "l": [["r1", "battery", minute * 1000, '{"ts":"t","seq":12,"data":{"level":5}}']],
        "s": [["r1", minute * 1000]],
    }
    await clean_db.execute(
        "INSERT INTO counter_journal (entry) VALUES ($1::jsonb)", orjson.dumps(legacy).decode()
    )
    assert await writer.replay_journal() == 1
    counts = await counters.window([minute], top=1)
    assert counts.totals == [{"*": 3, "battery": 3}]
    assert counts.rejected == [{"invalid_json": 2}]
    assert counts.top_robots == [("r1", 3)]
    [latest] = await counters.latest(["r1"])
    assert orjson.loads(latest["battery"])["seq"] == 12
    seq = await counters.seq_stats("r1", "battery")
    assert seq is not None and (seq.count, seq.first, seq.last) == (3, 10, 12)
    _, [seen] = await counters.robot_live(["r1"])
    assert seen == minute * 1000


async def test_applied_journal_entries_are_deleted_by_a_later_commit_across_failures(
    writer: IngestWriter, clean_db: asyncpg.Pool[Any]
) -> None:
    """A commit deletes the journal entries Redis has applied. A commit that fails (here a
    reading PostgreSQL refuses) or writes nothing (a robot that is not registered: the one
    statement gives way to the transaction) hands them on instead of dropping them, so the
    table keeps only the newest entry."""
    t = int(time.time() * 1000) // 60000 * 60000
    await writer.write(decode_batch("r1", 3, start_ms=t).readings)
    now = datetime.now(UTC)
    refused = Reading("r1", "battery", now, now, None, '{"level": "\\u0000"}')
    with pytest.raises(asyncpg.UntranslatableCharacterError):
        await writer.write([refused])
    unknown = await writer.write(decode_batch("r9", 2, start_ms=t).readings)
    assert unknown.unknown_robots == {"r9"}
    await writer.write(decode_batch("r2", 2, start_ms=t).readings)
    assert await clean_db.fetchval("SELECT count(*) FROM counter_journal") == 1
