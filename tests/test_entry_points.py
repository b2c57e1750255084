"""Every entry point as a user starts it: `--help` explains and exits, and a missing service
is named in one JSON log line (service, address, cause; never a password)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.services import ROOT, free_port, run_here
from tests.conftest import HARNESS

ENTRY_POINTS = [
    "api",
    "bridge",
    "live",
    "loadtest.live",
    "db",
    "edge_simulator",
    "loadtest.ingest",
    "loadtest.rest",
    "loadtest.fleet_scale",
    "loadtest.fleet_reads",
    "loadtest.null_subscriber",
    "loadtest.wire_publisher",
    "loadtest.nesting_check",
    "loadtest.probe_server",
    "loadtest.route_cost",
    "harness.architecture",
    "mqtt_auth",
]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_explains_and_starts_nothing(module: str, tmp_path: Path) -> None:
    # A port that nothing listens on: were the entry point to start, it would fail or hang,
    # not print usage and exit 0 at once.
    dead = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@{dead}/x",
        "REDIS_URL": f"redis://{dead}/0",
        "MQTT_URL": f"mqtt://{dead}",
        "API_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("usage: "), done.stdout.decode()
    assert done.stderr == b""


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


class Started:
    """A process whose stderr is read as JSON lines until a line matches."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    def wait_for_line(self, message: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in _json_lines(self.log.read_text()):
                if line.get("message") == message:
                    return line
            time.sleep(0.1)
        raise TimeoutError(f"no {message!r} after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _bridge_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    return {
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": f"rs-ep-{tmp_path.name}:",
        "BRIDGE_CLIENT_ID": f"ep-{tmp_path.name}",
        "METRICS_PORT": str(free_port()),
        **overrides,
    }


def test_bridge_names_a_database_it_cannot_reach_and_keeps_trying(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://robosense:s3cret-pw@127.0.0.1:{port}/robosense"
    bridge = Started("bridge", _bridge_env(tmp_path, DATABASE_URL=url), tmp_path / "b.log")
    try:
        line = bridge.wait_for_line("waiting for PostgreSQL")
        assert line["service"] == "postgresql"
        assert line["address"] == f"127.0.0.1:{port}"
        assert "refused" in line["error"].lower()
        time.sleep(2)
        assert bridge.proc.poll() is None, "the bridge gave up instead of retrying"
        assert len([x for x in _json_lines(bridge.log.read_text()) if "address" in x]) >= 2
    finally:
        bridge.stop()
    assert "s3cret-pw" not in bridge.log.read_text()


def test_bridge_names_redis_it_cannot_reach_and_keeps_trying(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    env = _bridge_env(
        tmp_path,
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://:r3dis-pw@127.0.0.1:{port}/0",
        MQTT_URL=f"mqtt://127.0.0.1:{free_port()}",
    )
    bridge = Started("bridge", env, tmp_path / "b.log")
    try:
        line = bridge.wait_for_line("waiting for Redis")
        assert line["service"] == "redis"
        assert line["address"] == f"127.0.0.1:{port}"
        assert "refused" in line["error"].lower()
        assert bridge.proc.poll() is None
    finally:
        bridge.stop()
    text = bridge.log.read_text()
    assert "r3dis-pw" not in text and "Traceback" not in text


def test_bridge_names_the_broker_it_cannot_reach_at_once(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    env = _bridge_env(
        tmp_path, DATABASE_URL=database_url, MQTT_URL=f"mqtt://bridge:m9tt-pw@127.0.0.1:{port}"
    )
    bridge = Started("bridge", env, tmp_path / "b.log")
    try:
        # Well before the 30 s "not subscribed" warning.
        line = bridge.wait_for_line("cannot reach the MQTT broker; retrying", timeout=20)
        assert line["service"] == "mqtt"
        assert line["address"] == f"127.0.0.1:{port}"
        assert "refused" in line["error"].lower()
        assert bridge.proc.poll() is None
    finally:
        bridge.stop()
    assert "m9tt-pw" not in bridge.log.read_text()


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("api", [], "cannot start: PostgreSQL unreachable"),
        ("db", ["migrate"], "cannot migrate: PostgreSQL unreachable or refused"),
    ],
)
def test_a_process_that_cannot_start_says_why_in_one_line(
    module: str, args: list[str], message: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://robosense:s3cret-pw@127.0.0.1:{port}/robosense",
        "REDIS_URL": HARNESS.redis_url,
        "API_PORT": str(free_port()),
    }
    done = run_here([sys.executable, "-m", module, *args], env=env)
    assert done.returncode == 1
    stderr = done.stderr
    lines = _json_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0]["message"] == message
    assert lines[0]["address"] == f"127.0.0.1:{port}"
    assert "refused" in lines[0]["error"].lower()
    assert "s3cret-pw" not in stderr
