"""Broker restarts with robots publishing throughout: what Mosquitto 2.0 keeps, and what we lose.

Mosquitto writes a persistent session's plain subscriptions and queued messages to its
persistence file, but not its shared (`$share/...`) subscriptions (2.0.x's persist__subs_save
walks only a topic node's plain subscribers). So a single bridge subscribes plainly (SHARE_GROUP
empty, the default): the restarted broker queues what robots publish for it before it is back.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from harness.publisher import Publisher, SteadyRobot, battery_messages
from harness.services import TEST_PUBLISHER, Mosquitto
from harness.waiting import eventually
from tests.conftest import StartBridge

ROBOTS = ("r1", "r2", "r3", "r4")


@pytest.fixture
def fleet_start_ms() -> int:
    return int(time.time() * 1000) - 60_000


def make_fleet(
    mosquitto: Mosquitto, start_ms: int, *, rate: float, count: int
) -> list[SteadyRobot]:
    return [
        SteadyRobot(
            port=mosquitto.port,
            robot_id=r,
            password=mosquitto.add_robot(r),
            start_ms=start_ms,
            rate=rate,
            count=count,
        )
        for r in ROBOTS
    ]


@pytest.fixture
def close_fleet() -> Iterator[list[SteadyRobot]]:
    fleet: list[SteadyRobot] = []
    yield fleet
    for robot in fleet:
        robot.close()


async def stored_indexes(pool: asyncpg.Pool[Any], start_ms: int) -> dict[str, set[int]]:
    rows = await pool.fetch(
        "SELECT robot_id, (extract(epoch FROM ts) * 1000)::bigint - $1 AS i FROM sensor_readings",
        start_ms,
    )
    out: dict[str, set[int]] = {r: set() for r in ROBOTS}
    for row in rows:
        out[row["robot_id"]].add(row["i"])
    return out


async def row_count(pool: asyncpg.Pool[Any]) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM sensor_readings")
    return n


async def settled(probe: Callable[[], Awaitable[int]], *, quiet_s: float, timeout: float) -> int:
    """Waits until probe() has not changed for `quiet_s`; raises if it keeps changing."""
    deadline = time.monotonic() + timeout
    value, since = await probe(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still changing after {timeout}s: {value}")
        await asyncio.sleep(0.2)
        now = await probe()
        if now != value:
            value, since = now, time.monotonic()
    return value


async def all_acked(fleet: list[SteadyRobot]) -> None:
    await asyncio.gather(*(asyncio.to_thread(r.wait_all_acked, timeout=90) for r in fleet))


async def sent_at_least(fleet: list[SteadyRobot], n: int) -> None:
    deadline = time.monotonic() + 30
    while min(r.sent for r in fleet) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"robots sent {[r.sent for r in fleet]}, expected {n} each")
        await asyncio.sleep(0.05)


async def test_clean_broker_restart_with_robots_publishing_loses_nothing(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    mosquitto: Mosquitto,
    fleet_start_ms: int,
    close_fleet: list[SteadyRobot],
) -> None:
    bridge = start_bridge()
    # 4 robots x 300 messages/s for 10 s; the broker is away for 1 s in the middle.
    close_fleet.extend(make_fleet(mosquitto, fleet_start_ms, rate=300, count=3000))
    for robot in close_fleet:
        robot.start()
    await sent_at_least(close_fleet, 900)
    assert await row_count(registered) > 0
    mosquitto.stop()
    stopped_at = time.time()
    await asyncio.sleep(1.0)
    mosquitto.start()
    await all_acked(close_fleet)

    # The fault happened mid-stream: readings were acknowledged after the broker came back,
    # and the bridge resumed its session (the broker had kept it) on a second connection.
    assert any(t > stopped_at + 1 for r in close_fleet for t in r.acked_at.values())
    assert '"session_present": true' in bridge.log_path.read_text()
    total = len(ROBOTS) * 3000
    assert await eventually(lambda: row_count(registered), total) == total
    stored = await stored_indexes(registered, fleet_start_ms)
    assert {r: len(s) for r, s in stored.items()} == dict.fromkeys(ROBOTS, 3000)


async def test_kill_9_of_the_broker_loses_at_most_what_arrived_since_its_last_save(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    mosquitto: Mosquitto,
    fleet_start_ms: int,
    close_fleet: list[SteadyRobot],
) -> None:
    start_bridge()
    close_fleet.extend(make_fleet(mosquitto, fleet_start_ms, rate=250, count=6000))
    for robot in close_fleet:
        robot.start()
    # Wait for an autosave (every 10 s in mosquitto.conf) that holds the bridge's session and
    # subscription, then kill the broker a few seconds into the next interval.
    db_file = mosquitto.data_dir / "mosquitto.db"
    deadline = time.monotonic() + 30
    while not db_file.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("Mosquitto never saved its database")
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)
    assert mosquitto.proc is not None
    mosquitto.proc.kill()
    assert mosquitto.proc.wait(timeout=10) == -9
    killed_at = time.time()
    last_save = os.stat(db_file).st_mtime
    mosquitto.proc = None
    await asyncio.sleep(1.0)
    mosquitto.start()
    restarted_at = time.time()
    await all_acked(close_fleet)

    acked = {(r.robot_id, i): t for r in close_fleet for i, t in r.acked_at.items()}
    # The fault happened: readings were acknowledged between the last save and the kill.
    assert any(last_save < t < killed_at for t in acked.values())
    assert any(t > restarted_at for t in acked.values())

    def lost(stored: dict[str, set[int]]) -> list[tuple[str, int]]:
        return [key for key in acked if key[1] not in stored[key[0]]]

    async def stored_now() -> dict[str, set[int]]:
        return await stored_indexes(registered, fleet_start_ms)

    # Let the bridge drain what it can; then every reading acknowledged before the last save
    # (1 s margin for the save itself) or after the restart is stored.
    total = len(acked)
    await settled(lambda: row_count(registered), quiet_s=3.0, timeout=60)
    missing = lost(await stored_now())
    outside_window = [k for k in missing if not (last_save - 1 <= acked[k] <= killed_at + 0.5)]
    assert outside_window == []
    print(f"kill -9: {len(missing)} of {total} acknowledged readings lost (all in the window)")


async def test_bridge_down_while_the_broker_restarts_loses_nothing(
    registered: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    bridge = start_bridge()
    bridge.terminate()
    mosquitto.stop()
    mosquitto.start()
    # Published while the bridge is still away from the restarted broker.
    start = int(time.time() * 1000) - 10_000
    publisher = Publisher(
        port=mosquitto.port, username=TEST_PUBLISHER, password=mosquitto.passwords[TEST_PUBLISHER]
    )
    try:
        publisher.publish_all(battery_messages("r1", 5000, start_ms=start))
    finally:
        publisher.close()
    bridge.start()
    assert await eventually(lambda: row_count(registered), 5000) == 5000


async def test_restarted_mosquitto_forgets_shared_subscriptions(
    registered: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    """Why several bridges (SHARE_GROUP set) can lose readings through a broker restart: what
    robots publish before a bridge of the group has subscribed again has no subscriber. If
    this fails, the broker now persists shared subscriptions: revisit the README."""
    bridge = start_bridge(share_group=mosquitto.share_group)
    bridge.terminate()
    mosquitto.stop()
    mosquitto.start()
    start = int(time.time() * 1000) - 10_000
    publisher = Publisher(
        port=mosquitto.port, username=TEST_PUBLISHER, password=mosquitto.passwords[TEST_PUBLISHER]
    )
    try:
        publisher.publish_all(battery_messages("r1", 500, start_ms=start))
        bridge.start()
        # A marker published after the bridge is back arrives; the 500 before it never do.
        publisher.publish_all(battery_messages("r2", 1, start_ms=start))
    finally:
        publisher.close()
    assert await eventually(lambda: row_count(registered), 1) == 1
    await asyncio.sleep(1.0)
    assert await registered.fetchval("SELECT count(*) FROM sensor_readings") == 1
