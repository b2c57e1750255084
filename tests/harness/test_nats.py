"""harness.nats: a cluster whose start fails leaves no node running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from harness.nats import NatsCluster


def _processes_under(workdir: Path) -> list[int]:
    """Pids of the processes whose command line names `workdir` (the nodes' configs)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if str(workdir).encode() in cmdline:
            found.append(int(entry))
    return found


def test_a_node_that_cannot_bind_fails_the_start_and_the_others_are_stopped(
    tmp_path: Path,
) -> None:
    cluster = NatsCluster(workdir=tmp_path / "nats")
    taken = cluster.nodes[1].ports.monitor
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        with pytest.raises(RuntimeError, match="exited"), cluster:
            pass
        # The fault happened where it was made: the second node could not take its port.
        log = (cluster.nodes[1].workdir / "nats.log").read_text()
        assert f"127.0.0.1:{taken}" in log and "address already in use" in log
    assert all(node.proc is None for node in cluster.nodes)
    assert _processes_under(tmp_path) == []
