"""Readings published over MQTT land in PostgreSQL exactly once and are counted in Redis."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
import pytest

from harness.bridge import BridgeProcess
from harness.publisher import Publisher, battery_messages
from harness.services import Mosquitto
from harness.waiting import eventually
from ingest.counters import Counters
from tests.conftest import StartBridge

# Each test runs the bridge as a process: `-m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


async def row_count(pool: asyncpg.Pool[Any]) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM sensor_readings")
    return n


async def redis_total(counters: Counters, start_ms: int, n: int) -> int:
    minutes = sorted(
        {(start_ms + i) // 60000 * 60 for i in range(0, n, 1000)} | {(start_ms + n) // 60000 * 60}
    )
    return sum(m.get("*", 0) for m in (await counters.window(minutes, top=0)).totals)


async def test_single_and_batched_readings_are_stored_once_and_counted(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any], counters: Counters
) -> None:
    start = int(time.time() * 1000) - 10_000
    single = battery_messages("r1", 700, start_ms=start)
    batched = battery_messages("r2", 3000, start_ms=start, per_message=100)
    publisher.publish_all(single + batched)

    assert await eventually(lambda: row_count(registered), 3700) == 3700
    assert await eventually(lambda: redis_total(counters, start, 3000), 3700) == 3700
    per_robot = dict(
        await registered.fetch("SELECT robot_id, count(*) FROM sensor_readings GROUP BY 1")
    )
    assert per_robot == {"r1": 700, "r2": 3000}

    # The same readings again (a robot resending after a reconnect): nothing changes.
    publisher.publish_all(single + batched)
    assert (
        await eventually(lambda: _metric(bridge, "bridge_readings_duplicate_total"), 3700.0)
        == 3700.0
    )
    assert await row_count(registered) == 3700
    assert await redis_total(counters, start, 3000) == 3700
    seq = await counters.seq_stats("r1", "battery")
    assert seq is not None and (seq.count, seq.gaps) == (700, 0)


async def _metric(bridge: BridgeProcess, name: str) -> float:
    return bridge.metric(name)


async def test_latest_last_seen_and_status_reach_redis(
    bridge: BridgeProcess, publisher: Publisher, counters: Counters, registered: asyncpg.Pool[Any]
) -> None:
    start = int(time.time() * 1000)
    publisher.publish_all(battery_messages("r3", 5, start_ms=start))
    publisher.publish_all([("robots/r3/status", b"online")])

    async def latest_seq() -> Any:
        [latest] = await counters.latest(["r3"])
        return orjson.loads(latest["battery"])["seq"] if "battery" in latest else None

    assert await eventually(latest_seq, 4) == 4
    _, [seen] = await counters.robot_live(["r3"])
    assert seen is not None

    async def status() -> Any:
        [document], _ = await counters.robot_live(["r3"])
        return orjson.loads(document)["status"] if document else None

    assert await eventually(status, "online") == "online"


async def test_unknown_robots_are_rejected_by_default(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    publisher.publish_all(battery_messages("stranger", 3) + battery_messages("r1", 2))
    assert await eventually(lambda: row_count(registered), 2) == 2

    async def dead() -> list[tuple[str, str]]:
        rows = await registered.fetch("SELECT reason, topic FROM dead_letters ORDER BY id")
        return [(r["reason"], r["topic"]) for r in rows]

    expected = [("unknown_robot", "robots/stranger/sensors/battery")] * 3
    assert await eventually(dead, expected) == expected
    payload = await registered.fetchval("SELECT payload FROM dead_letters LIMIT 1")
    assert orjson.loads(payload)["data"] == {"level": 0.0}


async def test_register_policy_registers_unknown_robots(
    registered: asyncpg.Pool[Any], start_bridge: StartBridge, publisher: Publisher
) -> None:
    start_bridge(unknown_robot_policy="register")
    publisher.publish_all(battery_messages("newcomer", 4))
    assert await eventually(lambda: row_count(registered), 4) == 4
    assert await registered.fetchval("SELECT count(*) FROM robots WHERE id = 'newcomer'") == 1


async def test_rebuild_counters_command_restores_lost_counters(
    bridge: BridgeProcess,
    publisher: Publisher,
    registered: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
    redis_prefix: str,
) -> None:
    import asyncio
    import os
    import subprocess
    import sys

    from harness.services import ROOT

    start = int(time.time() * 1000) - 10_000
    publisher.publish_all(battery_messages("r4", 1500, start_ms=start, per_message=50))
    assert await eventually(lambda: redis_total(counters, start, 1500), 1500) == 1500
    bridge.terminate()
    await counters.clear()  # Redis lost everything
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_PREFIX": redis_prefix}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "rebuild-counters"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert await redis_total(counters, start, 1500) == 1500
    [latest] = await counters.latest(["r4"])
    assert orjson.loads(latest["battery"])["seq"] == 1499


async def test_two_bridges_split_the_stream_and_store_it_once(
    start_bridge: StartBridge,
    publisher: Publisher,
    registered: asyncpg.Pool[Any],
    counters: Counters,
    mosquitto: Mosquitto,
) -> None:
    bridge = start_bridge(share_group=mosquitto.share_group)
    second = start_bridge("second", share_group=mosquitto.share_group)
    start = int(time.time() * 1000) - 10_000
    messages = [m for r in ("r1", "r2", "r3") for m in battery_messages(r, 1000, start_ms=start)]
    publisher.publish_all(messages)
    assert await eventually(lambda: row_count(registered), 3000) == 3000
    assert await eventually(lambda: redis_total(counters, start, 1000), 3000) == 3000

    async def shares() -> tuple[float, float]:
        # Each bridge counts a batch just after acknowledging it: poll, do not sample once.
        return (
            bridge.metric("bridge_messages_received_total"),
            second.metric("bridge_messages_received_total"),
        )

    async def total_shares() -> float:
        return sum(await shares())

    assert await eventually(total_shares, 3000.0) == 3000.0
    # The broker deals the shared subscription out between both.
    assert all(share > 0 for share in await shares())
