"""Real services for tests: a private Mosquitto with our mosquitto.conf, a private database.

Tests never share state with each other's runs: each session gets its own database, its own
Redis key prefix and its own broker on a free port, so several test runs can share a machine.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.lifecycle import Lifecycle
from harness.spawn import spawn_logged
from mqtt_auth.identities import ALL_ROBOTS, Identity, Role
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.probe import wait_accepted
from mqtt_auth.store import AuthFiles, IdentityStore, share_group

ROOT = Path(__file__).resolve().parents[1]


# The lowest port free_port hands out; below it sit the well-known and registered services.
_LOWEST_PORT = 10_000
_handed_out: set[int] = set()
_ports = random.Random()  # its own: a test that seeds `random` must not make ports repeat


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports (the source ports of outgoing connections) begin."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def run_here(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Runs `command` to completion from the checkout's root, its output captured as text.
    Raises only on timeout: the caller asserts the exit status it expects."""
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test or benchmark starts, and
    never the same twice in a process.

    Taken below the kernel's ephemeral range: a port the kernel gives a `bind(0)` comes from
    the range that outgoing connections take their source ports from, so between the check and
    the server's own bind an outgoing connection (or a second call here) could take it, and the
    server failed to start (a NATS node's monitoring port did, in CI)."""
    high = _ephemeral_low()
    if high - _LOWEST_PORT < 1000:  # an unusual range: leave the choice to the kernel
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port
    for _ in range(1000):
        port = _ports.randrange(_LOWEST_PORT, high)
        if port in _handed_out:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOWEST_PORT}-{high - 1}")


def wait_for_port(
    port: int, *, timeout: float = 10.0, gone: Callable[[], str | None] | None = None
) -> None:
    """Until something accepts connections on `port`; TimeoutError after `timeout`. `gone`,
    asked each turn, says why waiting is pointless (the server exited): a RuntimeError with
    that text then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if gone is not None and (reason := gone()) is not None:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.05)


TLS_MARK = "#TLS# "


def render_mosquitto_conf(
    *,
    port: int,
    data_dir: Path,
    auth: AuthFiles,
    tls: tuple[int, Path] | None = None,
    source: Path = ROOT / "mosquitto.conf",
) -> str:
    """Our mosquitto.conf with only the listener, the persistence location and the identity
    files replaced, and a pid file added (to signal the broker after an identity change).
    `tls` (port, certificate directory) switches on the config's TLS listener."""
    # The plain listener (the first); the TLS one is commented out unless `tls` asks for it.
    text = re.sub(
        r"^listener \d+$", f"listener {port} 127.0.0.1", source.read_text(), count=1, flags=re.M
    )
    if tls is not None:
        tls_port, certs = tls
        text = text.replace(f"{TLS_MARK}listener 8883", f"listener {tls_port} 127.0.0.1")
        text = text.replace(TLS_MARK, "").replace("/mosquitto/config/certs", str(certs))
    replacements = {
        "persistence_location ": f"persistence_location {data_dir}/",
        "password_file ": f"password_file {auth.password_file}",
        "acl_file ": f"acl_file {auth.acl_file}",
    }
    lines = [
        next((new for old, new in replacements.items() if line.startswith(old)), line)
        for line in text.splitlines()
    ]
    if os.geteuid() == 0:
        # As root, Mosquitto drops to the `mosquitto` user, who cannot write our data dir.
        lines.append("user root")
    if auth.pid_file is not None:
        lines.append(f"pid_file {auth.pid_file}")
    return "\n".join(lines) + "\n"


