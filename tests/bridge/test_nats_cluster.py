"""Bridges reading a 3-node NATS cluster (BRIDGE_SOURCE=nats): robots publish MQTT QoS 1 to
different nodes, several bridges share the stream's durable consumer, and every reading is
stored exactly once through a node killed mid-stream, a bridge killed, and a clean restart of
the whole cluster (docs/nats.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.bridge import BridgeProcess
from harness.nats import NatsCluster
from harness.publisher import SteadyRobot
from harness.waiting import eventually
from ingest.counters import Counters
from mqtt_auth.identities import Identity, Role
from mqtt_auth.nats import ADMIN_USERNAME
from tests.bridge.test_broker_restart import all_acked, row_count, sent_at_least, stored_indexes

pytestmark = pytest.mark.slow

ROBOTS = ("r1", "r2", "r3", "r4")
BRIDGES = ("nb1", "nb2", "nb3")
# Short, so that a killed bridge's messages go to the others within the test.
ACK_WAIT_S = "4"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(workdir=tmp_path / "nats")
    for name in BRIDGES:
        c.add(Identity(name, Role.BRIDGE, None))
    for robot in ROBOTS:
        c.add_robot(robot)
    with c:
        yield c


class NatsBridges:
    def __init__(
        self, cluster: NatsCluster, database_url: str, redis_prefix: str, tmp_path: Path
    ) -> None:
        self.cluster = cluster
        self.database_url = database_url
        self.redis_prefix = redis_prefix
        self.tmp_path = tmp_path
        self.started: list[BridgeProcess] = []

    def settings(self, username: str) -> dict[str, str]:
        return {
            "bridge_source": "nats",
            "nats_urls": self.cluster.url_for(username),
            "nats_ack_wait_s": ACK_WAIT_S,
            "nats_replicas": str(self.cluster.replicas),
            # Below each test node's file store (harness.nats), or JetStream refuses to place it.
            "nats_max_bytes": str(512 * 1024**2),
            "journal_replay_interval_s": "0.5",
        }

    def setup_stream(self) -> str:
        import subprocess
        import sys

        from harness.services import ROOT

        env = {
            **BridgeProcess(
                database_url=self.database_url,
                redis_prefix=self.redis_prefix,
                mqtt_url="mqtt://127.0.0.1:1",
                log_path=self.tmp_path / "setup.log",
                **self.settings(ADMIN_USERNAME),
            ).env
        }
        out = subprocess.run(
            [sys.executable, "-m", "bridge", "nats-setup"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    def start(self, name: str) -> BridgeProcess:
        process = BridgeProcess(
            database_url=self.database_url,
            redis_prefix=self.redis_prefix,
            mqtt_url="mqtt://127.0.0.1:1",
            log_path=self.tmp_path / f"{name}.log",
            client_id=name,
            **self.settings(name),
        )
        self.started.append(process)
        process.start(timeout=60)
        return process


@pytest.fixture
def nats_bridges(
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
    redis_prefix: str,
    cluster: NatsCluster,
    tmp_path: Path,
) -> Iterator[NatsBridges]:
    bridges = NatsBridges(cluster, database_url, redis_prefix, tmp_path)
    assert "created (replicas 3)" in bridges.setup_stream()
    yield bridges
    for process in bridges.started:
        process.stop()


@pytest.fixture
def fleet(cluster: NatsCluster) -> Iterator[list[SteadyRobot]]:
    robots: list[SteadyRobot] = []
    yield robots
    for robot in robots:
        robot.close()


def start_fleet(
    cluster: NatsCluster, fleet: list[SteadyRobot], start_ms: int, *, rate: float, count: int
) -> None:
    """Robot i connects to node i % 3 first and fails over to the next ones."""
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
    # Nothing more comes later (a redelivery stays a duplicate, never a second row).
    await asyncio.sleep(1.0)
    assert await row_count(pool) == total


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
    start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 800)
    # The node that r1 publishes to; not the stream's leader (see docs/nats.md on a leader).
    victim = cluster.nodes[0]
    assert fleet[0].ports_used == [victim.ports.mqtt]
    assert victim.proc is not None
    victim.proc.kill()
    assert victim.proc.wait(timeout=10) == -9
    killed_at = time.time()
    victim.proc = None

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    # The fault happened mid-stream: r1 went on through another node, and readings were
    # acknowledged after the kill.
    assert len(fleet[0].ports_used) >= 2
    assert fleet[0].ports_used[-1] != victim.ports.mqtt
    assert any(t > killed_at + 0.5 for t in fleet[0].acked_at.values())


async def test_killing_a_bridge_hands_its_messages_to_the_others(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    bridges = [nats_bridges.start(name) for name in BRIDGES]
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000
    start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 800)
    victim = bridges[0]
    # It was taking its share of the stream when it was killed.
    assert victim.metric("bridge_readings_inserted_total") > 0
    assert victim.proc is not None
    victim.proc.kill()
    assert victim.proc.wait(timeout=10) == -9
    killed_at = time.time()
    victim.proc = None

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    assert any(t > killed_at + 1 for r in fleet for t in r.acked_at.values())
    survivors = sum(b.metric("bridge_readings_inserted_total") for b in bridges[1:])
    assert 0 < survivors < len(ROBOTS) * count


async def test_a_clean_restart_of_the_whole_cluster_loses_nothing(
    registered: asyncpg.Pool[Any],
    cluster: NatsCluster,
    nats_bridges: NatsBridges,
    fleet: list[SteadyRobot],
) -> None:
    bridges = [nats_bridges.start(name) for name in BRIDGES[:2]]
    start_ms = int(time.time() * 1000) - 60_000
    count = 3000
    start_fleet(cluster, fleet, start_ms, rate=250, count=count)
    await sent_at_least(fleet, 800)
    cluster.stop()
    assert all(n.proc is None for n in cluster.nodes)
    stopped_at = time.time()
    await asyncio.to_thread(cluster.start)

    await assert_stored_exactly_once(registered, fleet, start_ms, count)
    # Published on both sides of the restart, and the bridges outlived it.
    assert any(t < stopped_at for r in fleet for t in r.acked_at.values())
    assert any(t > stopped_at for r in fleet for t in r.acked_at.values())
    assert all(b.running for b in bridges)
