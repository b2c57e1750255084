"""Nothing lost, nothing doubled: bridge crashes, database outages, broker restarts, SIGTERM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from harness.bridge import BridgeProcess
from harness.publisher import Publisher, battery_messages
from harness.services import TEST_PUBLISHER, Mosquitto, RedisServer
from harness.waiting import eventually
from ingest.counters import Counters
from tests.conftest import HARNESS, StartBridge

# Each test runs the bridge as a process: `-m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

TOTAL_SINGLE = 4000
TOTAL_BATCHED = 16000


@pytest.fixture
def bridge(start_bridge: StartBridge) -> BridgeProcess:
    """A bridge that replays missed counter updates every 0.5 s: a commit cut off by a fault can
    succeed on the server unseen by the bridge, and its counters then come only from replay,
    which at the default 15 s interval can take longer than the tests wait on a loaded machine."""
    return start_bridge(journal_replay_interval_s="0.5")


def stream(start_ms: int) -> list[tuple[str, bytes]]:
    """Single and batched readings from several robots, interleaved."""
    single = [
        m for r in ("r1", "r2") for m in battery_messages(r, TOTAL_SINGLE // 2, start_ms=start_ms)
    ]
    batched = [
        m
        for r in ("r3", "r4")
        for m in battery_messages(r, TOTAL_BATCHED // 2, start_ms=start_ms, per_message=50)
    ]
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(single), len(batched))):
        out.extend(single[i : i + 1])
        out.extend(batched[i : i + 1])
    return out


async def publish_slowly(
    publisher: Publisher, messages: list[tuple[str, bytes]], *, chunks: int
) -> None:
    """Publishes in chunks so that faults land in the middle of the stream."""
    size = len(messages) // chunks + 1
    for i in range(0, len(messages), size):
        await asyncio.to_thread(publisher.publish_all, messages[i : i + size])
        await asyncio.sleep(0.05)


async def start_stream(
    publisher: Publisher, pool: asyncpg.Pool[Any], *, committed_before_return: int
) -> tuple[int, asyncio.Task[None]]:
    """Starts publishing the stream and returns once part of it is committed, so that the
    fault a test injects next lands in the middle of it."""
    start = int(time.time() * 1000) - 20_000
    sending = asyncio.create_task(publish_slowly(publisher, stream(start), chunks=20))
    await eventually(
        lambda: pool.fetchval("SELECT count(*) > $1 FROM sensor_readings", committed_before_return),
        True,
    )
    return start, sending


async def cut_off_bridges(admin: asyncpg.Connection[Any], database: str) -> None:
    """A database outage as the bridge sees it: its connections die, new ones are refused."""
    await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false")
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND application_name = 'robosense-bridge'",
        database,
    )


async def exactly_once(pool: asyncpg.Pool[Any], counters: Counters, start_ms: int) -> None:
    total = TOTAL_SINGLE + TOTAL_BATCHED

    async def rows() -> int:
        n: int = await pool.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(rows, total, timeout=60) == total
    # The primary key forbids doubles; check every identity we sent is the one stored.
    per_robot = dict(
        await pool.fetch("SELECT robot_id, count(DISTINCT ts) FROM sensor_readings GROUP BY 1")
    )
    assert per_robot == {"r1": 2000, "r2": 2000, "r3": 8000, "r4": 8000}

    async def counted() -> int:
        minutes = sorted({(start_ms + i) // 60000 * 60 for i in range(0, 8001, 500)})
        return sum(m.get("*", 0) for m in (await counters.window(minutes, top=0)).totals)

    assert await eventually(counted, total, timeout=30) == total


async def test_kill_9_mid_stream_loses_and_doubles_nothing(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any], counters: Counters
) -> None:
    start, sending = await start_stream(publisher, registered, committed_before_return=2000)
    bridge.kill()
    await asyncio.sleep(0.5)
    bridge.start()
    await sending
    await exactly_once(registered, counters, start)


async def test_database_outage_mid_stream_loses_and_doubles_nothing(
    bridge: BridgeProcess,
    publisher: Publisher,
    registered: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
) -> None:
    database = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{HARNESS.postgres_url}/postgres")
    try:
        start, sending = await start_stream(publisher, registered, committed_before_return=1000)
        await cut_off_bridges(admin, database)
        await eventually(lambda: _metric(bridge, "bridge_db_errors_total"), True, timeout=30)
        await asyncio.sleep(2)
        assert bridge.running
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        await sending
        await exactly_once(registered, counters, start)
    finally:
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        await admin.close()
    assert bridge.running


async def _metric(bridge: BridgeProcess, name: str) -> bool:
    try:
        return bridge.metric(name) > 0
    except KeyError:
        return False


async def test_sigterm_commits_what_it_took_and_the_rest_comes_back(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any], counters: Counters
) -> None:
    start, sending = await start_stream(publisher, registered, committed_before_return=2000)
    assert bridge.terminate() == 0
    bridge.start()
    await sending
    await exactly_once(registered, counters, start)


async def test_backlog_survives_a_broker_restart_while_the_bridge_is_down(
    bridge: BridgeProcess,
    mosquitto: Mosquitto,
    registered: asyncpg.Pool[Any],
    counters: Counters,
    tmp_path: Path,
) -> None:
    start = int(time.time() * 1000) - 20_000
    bridge.terminate()  # its persistent session stays at the broker and queues for it
    publisher = Publisher(
        port=mosquitto.port, username=TEST_PUBLISHER, password=mosquitto.passwords[TEST_PUBLISHER]
    )
    publisher.publish_all(stream(start))
    publisher.close()
    mosquitto.stop()  # a clean broker restart writes the queue to disk
    mosquitto.start()
    bridge.start()
    await exactly_once(registered, counters, start)


async def test_redis_restart_mid_stream_counters_are_rebuilt_exactly(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    redis_prefix: str,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    with RedisServer(workdir=tmp_path / "redis") as redis_server:
        bridge = start_bridge(redis_url=redis_server.url, journal_replay_interval_s="0.5")
        client = Redis.from_url(redis_server.url)
        try:
            start, sending = await start_stream(publisher, registered, committed_before_return=2000)
            # Redis dies (commits go on, counter updates are deferred) and comes back empty.
            redis_server.kill()
            await asyncio.sleep(1.0)
            redis_server.start()
            await sending
            await exactly_once(registered, Counters(redis=client, prefix=redis_prefix), start)
            assert bridge.running
        finally:
            bridge.stop()  # before its private Redis goes away
            await client.aclose()


async def test_sigterm_during_a_database_outage_exits_and_loses_nothing(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    database_url: str,
    publisher: Publisher,
    counters: Counters,
) -> None:
    database = database_url.rsplit("/", 1)[1]
    bridge = start_bridge(stop_grace_s="1")
    admin = await asyncpg.connect(f"{HARNESS.postgres_url}/postgres")
    start = int(time.time() * 1000) - 20_000
    try:
        await cut_off_bridges(admin, database)
        await asyncio.to_thread(publisher.publish_all, stream(start))
        await eventually(lambda: _metric(bridge, "bridge_db_errors_total"), True, timeout=30)
        # A stop while the database is away: the batch cannot be committed, so it is not
        # acknowledged, and the bridge exits (non-zero) instead of hanging until killed.
        assert await asyncio.to_thread(bridge.terminate, timeout=20) == 1
        assert "left unacknowledged for redelivery" in bridge.log_tail()
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        bridge.start()
        await exactly_once(registered, counters, start)
    finally:
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        await admin.close()
