"""The harness's ports and service processes: a port handed out is free, outside the kernel's
ephemeral range and never handed out twice; a server that exits before it listens is reported
at once, with its log."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from harness.services import ServiceProcess, _ephemeral_low, free_port


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= p < _ephemeral_low() for p in ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


class _ExitsAtOnce(ServiceProcess):
    log_name = "exits.log"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('cannot bind'); sys.exit(3)"]


def test_a_server_that_exits_before_listening_is_reported_at_once(tmp_path: Path) -> None:
    service = _ExitsAtOnce(workdir=tmp_path)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited \(3\) before listening.*cannot bind"):
        service.start()
    assert time.monotonic() - started < 5  # not the 10 s a wait for the port would take


class _NeverListens(ServiceProcess):
    log_name = "silent.log"
    start_timeout_s = 0.5

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_server_that_never_listens_times_out_and_is_stopped(tmp_path: Path) -> None:
    service = _NeverListens(workdir=tmp_path)
    with pytest.raises(TimeoutError, match="nothing listens"), service:
        pass
    assert service.proc is None
