"""The simulator on a 3-node NATS cluster (a comma-separated --mqtt-url): its connections spread
over the nodes, and those on a node that is killed move on to another and resend what it had
not acknowledged; every reading of the summary is stored."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from edge_simulator.cli import SimulatorSettings, build_parser, config_from_args
from edge_simulator.config import SensorRate, SimulationConfig
from edge_simulator.identities import identities, logins
from edge_simulator.registry import register_via_db
from edge_simulator.run import simulate
from harness.nats import NatsBridges, NatsCluster
from harness.waiting import eventually
from ingest.counters import Counters
from mqtt_auth.identities import Identity, Role

pytestmark = pytest.mark.slow

SECRET = "test-fleet-secret"
MIX = {"imu": SensorRate(50.0, 10), "battery": SensorRate(5.0, 1)}


def fleet_config(cluster: NatsCluster) -> SimulationConfig:
    first, *others = cluster.nodes
    return SimulationConfig(
        robots=6,
        duration_s=8.0,
        seed=5,
        mix=MIX,
        qos=1,
        mqtt_port=first.ports.mqtt,
        mqtt_failover=tuple(("127.0.0.1", n.ports.mqtt) for n in others),
        mqtt_secret=SECRET,
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(workdir=tmp_path / "nats")
    c.add(Identity("bridge", Role.BRIDGE, None))
    config = fleet_config(c)
    for identity, (_, password) in zip(identities(config), logins(config), strict=True):
        c.add(identity, password)
    with c:
        yield c


def test_a_comma_separated_mqtt_url_is_a_list_of_nodes() -> None:
    parser = build_parser(SimulatorSettings())
    args = parser.parse_args(
        [
            "--robots",
            "1",
            "--mqtt-url",
            "mqtt://u:p@127.0.0.1:1001,mqtt://127.0.0.1:1002,mqtt://h3:1003",
        ]
    )
    config = config_from_args(args, now_ms=int(time.time() * 1000))
    assert config.brokers == [("127.0.0.1", 1001), ("127.0.0.1", 1002), ("h3", 1003)]
    assert (config.mqtt_username, config.mqtt_password) == ("u", "p")


async def test_connections_on_a_killed_node_move_on_and_nothing_is_lost(
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
    redis_prefix: str,
    cluster: NatsCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridges = NatsBridges(cluster, database_url, redis_prefix, tmp_path)
    try:
        bridges.setup_stream()
        bridges.start("bridge")
        config = fleet_config(cluster)
        await register_via_db(database_url=database_url, robot_ids=config.fleet_ids())
        # A node that leads no stream (docs/nats.md, "Killing a stream's leader").
        victim = cluster.nodes[1]
        await cluster.move_leaders_off(victim)
        caplog.set_level(logging.WARNING, logger="edge_simulator.fleet")

        async def kill_midway() -> float:
            await asyncio.sleep(3.0)
            assert victim.kill() == -9
            return time.time()

        summary, _ = await asyncio.gather(simulate(config=config), kill_midway())
        assert summary.unacknowledged == 0
        # The fault hit connections: 2 of the 6 started on the killed node (link i on node
        # i mod 3) and moved on.
        lost = [r for r in caplog.records if "lost" in r.getMessage()]
        assert len(lost) >= 2

        async def row_count() -> int:
            n: int = await clean_db.fetchval("SELECT count(*) FROM sensor_readings")
            return n

        valid = summary.totals()["valid_readings"]
        assert valid > 0
        assert await eventually(row_count, valid, timeout=90) == valid
        per_robot = await clean_db.fetch(
            "SELECT robot_id, count(*)::int AS n FROM sensor_readings GROUP BY 1"
        )
        assert {r["robot_id"] for r in per_robot} == set(config.fleet_ids())
    finally:
        bridges.stop()


def test_config_lists_the_first_node_first() -> None:
    config = replace(
        SimulationConfig(robots=1, duration_s=1.0),
        mqtt_host="a",
        mqtt_port=1,
        mqtt_failover=(("b", 2),),
    )
    assert config.brokers == [("a", 1), ("b", 2)]
