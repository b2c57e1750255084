"""Writing readings: the COPY fast path and the staging merge insert and report the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from db.errors import StoredAlreadyError
from db.readings import InsertedGroup, merge_readings, merge_via_staging
from telemetry.payload import Reading

NOW = datetime.now(UTC).replace(second=30, microsecond=0)


def _batch() -> list[Reading]:
    """Three robots, two sensor types, three minutes, readings with and without seq, out of
    order."""
    out = []
    for i in range(300):
        robot = ("r1", "r2", "r3")[i % 3]
        sensor = "imu" if i % 2 else "gps"
        ts = NOW - timedelta(seconds=70) + timedelta(milliseconds=(i * 7919) % 150_000)
        seq = None if i % 5 == 0 else (i * 31) % 1000
        out.append(Reading(robot, sensor, ts, NOW, seq, f'{{"i":{i}}}'))
    return out


def _sorted(groups: list[InsertedGroup]) -> list[InsertedGroup]:
    return sorted(groups, key=lambda g: (g.robot_id, g.sensor_type, g.minute))


@pytest.fixture
async def db(clean_db: asyncpg.Pool[Any]) -> asyncpg.Pool[Any]:
    await clean_db.execute("INSERT INTO robots (id) VALUES ('r1'), ('r2'), ('r3')")
    return clean_db


async def _staged(conn: Any) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM staging_readings")
    return n


async def test_a_new_batch_is_copied_straight_in_and_grouped_like_the_merge(
    db: asyncpg.Pool[Any],
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            fast = await merge_readings(conn, batch, register_unknown=False)
            assert await _staged(conn) == 0  # the staging table was not used
        stored = await conn.fetch("SELECT * FROM sensor_readings ORDER BY robot_id, ts")
        await conn.execute("TRUNCATE sensor_readings")
        async with conn.transaction():
            merged = await merge_via_staging(conn, batch, register_unknown=False)
            assert await _staged(conn) == len(batch)
        assert await conn.fetch("SELECT * FROM sensor_readings ORDER BY robot_id, ts") == stored
    assert len(stored) == len(batch) == fast.inserted
    assert _sorted(fast.groups) == _sorted(merged.groups)
    assert len({g.minute for g in fast.groups}) == 3
    assert (fast.unknown_robots, fast.conflicts) == (frozenset(), [])


async def test_a_batch_holding_a_stored_reading_falls_back_to_the_merge(
    db: asyncpg.Pool[Any],
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            await merge_readings(conn, batch[:10], register_unknown=False)
        async with conn.transaction():
            result = await merge_readings(conn, batch, register_unknown=False)
            assert await _staged(conn) == len(batch)  # the merge ran
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == len(batch)
    assert result.inserted == len(batch) - 10
    assert result.conflicts == []


async def _rows_of_this_transaction(conn: Any) -> int:
    """Rows whose xmin is the transaction's own id: a savepoint would have given them its
    subtransaction's."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE xmin = pg_current_xact_id()::xid"
    )
    return n


async def test_without_a_savepoint_a_new_batch_is_copied_in_the_transaction_itself(
    db: asyncpg.Pool[Any],
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            result = await merge_readings(conn, batch, register_unknown=False, savepoint=False)
            assert await _rows_of_this_transaction(conn) == len(batch)
            assert await _staged(conn) == 0
        async with conn.transaction():
            await merge_readings(conn, _batch2(), register_unknown=False)
            assert await _rows_of_this_transaction(conn) == 0  # under the savepoint
    assert result.inserted == len(batch)


async def test_without_a_savepoint_a_stored_reading_costs_the_transaction(
    db: asyncpg.Pool[Any],
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            await merge_readings(conn, batch[:10], register_unknown=False)
        with pytest.raises(StoredAlreadyError):
            async with conn.transaction():
                await merge_readings(conn, batch, register_unknown=False, savepoint=False)
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == 10
        # What the caller does then: the transaction again, with the merge.
        async with conn.transaction():
            result = await merge_via_staging(conn, batch, register_unknown=False)
    assert result.inserted == len(batch) - 10


def _batch2() -> list[Reading]:
    return [r._replace(ts=r.ts + timedelta(hours=1)) for r in _batch()]


async def test_a_batch_from_an_unknown_robot_takes_the_merge_or_registers_it(
    db: asyncpg.Pool[Any],
) -> None:
    ghost = [r._replace(robot_id="ghost") for r in _batch()[:4]]
    async with db.acquire() as conn:
        async with conn.transaction():
            refused = await merge_readings(conn, ghost, register_unknown=False)
            assert await _staged(conn) == len(ghost)
        assert (refused.inserted, refused.unknown_robots) == (0, frozenset({"ghost"}))
        async with conn.transaction():
            registered = await merge_readings(conn, ghost, register_unknown=True)
            assert await _staged(conn) == 0
        assert (registered.inserted, registered.unknown_robots) == (4, frozenset())
        assert await conn.fetchval("SELECT count(*) FROM robots WHERE id = 'ghost'") == 1
