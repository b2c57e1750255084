"""Bridges reading a 3-node NATS cluster (BRIDGE_SOURCE=nats): robots publish MQTT QoS 1 to
different nodes, several bridges share the stream's durable consumer, and every reading is
stored exactly once through a node killed mid-stream, a bridge killed, and a clean restart of
the whole cluster (docs/nats.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.nats import NatsBridges, NatsCluster
from harness.publisher import SteadyRobot
from harness.waiting import eventually
from ingest.counters import Counters
from mqtt_auth.identities import Identity, Role
from telemetry.topics import NATS_MQTT_STREAM, status_topic
from tests.bridge.test_broker_restart import all_acked, row_count, sent_at_least, stored_indexes

pytestmark = pytest.mark.slow

ROBOTS = ("r1", "r2", "r3", "r4")
BRIDGES = ("nb1", "nb2", "nb3")
# Short, so that a killed bridge's messages go to the others within the test.
ACK_WAIT_S = "4"
STREAM = "ROBOSENSE"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(workdir=tmp_path / "nats")
    for name in BRIDGES:
        c.add(Identity(name, Role.BRIDGE, None))
    for robot in ROBOTS:
        c.add_robot(robot)
    with c:
        yield c


@pytest.fixture
def nats_bridges(
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
    redis_prefix: str,
    cluster: NatsCluster,
    tmp_path: Path,
) -> Iterator[NatsBridges]:
    bridges = NatsBridges(cluster, database_url, redis_prefix, tmp_path, ack_wait_s=ACK_WAIT_S)
    assert "created (replicas 3)" in bridges.setup_stream()
    yield bridges
    bridges.stop()


async def test_stream_setup_waits_for_the_cluster_to_come_back(
    clean_db: asyncpg.Pool[Any],
    database_url: str,
    redis_prefix: str,
    cluster: NatsCluster,
    tmp_path: Path,
) -> None:
    """With two of three nodes down JetStream has no quorum and answers no stream request (a
    timeout, or 503): `bridge nats-setup` waits for the nodes instead of failing, and places
    the three replicas once they are back."""
    down = cluster.nodes[1:]
    for node in down:
        assert node.kill() == -9
    bridges = NatsBridges(cluster, database_url, redis_prefix, tmp_path)
    setup = asyncio.ensure_future(asyncio.to_thread(bridges.setup_stream))
    await asyncio.sleep(3.0)
    assert not setup.done()  # still waiting: before, the first refusal ended the setup
    for node in down:
        await asyncio.to_thread(node.start)
    assert "created (replicas 3)" in await asyncio.wait_for(setup, timeout=60)


@pytest.fixture
def fleet(cluster: NatsCluster) -> Iterator[list[SteadyRobot]]:
    robots: list[SteadyRobot] = []
    yield robots
    for robot in robots:
        robot.close()


async def start_fleet(
    cluster: NatsCluster,
    fleet: list[SteadyRobot],
    start_ms: int,
    *,
    rate: float,
    count: int,
    before_publishing: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Robot i connects to node i % 3 first and fails over to the next ones; once all are
    connected, `before_publishing` runs, then they publish."""
    ports = [n.ports.mqtt for n in cluster.nodes]
    for i, robot_id in enumerate(ROBOTS):
        first = i % len(ports)
        order = ports[first:] + ports[:first]
        fleet.append(
            SteadyRobot(
                port=order[0],
                failover_ports=order[1:],
                robot_id=robot_id,
                password=cluster.passwords[robot_id],
                start_ms=start_ms,
                rate=rate,
                count=count,
            )
        )

    # A first MQTT connect to the cluster creates the account's session streams (R3): it can
    # take seconds, and a robot must be on its node before the node is killed.
    async def connected() -> list[bool]:
        return [bool(r.ports_used) for r in fleet]

    await eventually(connected, [True] * len(fleet), timeout=60)
    if before_publishing is not None:
        await before_publishing()
    for robot in fleet:
        robot.start()


