"""scripts/run as a user runs it: it serves until Ctrl-C (also when piped into tee), then stops
everything it started and keeps the simulator's summary; it replaces what an earlier run left
behind; a start that fails says so and exits 1 without the banner."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from harness.services import ROOT, free_port, run_here
from tests.conftest import HARNESS

pytestmark = pytest.mark.slow

READY = "run: ready:"


def _env(tmp_path: Path, database_url: str, redis_prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RUN_DIR": str(tmp_path / "run"),
        "DATABASE_URL": database_url,
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": redis_prefix,
        "MQTT_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "METRICS_PORT": str(free_port()),
        "SIM_ROBOTS": "2",
        **extra,
    }


def _start(env: dict[str, str], log: Path, *, tee: bool) -> subprocess.Popen[bytes]:
    """scripts/run in a session of its own, as a terminal would run it (Ctrl-C goes to the
    whole foreground group: the script and, piped, tee)."""
    command = f"scripts/run 2>&1 | tee {log}" if tee else f"exec scripts/run > {log} 2>&1"
    # A shell's background job (`pytest ... &` without job control, as a CI runner may start
    # the tests) has SIGINT ignored, inherited through exec, and bash cannot trap a signal
    # ignored at its start: the Ctrl-C tests would see a script deaf to Ctrl-C. A terminal
    # starts its jobs with the default action: with a handler of ours installed here, the
    # child's exec resets SIGINT to it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _wait(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} after {timeout}s")


def _wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"scripts/run exited {proc.returncode}: {log.read_text()}")
        return log.exists() and READY in log.read_text()

    _wait(f"no banner: {log.read_text() if log.exists() else ''}", ready)


def _pids(run_dir: Path) -> dict[str, int]:
    return {f.name: int(f.read_text().split()[0]) for f in (run_dir / "pids").iterdir()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _statuses(prefix: str) -> dict[str, str]:
    client = redis.Redis.from_url(HARNESS.redis_url, decode_responses=True)
    try:
        raw: dict[str, str] = client.hgetall(f"{prefix}status")  # type: ignore[assignment]
    finally:
        client.close()
    # `*online` counts the online ones (ingest/counters.py): not a robot.
    return {k: json.loads(v)["status"] for k, v in raw.items() if not k.startswith("*")}


# What is not a log line of ours: the script's own progress, Mosquitto's log (its format),
# and the simulator's summary on stdout.
_NOT_LOGS = re.compile(r"^(run: |setup: |\d+: |robots |messages |duplicates |malformed |rate: )")


def _assert_logs_are_json_lines(text: str) -> None:
    for line in text.splitlines():
        if line.strip() and not _NOT_LOGS.match(line):
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON log line: {line!r}")


def _stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)


def _assert_fleet_page_link(log: str) -> None:
    """The banner's fleet page link opens the page, and its key reads but can do no more."""
    link = re.search(r"run: fleet page: (http://\S+)/#key=(\S+)", log)
    assert link, log
    base, key = link.groups()
    with urllib.request.urlopen(f"{base}/", timeout=10) as page:
        assert b"/static/fleet.js" in page.read()
    robots = urllib.request.Request(f"{base}/api/robots", headers={"X-API-Key": key})
    with urllib.request.urlopen(robots, timeout=10) as response:
        assert response.status == 200
    keys = urllib.request.Request(f"{base}/api/keys", headers={"X-API-Key": key})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(keys, timeout=10)
    assert refused.value.code == 403


def test_ctrl_c_through_tee_stops_everything_and_keeps_the_summary(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    prefix = f"{redis_prefix}run-a:"
    env = _env(tmp_path, database_url, prefix)  # the simulator runs until stopped
    log = tmp_path / "run.log"
    proc = _start(env, log, tee=True)
    try:
        _wait_ready(log, proc)
        pids = _pids(tmp_path / "run")
        assert set(pids) == {"mosquitto", "bridge-1", "live", "api", "simulator"}
        _wait(
            "robots online",
            lambda: _statuses(prefix) == {"sim-0000": "online", "sim-0001": "online"},
        )
        _assert_fleet_page_link(log.read_text())
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: script and tee
        assert proc.wait(timeout=90) != 0
    finally:
        _stop_group(proc)
    _wait("processes gone", lambda: not any(_alive(pid) for pid in pids.values()), timeout=30)
    for port in (env["MQTT_PORT"], env["API_PORT"], env["METRICS_PORT"]):
        assert not _listening(int(port)), f"port {port} still held"
    assert list((tmp_path / "run" / "pids").iterdir()) == []
    summary = json.loads((tmp_path / "run" / "simulator-summary.json").read_text())
    assert summary["interrupted"] is True and summary["totals"]["valid_readings"] > 0
    assert _statuses(prefix) == {"sim-0000": "offline", "sim-0001": "offline"}


def test_serves_after_the_simulator_ends_and_replaces_a_killed_runs_processes(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    env = _env(tmp_path, database_url, f"{redis_prefix}run-b:", SIM_DURATION="2")
    summary = tmp_path / "run" / "simulator-summary.json"
    first = _start(env, tmp_path / "first.log", tee=False)
    try:
        _wait_ready(tmp_path / "first.log", first)
        _wait("simulator summary", summary.exists)
        time.sleep(1)
        assert first.poll() is None, "the pipeline stopped with the simulator"
        with urllib.request.urlopen(f"http://127.0.0.1:{env['API_PORT']}/readyz") as r:
            assert r.status == 200
        _assert_logs_are_json_lines((tmp_path / "first.log").read_text())
        stale = _pids(tmp_path / "run")
        # The script dies without stopping anything (kill -9): its processes stay.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert _alive(stale["mosquitto"]) and _listening(int(env["MQTT_PORT"]))

        second = _start(env, tmp_path / "second.log", tee=False)
        try:
            _wait_ready(tmp_path / "second.log", second)
            text = (tmp_path / "second.log").read_text()
            assert "left by an earlier run" in text
            assert not any(_alive(pid) for pid in stale.values())
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=90)
        finally:
            _stop_group(second)
    finally:
        for pid in _pids(tmp_path / "run").values():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        _stop_group(first)


def test_a_taken_port_fails_the_start_without_the_banner(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    env = _env(tmp_path, database_url, f"{redis_prefix}run-c:")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["API_PORT"])))
        taken.listen()
        done = run_here(["scripts/run"], env=env, timeout=120)
    assert done.returncode == 1
    assert f"FAILED to start: port {env['API_PORT']} is taken" in done.stderr
    assert READY not in done.stderr + done.stdout


def test_a_failing_step_stops_what_started_and_exits_1(tmp_path: Path, redis_prefix: str) -> None:
    dead = free_port()
    env = _env(tmp_path, f"postgresql://postgres@127.0.0.1:{dead}/x", f"{redis_prefix}run-d:")
    done = run_here(["scripts/run"], env=env, timeout=120)
    assert done.returncode == 1
    assert "FAILED to start: database migration" in done.stderr
    assert READY not in done.stderr + done.stdout
    assert not _listening(int(env["MQTT_PORT"])), "the broker outlived the failed start"
    assert list((tmp_path / "run" / "pids").iterdir()) == []
