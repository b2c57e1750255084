"""Writing readings: the one-statement insert, the COPY fast path and the staging merge insert
and report the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from db.errors import StoredAlreadyError
from db.journal import add_journal_entry
from db.readings import (
    SLOT_SECONDS,
    SLOTS_PER_MINUTE,
    InsertedGroup,
    insert_all_new,
    merge_readings,
    merge_via_staging,
    new_groups,
)
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


async def _rows_of_this_transaction(conn: Any) -> int:
    """Rows whose xmin is the transaction's own id: a savepoint would have given them its
    subtransaction's."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE xmin = pg_current_xact_id()::xid"
    )
    return n


async def _staged(conn: Any) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM staging_readings")
    return n


@pytest.mark.parametrize("savepoint", [True, False])
async def test_a_new_batch_is_copied_straight_in_and_grouped_like_the_merge(
    db: asyncpg.Pool[Any], savepoint: bool
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            fast = await merge_readings(conn, batch, register_unknown=False, savepoint=savepoint)
            assert await _staged(conn) == 0  # the staging table was not used
            # Without a savepoint the rows are the transaction's own, not a subtransaction's.
            assert await _rows_of_this_transaction(conn) == (0 if savepoint else len(batch))
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


@pytest.mark.parametrize("savepoint", [True, False])
async def test_a_batch_holding_a_stored_reading_takes_the_merge(
    db: asyncpg.Pool[Any], savepoint: bool
) -> None:
    batch = _batch()
    async with db.acquire() as conn:
        async with conn.transaction():
            await merge_readings(conn, batch[:10], register_unknown=False)
        if savepoint:
            async with conn.transaction():
                result = await merge_readings(conn, batch, register_unknown=False)
                assert await _staged(conn) == len(batch)  # the merge ran
        else:
            # The transaction is lost; the caller (IngestWriter) runs it again with the merge.
            with pytest.raises(StoredAlreadyError):
                async with conn.transaction():
                    await merge_readings(conn, batch, register_unknown=False, savepoint=False)
            assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == 10
            async with conn.transaction():
                result = await merge_via_staging(conn, batch, register_unknown=False)
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == len(batch)
    assert result.inserted == len(batch) - 10
    assert result.conflicts == []


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


async def _journal(conn: Any) -> list[tuple[int, str]]:
    return [
        (r["id"], r["entry"])
        for r in await conn.fetch(
            "SELECT id, entry::text AS entry FROM counter_journal ORDER BY id"
        )
    ]


async def test_a_small_new_batch_and_its_journal_entry_are_one_statement(
    db: asyncpg.Pool[Any],
) -> None:
    batch = _batch()[:150]
    async with db.acquire() as conn:
        applied = await conn.fetchval(
            "INSERT INTO counter_journal (entry) VALUES ('{}') RETURNING id"
        )
        kept = await conn.fetchval("INSERT INTO counter_journal (entry) VALUES ('{}') RETURNING id")
        entry_id = await insert_all_new(conn, batch, journal_entry='{"n": 150}', retire=[applied])
        assert await _journal(conn) == [(kept, "{}"), (entry_id, '{"n": 150}')]
        # One transaction: the readings' xmin is the journal entry's.
        xmins = await conn.fetch(
            "SELECT DISTINCT xmin::text FROM sensor_readings UNION ALL "
            "SELECT xmin::text FROM counter_journal WHERE id = $1",
            entry_id,
        )
        assert len(xmins) == 2 and xmins[0] == xmins[1]
        stored = await conn.fetch("SELECT * FROM sensor_readings ORDER BY robot_id, ts")
        await conn.execute("TRUNCATE sensor_readings")
        async with conn.transaction():
            merged = await merge_via_staging(conn, batch, register_unknown=False)
        assert await conn.fetch("SELECT * FROM sensor_readings ORDER BY robot_id, ts") == stored
    assert len(stored) == len(batch) == merged.inserted
    assert _sorted(new_groups(batch)) == _sorted(merged.groups)
    # Each group's slots count its readings by the slot of the minute they fall in.
    assert len({g.minute for g in merged.groups}) == 3
    for g in merged.groups:
        seconds = [
            r.ts.second
            for r in batch
            if (r.robot_id, r.sensor_type) == (g.robot_id, g.sensor_type)
            and int(r.ts.timestamp()) // 60 * 60 == g.minute
        ]
        assert g.slots == tuple(
            sum(1 for s in seconds if s // SLOT_SECONDS == i) for i in range(SLOTS_PER_MINUTE)
        ), g


@pytest.mark.parametrize("refusal", ["unknown robot", "stored already", "twice in the batch"])
async def test_the_one_statement_writes_nothing_when_it_cannot_write_everything(
    db: asyncpg.Pool[Any], refusal: str
) -> None:
    batch = _batch()[:20]
    async with db.acquire() as conn:
        applied = await conn.fetchval(
            "INSERT INTO counter_journal (entry) VALUES ('{}') RETURNING id"
        )
        if refusal == "stored already":
            await insert_all_new(conn, batch[:1], journal_entry="{}", retire=[])
        before = await conn.fetchval("SELECT count(*) FROM sensor_readings")
        journal = await _journal(conn)

        async def write() -> int | None:
            return await insert_all_new(conn, batch, journal_entry='{"n": 20}', retire=[applied])

        if refusal == "unknown robot":
            batch = [*batch, batch[0]._replace(robot_id="ghost")]
            assert await write() is None
        else:
            if refusal == "twice in the batch":
                batch = [*batch, batch[3]]
            with pytest.raises(StoredAlreadyError):
                await write()
        assert await conn.fetchval("SELECT count(*) FROM sensor_readings") == before
        assert await _journal(conn) == journal  # nothing added, nothing retired
        assert not conn.is_in_transaction()


async def test_a_journal_entry_is_kept_as_written_and_compressed_with_lz4(
    db: asyncpg.Pool[Any],
) -> None:
    """The entry is stored as the text the write path made (not parsed into jsonb, whose text
    would reorder the keys and add spaces), and a large one is compressed with lz4."""
    entry = '{"latest":[' + ",".join(f'{{"seq":{k},"robot":"r{k % 7}"}}' for k in range(2000))
    entry += '],"groups":[]}'
    async with db.acquire() as conn:
        entry_id = await add_journal_entry(conn, entry)
        stored = await conn.fetchrow(
            "SELECT entry, pg_column_compression(entry) AS method FROM counter_journal "
            "WHERE id = $1",
            entry_id,
        )
    assert stored is not None
    assert stored["entry"] == entry
    assert stored["method"] == "lz4"
