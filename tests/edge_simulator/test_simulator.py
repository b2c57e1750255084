"""The simulator against our Mosquitto: determinism, exact summaries, Last Will."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from edge_simulator import fleet
from edge_simulator.config import Partition, SensorRate, SimulationConfig
from edge_simulator.faults import FaultConfig
from edge_simulator.identities import logins
from edge_simulator.run import simulate
from edge_simulator.summary import Summary
from harness.services import ROOT, Mosquitto, free_port, run_here
from harness.waiting import eventually
from tests.conftest import StartBridge
from tests.edge_simulator.capture import Capture, Message, classify
from tests.edge_simulator.credentials import operator, provisioned

MIX = {
    "imu": SensorRate(100.0, 10),
    "gps": SensorRate(2.0, 1),
    "lidar": SensorRate(5.0, 1),
    "battery": SensorRate(1.0, 1),
}


def start_ts() -> int:
    """A fixed start a little in the past, so flat-out runs stay inside the bridge's window."""
    now = int(time.time() * 1000)
    return now - now % 60_000 - 120_000


def config(broker: Mosquitto, **overrides: object) -> SimulationConfig:
    base = SimulationConfig(
        robots=4,
        duration_s=4.0,
        start_ts_ms=start_ts(),
        seed=7,
        mix=MIX,
        flat_out=True,
        mqtt_port=broker.port,
    )
    return provisioned(replace(base, **overrides), broker)  # type: ignore[arg-type]


async def run_captured(cfg: SimulationConfig, broker: Mosquitto) -> tuple[Summary, list[Message]]:
    with Capture(port=broker.port, **operator(broker)) as capture:
        summary = await simulate(config=cfg)
        sent = summary.totals()["messages"]
        messages = await asyncio.to_thread(capture.wait_for, sent)
    return summary, messages


def as_multiset(messages: list[Message]) -> Counter[tuple[str, bytes]]:
    return Counter((m.topic, m.payload) for m in messages)


FAULTS = FaultConfig(
    duplicate=0.1,
    out_of_order=0.15,
    late=0.05,
    late_max_s=1.0,
    malformed=0.1,
    skew=0.3,
    skew_max_s=20.0,
    skew_out=0.3,
)


async def test_same_seed_publishes_the_same_readings(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, faults=FAULTS)
    first_summary, first = await run_captured(cfg, mosquitto)
    _, second = await run_captured(cfg, mosquitto)
    _, other_seed = await run_captured(replace(cfg, seed=8), mosquitto)
    assert len(first) == first_summary.totals()["messages"] > 100
    assert as_multiset(first) == as_multiset(second)
    assert as_multiset(first) != as_multiset(other_seed)


async def test_partitions_split_the_fleet_into_the_same_streams(mosquitto: Mosquitto) -> None:
    whole = config(mosquitto, robots=5, faults=FAULTS)
    _, all_at_once = await run_captured(whole, mosquitto)
    parts: list[Message] = []
    robots: list[str] = []
    for i in range(2):
        summary, messages = await run_captured(
            provisioned(
                replace(whole, partition=Partition(i, 2), robots_per_connection=2), mosquitto
            ),
            mosquitto,
        )
        parts.extend(messages)
        robots.extend(summary.robots)
    assert sorted(robots) == whole.fleet_ids()
    assert as_multiset(parts) == as_multiset(all_at_once)


async def test_summary_says_exactly_what_was_published(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, robots=6, seed=11, qos=1, faults=FAULTS)
    summary, messages = await run_captured(cfg, mosquitto)
    seen = classify(messages, fleet=summary.robots)
    totals = summary.totals()

    assert summary.unacknowledged == 0
    assert len(messages) == totals["messages"]
    for (robot_id, sensor_type), tally in summary.tallies.items():
        key = (robot_id, sensor_type)
        assert len(seen.identities.get(key, ())) == tally.valid_readings, key
        assert seen.instances[key] - tally.valid_readings == tally.duplicate_readings, key
    assert dict(seen.rejected) == totals["expected_dead_letters"]

    # Every fault really happened, so the equalities above are not vacuous.
    assert totals["duplicate_messages"] > 0
    assert set(totals["malformed"]) == {str(r) for r in FAULTS.malformed_reasons}
    assert set(totals["rejected_readings"]) <= {"ts_in_future", "ts_too_old"}
    assert sum(totals["rejected_readings"].values()) > 0
    reordered = [
        key
        for key, seqs in seen.seqs_in_arrival_order.items()
        if any(b < a for a, b in itertools.pairwise(seqs))
    ]
    assert reordered


async def test_qos0_summary_matches_what_arrived(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, qos=0, robots=3, seed=3)
    summary, messages = await run_captured(cfg, mosquitto)
    seen = classify(messages, fleet=summary.robots)
    assert sum(len(v) for v in seen.identities.values()) == summary.totals()["valid_readings"]


