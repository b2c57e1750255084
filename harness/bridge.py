"""The bridge as a real process (`python -m bridge`), for tests that crash and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.metrics import metric_total, samples
from harness.services import ROOT, free_port


class BridgeProcess:
    def __init__(
        self,
        *,
        database_url: str,
        redis_prefix: str,
        mqtt_url: str,
        log_path: Path,
        client_id: str = "test-bridge",
        **settings: str,
    ) -> None:
        """`settings`: environment variables, by lower-case name; the metrics port is a free
        one unless `metrics_port` is among them (a benchmark held to a port range)."""
        # The checkout whose bridge runs: benchmarks point it at an older commit's worktree.
        self.root = ROOT
        self.log_path = log_path
        self.metrics_port = int(settings.pop("metrics_port", 0)) or free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_PREFIX": redis_prefix,
            "MQTT_URL": mqtt_url,
            "BRIDGE_CLIENT_ID": client_id,
            "METRICS_PORT": str(self.metrics_port),
            "LOG_LEVEL": "INFO",
            **{k.upper(): v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge"], cwd=self.root, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.log_tail()}")
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if b'"bridge ready"' in f.read():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"bridge not ready after {timeout}s: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, *, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill(self) -> int:
        """kill -9; returns once the process is gone, with its exit status (-9: the signal
        ended it)."""
        assert self.proc is not None
        self.proc.kill()
        code = self.proc.wait(timeout=10)
        self.proc = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metric(self, name: str) -> float:
        """The first series of `name`; KeyError when it has none yet."""
        found = samples(self.metrics_port, name)
        if not found:
            raise KeyError(name)
        return found[0]

    def metric_total(self, name: str) -> float:
        """The sum of every series of a metric (all label values); 0 when it has none yet."""
        return metric_total(self.metrics_port, name)

    def stop(self) -> None:
        if self.running:
            self.terminate()