class ServiceProcess(Lifecycle):
    """A server process on a port of its own that a test can stop, kill and start again."""

    log_name = "service.log"
    start_timeout_s = 10.0

    def __init__(self, *, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = spawn_logged(self.command(), self.workdir / self.log_name)
        self.wait_listening(self.port, timeout=self.start_timeout_s)

    def wait_listening(self, port: int, *, timeout: float) -> None:
        """wait_for_port, raising at once (with the end of its log) when the process has
        exited."""
        wait_for_port(port, timeout=timeout, gone=lambda: self._exited(port))

    def _exited(self, port: int) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = (self.workdir / self.log_name).read_text(errors="replace")[-600:]
        status = f"{self.command()[0]} exited ({self.proc.returncode})"
        return f"{status} before listening on {port}: {tail}"

    def stop(self) -> None:
        """A clean stop (SIGTERM): Mosquitto writes its persistence file."""
        self._end(kill=False)

    def kill(self) -> int | None:
        """kill -9; returns once the process is gone, with its exit status (-9: the signal
        ended it, which a test of a crash asserts) or None when it was not running."""
        return self._end(kill=True)

    def _end(self, *, kill: bool) -> int | None:
        code = None
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            code = self.proc.wait(timeout=10)
        self.proc = None
        return code


# Identities every test broker has. The publisher is a gateway for every robot, because tests
# also publish what the bridge must refuse (bad topics, unknown robots); the operator reads.
TEST_PUBLISHER = "test-publisher"
TEST_OPERATOR = "test-operator"


class Mosquitto(ServiceProcess):
    """A broker with our config, its identity files, and the passwords of the identities."""

    log_name = "mosquitto.log"

    def __init__(
        self, *, workdir: Path, port: int | None = None, tls: tuple[int, Path] | None = None
    ) -> None:
        super().__init__(workdir=workdir, port=port)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.auth = AuthFiles(workdir / "auth", pid_file=workdir / "mosquitto.pid")
        self.identities = IdentityStore(self.auth)
        self.passwords: dict[str, str] = {}
        self.share_group = share_group(self.auth)
        self.add(Identity.gateway(TEST_PUBLISHER, None, [ALL_ROBOTS]))
        self.add(Identity(TEST_OPERATOR, Role.OPERATOR, None))
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            render_mosquitto_conf(port=self.port, data_dir=self.data_dir, auth=self.auth, tls=tls)
        )

    def add(self, identity: Identity, *, timeout: float = 10.0) -> str:
        """Gives `identity` a new password and returns it; once the broker runs, returns only
        when the broker accepts it (it reloads its files on SIGHUP, asynchronously)."""
        password = new_password()
        self.identities.put(
            Identity(identity.username, identity.role, hash_password(password), identity.robots)
        )
        self.passwords[identity.username] = password
        if self.proc is not None:
            wait_accepted("127.0.0.1", self.port, identity.username, password, timeout=timeout)
        return password

    def add_robot(self, robot_id: str) -> str:
        return self.add(Identity.robot(robot_id, None))

    def url_for(self, username: str) -> str:
        return f"mqtt://{username}:{self.passwords[username]}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """No credentials: what an outsider would try."""
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)]


class RedisServer(ServiceProcess):
    """A private, memory-only Redis, for tests that restart it (the machine's is shared)."""

    log_name = "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]


class RedisClusterNode(RedisServer):
    """One memory-only node of a Redis Cluster, its bus on a port of its own (Redis 7's
    `cluster-port`), so both ports are free ones rather than the port + 10000 convention."""

    log_name = "redis-node.log"

    def __init__(self, *, workdir: Path) -> None:
        super().__init__(workdir=workdir)
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.workdir / "nodes.conf"),
            "--cluster-port",
            str(self.bus_port),
            "--cluster-node-timeout",
            "5000",
        ]


class RedisCluster(Lifecycle):
    """A Redis Cluster of `masters` masters and no replicas on free loopback ports, made with
    `redis-cli --cluster create` (which slices the slot range evenly among the masters)."""

    def __init__(self, *, workdir: Path, masters: int = 3) -> None:
        self.nodes = [RedisClusterNode(workdir=workdir / f"node{i}") for i in range(masters)]

    @property
    def url(self) -> str:
        """Any node: the client learns the others from it."""
        return self.nodes[0].url

    def start(self, *, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        # `create` returns once the slots are assigned; every node must also agree the cluster
        # is whole before a client that asks any of them is sent the right way.
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while True:
                out = subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"],
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                ).stdout
                if "cluster_state:ok" in out:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Redis Cluster not ok after {timeout}s: {out}")
                time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