async def test_dropped_robot_is_marked_offline_by_its_last_will(mosquitto: Mosquitto) -> None:
    cfg = config(
        mosquitto,
        robots=2,
        duration_s=3.0,
        flat_out=False,
        start_ts_ms=int(time.time() * 1000),
        mix={"battery": SensorRate(10.0, 1)},
        faults=FaultConfig(drop=1.0, drop_down_s=1.0),
    )
    with Capture(port=mosquitto.port, **operator(mosquitto)) as capture:
        summary = await simulate(config=cfg)
        await asyncio.to_thread(capture.wait_for, summary.totals()["messages"])
        # online, then the broker's Last Will while away, online again, then the clean offline.
        for robot_id in summary.robots:
            assert capture.statuses(robot_id) == [b"online", b"offline", b"online", b"offline"]
    assert len(summary.drops) == 2
    # Readings due while a robot was away are sent when it is back, none lost.
    seen = classify(messages=capture.sensor_messages(), fleet=summary.robots)
    assert sum(len(v) for v in seen.identities.values()) == summary.totals()["valid_readings"]
    assert summary.totals()["valid_readings"] == 2 * 30


async def test_status_is_retained_for_late_subscribers(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, robots=1, duration_s=1.0, mix={"gps": SensorRate(5.0, 1)})
    summary = await simulate(config=cfg)
    with Capture(port=mosquitto.port, **operator(mosquitto)) as capture:
        await asyncio.sleep(0.3)
        assert capture.statuses(summary.robots[0]) == [b"offline"]
        assert capture.messages[0].retain


