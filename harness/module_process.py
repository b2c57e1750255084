"""A service of ours as a real process (`python -m <module>`), for tests and benchmarks: started
with its settings in the environment, ready once its log says `"<module> ready"`, stopped with
SIGTERM (or killed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from harness.services import ROOT
from harness.spawn import spawn_logged


class ModuleProcess:
    module: ClassVar[str]  # what `python -m` runs; its log line `"<module> ready"` marks it up

    def __init__(
        self,
        *,
        database_url: str,
        redis_prefix: str,
        mqtt_url: str,
        log_path: Path,
        **settings: str,
    ) -> None:
        """`settings`: environment variables by lower-case name, over everything else."""
        # The checkout whose service runs: benchmarks point it at an older commit's worktree.
        self.root = ROOT
        self.log_path = log_path
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_PREFIX": redis_prefix,
            "MQTT_URL": mqtt_url,
            "LOG_LEVEL": "INFO",
            **self.own_env(),
            **{k.upper(): v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def own_env(self) -> dict[str, str]:
        """The subclass's own variables (under the caller's settings)."""
        return {}

    def start(self, *, timeout: float = 30.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        ready = f'"{self.module} ready"'.encode()
        self.proc = spawn_logged(
            [sys.executable, "-m", self.module], self.log_path, cwd=self.root, env=self.env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if ready in f.read():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.module} not ready after {timeout}s: {self.log_tail()}")

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

    def stop(self) -> None:
        if self.running:
            self.terminate()
