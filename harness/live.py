"""The live service as a real process (`python -m live`), for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.services import ROOT


class LiveProcess:
    def __init__(
        self,
        *,
        database_url: str,
        redis_prefix: str,
        mqtt_url: str,
        log_path: Path,
        **settings: str,
    ) -> None:
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_PREFIX": redis_prefix,
            "MQTT_URL": mqtt_url,
            "LOG_LEVEL": "INFO",
            **{k.upper(): v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 30.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "live"], cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"live exited with {self.proc.returncode}: {self.log_tail()}")
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if b'"live ready"' in f.read():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"live not ready after {timeout}s: {self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, *, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.running:
            self.terminate()