def test_cli_provisions_its_identities_and_writes_the_summary(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    path = tmp_path / "summary.json"
    secret = tmp_path / "fleet-secret"
    secret.write_text("a secret of this run\n")
    proc = run_here(
        [
            sys.executable,
            "-m",
            "edge_simulator",
            "--robots",
            "3",
            "--duration",
            "2",
            "--flat-out",
            "--seed",
            "5",
            "--rate",
            "imu=50",
            "--batch",
            "imu=25",
            "--malformed",
            "0.2",
            "--mqtt-url",
            mosquitto.url,
            "--mqtt-secret-file",
            str(secret),
            "--provision-mqtt",
            str(mosquitto.auth.directory),
            "--mosquitto-pid-file",
            str(mosquitto.auth.pid_file),
            "--summary",
            str(path),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["robots"] == ["sim-0000", "sim-0001", "sim-0002"]
    assert doc["totals"]["valid_readings_by_sensor_type"]["imu"] == 3 * 100
    assert doc["per_robot"]["sim-0001"]["imu"]["seq_last"] == 99
    assert "valid readings" in proc.stdout


def test_cli_refuses_a_start_the_bridge_would_refuse(mosquitto: Mosquitto) -> None:
    future = str(int(time.time() * 1000) + 3600_000)
    proc = run_here(
        [sys.executable, "-m", "edge_simulator", "--start-ts", future, "--mqtt-url", mosquitto.url]
    )
    assert proc.returncode == 2
    assert "ahead of now" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("robots", [1000])
async def test_one_process_drives_a_thousand_robots(mosquitto: Mosquitto, robots: int) -> None:
    cfg = config(
        mosquitto,
        robots=robots,
        duration_s=2.0,
        mix={"battery": SensorRate(1.0, 1), "gps": SensorRate(2.0, 1)},
    )
    summary, messages = await run_captured(cfg, mosquitto)
    assert len(summary.robots) == robots
    assert summary.unacknowledged == 0
    assert len(messages) == summary.totals()["messages"] == robots * (2 + 4)


class _Handshakes:
    """Counts the fleet's MQTT handshakes in flight: from the TCP connect to the CONNACK's
    callback. Made before the fleet, whose links bind the callback when they are made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.in_flight = self.peak = self.started = 0
        real_connect = paho.Client.connect
        real_on_connect = fleet.Link._on_connect

        def connect(client: paho.Client, *args: Any, **kwargs: Any) -> Any:
            # The fleet's links only, not the test's own clients (capture, provisioning).
            if isinstance(getattr(client.on_connect, "__self__", None), fleet.Link):
                self.in_flight += 1
                self.started += 1
                self.peak = max(self.peak, self.in_flight)
            return real_connect(client, *args, **kwargs)

        def on_connect(link: fleet.Link, *args: Any) -> None:
            self.in_flight -= 1
            real_on_connect(link, *args)

        monkeypatch.setattr(paho.Client, "connect", connect)
        monkeypatch.setattr(fleet.Link, "_on_connect", on_connect)


async def test_connects_keep_at_most_the_configured_number_in_flight(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect storm stays under the broker's listen backlog: the next connect starts as one
    ends, never more than `connects_in_flight` at once."""
    handshakes = _Handshakes(monkeypatch)
    cfg = config(mosquitto, robots=30, connects_in_flight=3, duration_s=1.0)
    summary, messages = await run_captured(cfg, mosquitto)
    assert (handshakes.started, handshakes.peak) == (30, 3)
    assert len(messages) == summary.totals()["messages"] > 0


async def test_reconnects_after_a_broker_restart_keep_the_same_limit(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted broker sees its whole fleet come back within a second: those reconnects
    share the fleet's limit too, or they overflow its listen backlog (BENCHMARKS.md, round 8)."""
    cfg = config(mosquitto, robots=30, connects_in_flight=3)
    handshakes = _Handshakes(monkeypatch)
    # Every link waits the same before reconnecting: all 30 come back at one moment.
    monkeypatch.setattr(random, "uniform", lambda low, high: (low + high) / 2)
    async with fleet.Fleet(
        groups=cfg.connection_groups(),
        brokers=cfg.brokers,
        qos=1,
        keepalive_s=60,
        client_prefix="restart",
        logins=logins(cfg),
        connects_in_flight=3,
    ) as robots:
        handshakes.started = handshakes.peak = 0
        first = mosquitto.proc
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.to_thread(mosquitto.start)
        assert mosquitto.proc is not first

        async def links_up() -> int:
            return sum(link.up for link in robots.links)

        await eventually(links_up, len(robots.links), timeout=60)
    assert handshakes.started >= 30
    assert handshakes.peak == 3


async def test_an_unreachable_broker_is_an_os_error(mosquitto: Mosquitto) -> None:
    # The CLI reports an OSError as "cannot reach the MQTT broker"; the concurrent connects
    # must raise it as such, not wrapped in an exception group.
    cfg = replace(config(mosquitto, robots=5), mqtt_port=free_port())
    with pytest.raises(ConnectionRefusedError):
        await simulate(config=cfg)


def _cli(mosquitto: Mosquitto, tmp_path: Path, *args: str) -> list[str]:
    """The simulator with its fleet's identities provisioned on the test broker."""
    secret = tmp_path / "fleet-secret"
    secret.write_text("a secret of this run\n")
    return [
        sys.executable,
        "-m",
        "edge_simulator",
        "--mqtt-url",
        mosquitto.url,
        "--mqtt-secret-file",
        str(secret),
        "--provision-mqtt",
        str(mosquitto.auth.directory),
        "--mosquitto-pid-file",
        str(mosquitto.auth.pid_file),
        *args,
    ]


def _one_second(mosquitto: Mosquitto, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """One robot for one second, to completion."""
    return run_here(_cli(mosquitto, tmp_path, "--robots", "1", "--duration", "1"))


def _log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_cli_warns_loudly_when_no_bridge_can_receive(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A broker with no bridge (the machine's own, say) takes every reading and stores none:
    the simulator says so when it starts and again when it ends."""
    proc = _one_second(mosquitto, tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [
        line
        for line in _log_lines(proc.stderr)
        if str(line["message"]).startswith("NO ROBOSENSE BRIDGE")
    ]
    assert len(warnings) == 2, proc.stderr
    assert warnings[0]["level"] == "WARNING"
    assert warnings[0]["address"] == f"127.0.0.1:{mosquitto.port}"


def test_cli_sees_a_connected_bridge_and_stays_quiet(
    mosquitto: Mosquitto, start_bridge: StartBridge, tmp_path: Path
) -> None:
    bridge = start_bridge("bridge-presence")
    proc = _one_second(mosquitto, tmp_path)
    assert proc.returncode == 0, proc.stderr
    messages = [str(line["message"]) for line in _log_lines(proc.stderr)]
    assert not [m for m in messages if "NO ROBOSENSE BRIDGE" in m], proc.stderr
    assert any(m.startswith("bridges connected") and "bridge-presence" in m for m in messages)
    # A bridge that stopped cleanly is no longer counted.
    assert bridge.terminate() == 0
    again = _one_second(mosquitto, tmp_path)
    assert "NO ROBOSENSE BRIDGE" in again.stderr


def test_cli_until_stopped_runs_until_sigterm_then_writes_the_summary(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    path = tmp_path / "summary.json"
    proc = subprocess.Popen(
        _cli(mosquitto, tmp_path, "--robots", "2", "--duration", "0", "--summary", str(path)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with Capture(port=mosquitto.port, **operator(mosquitto)) as capture:
            deadline = time.monotonic() + 30
            while not capture.statuses("sim-0001") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert capture.statuses("sim-0001") == [b"online"]
            time.sleep(2)
            assert proc.poll() is None, "a run until stopped ended by itself"
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            deadline = time.monotonic() + 10
            while capture.statuses("sim-0001")[-1:] != [b"offline"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert capture.statuses("sim-0000")[-1] == b"offline"
            assert capture.statuses("sim-0001")[-1] == b"offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(path.read_text())
    assert doc["interrupted"] is True
    assert doc["totals"]["valid_readings"] > 0