async def assert_stored_exactly_once(
    pool: asyncpg.Pool[Any], fleet: list[SteadyRobot], start_ms: int, count: int
) -> None:
    await all_acked(fleet)
    total = len(ROBOTS) * count
    assert await eventually(lambda: row_count(pool), total, timeout=90) == total
    stored = await stored_indexes(pool, start_ms)
    assert {r: len(s) for r, s in stored.items()} == dict.fromkeys(ROBOTS, count)


async def test_killing_a_nats_node_mid_stream_loses_nothing(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    for name in BRIDGES[:2]:
        nats_bridges.start(name)
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000

    # A node robots publish to, once it leads no stream: a node's loss alone (the leaders'
    # loss is test_killing_a_stream_leader_mid_stream_loses_nothing). The leaders move before
    # the robots publish.
    async def move_leaders() -> None:
        # The node the first robot is on.
        node = next(n for n in cluster.nodes if n.ports.mqtt == fleet[0].ports_used[-1])
        await cluster.move_leaders_off(node)

    await start_fleet(
        cluster, fleet, start_ms, rate=250, count=count, before_publishing=move_leaders
    )
    robot = fleet[0]
    victim = next(n for n in cluster.nodes if n.ports.mqtt == robot.ports_used[0])
    await sent_at_least(fleet, 800)
    assert victim.kill() == -9
    killed_at = time.time()

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    # The fault happened mid-stream: the robot on it went on through another node, and its
    # readings were acknowledged after the kill.
    assert len(robot.ports_used) >= 2
    assert robot.ports_used[-1] != victim.ports.mqtt
    assert any(t > killed_at + 0.5 for t in robot.acked_at.values())


async def test_killing_a_bridge_hands_its_messages_to_the_others(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    bridges = [nats_bridges.start(name) for name in BRIDGES]
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000
    await start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 800)
    victim = bridges[0]
    # It was taking its share of the stream when it was killed.
    assert victim.metric("bridge_readings_inserted_total") > 0
    assert victim.kill() == -9
    killed_at = time.time()

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    assert any(t > killed_at + 1 for r in fleet for t in r.acked_at.values())
    survivors = sum(b.metric("bridge_readings_inserted_total") for b in bridges[1:])
    assert 0 < survivors < len(ROBOTS) * count


async def test_a_clean_restart_of_the_whole_cluster_keeps_the_stream_and_the_consumer(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    """Every node stopped cleanly and started again, with readings stored in the stream and not
    yet consumed (the bridges were down): all of them are delivered after the restart, once.
    (Robots publishing through the restart: the test after this one.)"""
    first = nats_bridges.start("nb1")
    start_ms = int(time.time() * 1000) - 60_000
    count = 2000
    await start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 500)
    # The bridge is stopped mid-stream: the rest waits in the stream.
    assert first.terminate() == 0
    await all_acked(fleet)
    total = len(ROBOTS) * count

    async def in_stream() -> int | None:
        try:
            return await asyncio.to_thread(cluster.stream_messages, "ROBOSENSE")
        except (LookupError, OSError):
            return None  # no leader yet (after the restart): asked again

    assert await eventually(in_stream, total) == total
    stored_before = await row_count(registered)
    assert 0 < stored_before < total
    for robot in fleet:
        robot.close()
    pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
    cluster.stop()
    assert all(n.proc is None for n in cluster.nodes)
    await asyncio.to_thread(cluster.start)
    assert all(n.proc is not None and n.proc.pid not in pids for n in cluster.nodes)
    assert await eventually(in_stream, total) == total

    for name in BRIDGES[1:]:
        nats_bridges.start(name)
    await assert_stored_exactly_once(registered, fleet, start_ms, count)


async def test_statuses_come_back_from_the_stream_when_redis_lost_them(
    registered: asyncpg.Pool[Any],
    counters: Counters,
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
) -> None:
    bridge = nats_bridges.start("nb1")
    robot = paho.Client(CallbackAPIVersion.VERSION2, client_id="r2", protocol=paho.MQTTv311)
    robot.username_pw_set("r2", cluster.passwords["r2"])
    robot.connect("127.0.0.1", cluster.nodes[2].ports.mqtt)
    robot.loop_start()
    try:
        for value in (b"offline", b"online"):
            robot.publish(status_topic("r2"), value, qos=1, retain=True).wait_for_publish(30)
    finally:
        robot.disconnect()
        robot.loop_stop()

    async def status() -> Any:
        [document], _ = await counters.robot_live(["r2"])
        return None if document is None else orjson.loads(document)["status"]

    assert await eventually(status, "online") == "online"
    # Redis loses everything under our prefix: the bridge notices, rebuilds the counters and
    # has the statuses replayed from the stream (the last per robot: online, not offline).
    await counters.clear()
    assert await status() is None  # the fault
    assert await eventually(status, "online") == "online"

    async def replayed() -> bool:
        return '"statuses replayed from the stream"' in bridge.log_path.read_text()

    # (Logged once the replay's last fetch found nothing more, after the status was stored.)
    assert await eventually(replayed, True)
    assert "Redis lost or restarted" in bridge.log_path.read_text()


@pytest.mark.parametrize("killed", [NATS_MQTT_STREAM, STREAM])
async def test_killing_a_stream_leader_mid_stream_loses_nothing(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
    killed: str,
) -> None:
    """The node leading a stream killed (kill -9) while robots publish QoS 1 to it and to the
    others, the other stream led by another node: `$MQTT_msgs`, whose store the MQTT listener
    waits for before its PUBACK and which the bridges read, or ours, which takes the same
    messages unacknowledged and which bridges that read it lost readings through
    (docs/nats.md, "Killing a stream's leader")."""
    other = STREAM if killed == NATS_MQTT_STREAM else NATS_MQTT_STREAM
    for name in BRIDGES[:2]:
        nats_bridges.start(name)
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000

    async def lead_apart() -> None:
        await cluster.lead_apart(killed, other)

    await start_fleet(cluster, fleet, start_ms, rate=250, count=count, before_publishing=lead_apart)
    await sent_at_least(fleet, 800)
    victim = await cluster.stream_leader_by_api(killed)
    assert (await cluster.stream_leader_by_api(other)) is not victim
    on_victim = [r for r in fleet if r.ports_used[-1] == victim.ports.mqtt]
    assert on_victim  # robot i starts on node i % 3
    assert victim.kill() == -9
    killed_at = time.time()

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    # The fault: the killed node led the stream, another leads it now; robots on it went on
    # through other nodes, and every robot had readings acknowledged after the kill.
    assert (await cluster.stream_leader_by_api(killed)) is not victim
    assert all(r.ports_used[-1] != victim.ports.mqtt for r in on_victim)
    assert all(any(t > killed_at + 0.5 for t in r.acked_at.values()) for r in fleet)


async def test_restarting_the_whole_cluster_while_robots_publish_loses_nothing(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    """Every node stopped and started again while robots keep publishing (they reconnect to
    whichever node answers) and the bridges keep running."""
    for name in BRIDGES[:2]:
        nats_bridges.start(name)
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000
    await start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 500)
    pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
    sent_before = [r.sent for r in fleet]
    cluster.stop()
    stopped_at = time.time()
    assert all(n.proc is None for n in cluster.nodes)
    await asyncio.to_thread(cluster.start)
    assert all(n.proc is not None and n.proc.pid not in pids for n in cluster.nodes)

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    # The fault happened mid-stream: every robot was publishing before the stop, reconnected,
    # and had readings acknowledged after it.
    assert all(0 < s < count for s in sent_before)
    assert all(len(r.ports_used) >= 2 for r in fleet)
    assert all(any(t > stopped_at for t in r.acked_at.values()) for r in fleet)
