"""loadtest.sim_connect's restart mode on a small fleet: the broker really goes away under the
connected fleet, every link sees it, and the fleet's own reconnects bring every link back."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_simulator.config import Partition
from edge_simulator.identities import identities
from harness.services import ROOT, Mosquitto
from loadtest.sim_connect import _run_storm
from loadtest.wire_publisher import fleet_config
from mqtt_auth.passwords import new_password

ROBOTS = 40


def test_the_fleet_comes_back_after_the_broker_restarts(tmp_path: Path) -> None:
    secret = new_password()
    fleet = fleet_config(robots=ROBOTS, prefix="simc", secret=secret, partition=Partition())
    broker = Mosquitto(workdir=tmp_path / "mq")
    # Before it starts: a running broker rereads its files only when signalled, asynchronously.
    broker.identities.put(*identities(fleet))
    with broker:
        before = broker.proc
        args = argparse.Namespace(partitions=2, connects_in_flight=0, restart=True)
        run = _run_storm(root=ROOT, robots=ROBOTS, secret=secret, broker=broker, args=args)
        # Another broker process answered after the restart.
        assert broker.proc is not None and broker.proc is not before
        assert broker.proc.poll() is None
    assert run["links"] == ROBOTS
    assert run["broker_down_s"] > 0
    # Each partition saw every link of its own down, then all up again: it timed out otherwise.
    assert run["back_s"] > 0
