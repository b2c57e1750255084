"""Real services for tests: a private Mosquitto with our mosquitto.conf, a private database.

Tests never share state with each other's runs: each session gets its own database, its own
Redis key prefix and its own broker on a free port, so several test runs can share a machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def render_mosquitto_conf(
    *, port: int, data_dir: Path, source: Path = ROOT / "mosquitto.conf"
) -> str:
    """Our mosquitto.conf with only the listener and the persistence location replaced."""
    replacements = {
        "listener ": f"listener {port} 127.0.0.1",
        "persistence_location ": f"persistence_location {data_dir}/",
    }
    lines = [
        next((new for old, new in replacements.items() if line.startswith(old)), line)
        for line in source.read_text().splitlines()
    ]
    if os.geteuid() == 0:
        # As root, Mosquitto drops to the `mosquitto` user, who cannot write our data dir.
        lines.append("user root")
    return "\n".join(lines) + "\n"


class ServiceProcess:
    """A server process on a port of its own that a test can stop, kill and start again."""

    log_name = "service.log"

    def __init__(self, *, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.workdir / self.log_name).open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        """A clean stop (SIGTERM): Mosquitto writes its persistence file."""
        self._end(kill=False)

    def kill(self) -> None:
        self._end(kill=True)

    def _end(self, *, kill: bool) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Mosquitto(ServiceProcess):
    """A broker with our config."""

    log_name = "mosquitto.log"

    def __init__(self, *, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir=workdir, port=port)
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(render_mosquitto_conf(port=self.port, data_dir=self.data_dir))

    @property
    def url(self) -> str:
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
