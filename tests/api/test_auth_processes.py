"""API keys across processes: `python -m api keys` on the database, and revocation reaching
every worker of a real `python -m api` (API_WORKERS=2) within a second."""

from __future__ import annotations

import http.client
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.keys import generate_key, key_hash
from harness.services import ROOT, Mosquitto, free_port, run_here, wait_for_port
from tests.conftest import HARNESS

pytestmark = pytest.mark.slow


def keys_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_here(
        [sys.executable, "-m", "api", "keys", *args],
        env={**os.environ, "DATABASE_URL": database_url},
    )


class Api:
    def __init__(self, url: str, port: int, pid: int, admin: str) -> None:
        self.url, self.port, self.pid, self.admin = url, port, pid, admin


@pytest.fixture
def api_process(database_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Api]:
    """`python -m api` with two workers and a bootstrap admin key."""
    port = free_port()
    admin = generate_key().token
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": f"{redis_prefix}workers:",
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "API_BOOTSTRAP_ADMIN_KEY": admin,
    }
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, timeout=30)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "API not ready"
            time.sleep(0.1)
        yield Api(url, port, proc.pid, admin)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _socket_owner(workers: list[int], api_port: int, client_port: int) -> int:
    """The worker process holding the server side of the (accepted) connection from
    `client_port`: the connection's socket inode in /proc/net/tcp, found among its fds."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.rsplit(":", 1)[1], 16) == api_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                inode = fields[9]
    assert inode is not None, f"no server socket for client port {client_port}"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker holds socket {inode}")


def _listening_sockets(port: int) -> int:
    """How many sockets listen on `port` (state 0A in /proc/net/tcp)."""
    return sum(
        1
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for line in Path(table).read_text().splitlines()[1:]
        if int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == "0A"
    )


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _get(conn: http.client.HTTPConnection, path: str, key: str) -> int:
    conn.request("GET", path, headers={"X-API-Key": key})
    response = conn.getresponse()
    response.read()
    return response.status


def test_revocation_reaches_every_worker_within_a_second(api_process: Api) -> None:
    created = httpx.post(
        f"{api_process.url}/api/keys",
        json={"name": "short-lived", "scopes": ["read"]},
        headers={"X-API-Key": api_process.admin},
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]

    # Keep-alive connections, each served by one worker for its lifetime; open them until
    # both workers hold some (the kernel hands each accept to either process).
    workers = _children(api_process.pid)
    by_worker: dict[int, list[http.client.HTTPConnection]] = {}
    for _ in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", api_process.port, timeout=10)
        # Each worker verifies the key once: it is now in that worker's cache. (A connection
        # has a socket in a worker only once accepted, so ask first, then look.)
        assert _get(conn, "/api/stats", key) == 200
        assert conn.sock is not None
        owner = _socket_owner(workers, api_process.port, conn.sock.getsockname()[1])
        by_worker.setdefault(owner, []).append(conn)
        if len(by_worker) == 2 and all(len(c) >= 2 for c in by_worker.values()):
            break
    assert len(by_worker) == 2, f"every connection went to one worker: {list(by_worker)}"
    revoker = next(iter(by_worker.values()))[0]
    # Fresh cache entries in both workers just before the revocation.
    for conns in by_worker.values():
        assert _get(conns[1], "/api/stats", key) == 200

    # Revoke through one worker; poll through both until each refuses the key.
    revoker.request("DELETE", f"/api/keys/{key_id}", headers={"X-API-Key": api_process.admin})
    answer = revoker.getresponse()
    answer.read()
    assert answer.status == 204
    revoked_at = time.monotonic()
    refused_after: dict[int, float] = {}
    while len(refused_after) < 2 and time.monotonic() - revoked_at < 5:
        for pid, conns in by_worker.items():
            if pid not in refused_after and _get(conns[1], "/api/stats", key) == 401:
                refused_after[pid] = time.monotonic() - revoked_at
        time.sleep(0.01)
    assert len(refused_after) == 2, f"still accepted 5 s after revocation: {refused_after}"
    assert max(refused_after.values()) < 1.0, refused_after
    print(f"seconds from revocation to refusal, by worker: {refused_after}")
    # Once refused, refused for good, on every connection of both workers.
    for conns in by_worker.values():
        for conn in conns:
            assert _get(conn, "/api/stats", key) == 401
            conn.close()


def test_keys_cli_create_list_revoke(database_url: str, api_process: Api) -> None:
    made = keys_cli(database_url, "create", "--scope", "read", "--scope", "ingest", "--name", "cli")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("rsk_") and "shown this once" in made.stderr
    key_id = key.split("_")[1]
    headers = {"X-API-Key": key}
    assert httpx.get(f"{api_process.url}/api/robots", headers=headers).status_code == 200
    assert httpx.post(f"{api_process.url}/api/robots", headers=headers, json={}).status_code == 403

    listed = keys_cli(database_url, "list")
    assert listed.returncode == 0
    (line,) = [row for row in listed.stdout.splitlines() if row.startswith(key_id)]
    assert "ingest,read" in line and "cli" in line and key not in listed.stdout

    revoked = keys_cli(database_url, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in keys_cli(database_url, "list").stdout.split(key_id)[1].splitlines()[0]
    deadline = time.monotonic() + 1.0  # the workers' caches expire within a second
    while httpx.get(f"{api_process.url}/api/robots", headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "a key revoked in the database is still accepted"
        time.sleep(0.05)
    assert keys_cli(database_url, "revoke", "abcdefabcdef").returncode == 1


def test_keys_cli_output_file_and_reuse(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "keys" / "admin.key"
    first = keys_cli(database_url, "create", "--scope", "admin", "--output", str(path), "--reuse")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # the key is in the file only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert key.startswith("rsk_") and str(path) in first.stderr

    again = keys_cli(database_url, "create", "--scope", "admin", "--output", str(path), "--reuse")
    assert again.returncode == 0 and "kept" in again.stderr
    assert path.read_text().strip() == key

    assert keys_cli(database_url, "revoke", key.split("_")[1]).returncode == 0
    renewed = keys_cli(database_url, "create", "--scope", "admin", "--output", str(path), "--reuse")
    assert renewed.returncode == 0 and path.read_text().strip() != key


def test_keys_cli_generate_is_a_valid_bootstrap_key() -> None:
    done = run_here([sys.executable, "-m", "api", "keys", "generate"])
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    assert key_hash(out)[0] == out.split("_")[1]


def test_simulator_registers_robots_with_a_registry_key(
    api_process: Api, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    made = httpx.post(
        f"{api_process.url}/api/keys",
        json={"name": "simulator", "scopes": ["registry"]},
        headers={"X-API-Key": api_process.admin},
    )
    key_file = tmp_path / "simulator.key"
    key_file.write_text(made.json()["key"] + "\n")
    # The broker wants MQTT identities too: the simulator provisions its own (docs/simulator.md).
    secret = tmp_path / "fleet-secret"
    secret.write_text("a secret of this run\n")
    mqtt_auth = (
        *("--mqtt-secret-file", str(secret), "--provision-mqtt", str(mosquitto.auth.directory)),
        *("--mosquitto-pid-file", str(mosquitto.auth.pid_file)),
    )

    def simulate(*auth: str) -> subprocess.CompletedProcess[str]:
        return run_here(
            [
                *(sys.executable, "-m", "edge_simulator", "--robots", "2", "--duration", "0.5"),
                *("--flat-out", "--robot-prefix", "keysim", "--mqtt-url", mosquitto.url),
                *mqtt_auth,
                *("--api-url", api_process.url, *auth),
            ],
            env={k: v for k, v in os.environ.items() if k != "ROBOSENSE_API_KEY"},
            timeout=120,
        )

    refused = simulate()
    assert refused.returncode != 0 and "HTTP 401" in refused.stderr, refused.stderr[-2000:]
    done = simulate("--api-key-file", str(key_file))
    assert done.returncode == 0, done.stderr[-2000:]
    robots = httpx.get(
        f"{api_process.url}/api/robots", headers={"X-API-Key": api_process.admin}
    ).json()["items"]
    assert {"keysim-0000", "keysim-0001"} <= {r["id"] for r in robots}


def test_connections_opened_at_once_spread_over_both_workers(api_process: Api) -> None:
    """Each worker listens on its own SO_REUSEPORT socket (api/workers.py). With one shared
    socket, 32 connections opened together all landed on the worker that woke first."""
    workers = _children(api_process.pid)
    deadline = time.monotonic() + 60  # the second worker may still be starting
    while _listening_sockets(api_process.port) < 2:
        assert time.monotonic() < deadline, "the two workers do not both listen"
        time.sleep(0.1)
    conns = [
        http.client.HTTPConnection("127.0.0.1", api_process.port, timeout=10) for _ in range(32)
    ]
    for conn in conns:
        conn.connect()  # all 32 queued for accepting before any request is sent
    owners: dict[int, int] = {}
    for conn in conns:
        assert _get(conn, "/api/stats", api_process.admin) == 200
        assert conn.sock is not None
        owner = _socket_owner(workers, api_process.port, conn.sock.getsockname()[1])
        owners[owner] = owners.get(owner, 0) + 1
    for conn in conns:
        conn.close()
    # By a hash of the addresses: fewer than 4 of 32 on one side has odds of ~1e-5.
    assert len(owners) == 2 and min(owners.values()) >= 4, owners
