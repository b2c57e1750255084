"""What a process costs, read from Linux's /proc: CPU seconds, resident memory, open files.

Benchmarks read the processes they started (brokers, bridges, the API) and PostgreSQL's
server when it runs on this machine; nothing here works elsewhere than on Linux.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # The command name (field 2) may hold blanks and parentheses: split after its last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far."""
    stat = _stat(pid)
    return (int(stat[11]) + int(stat[12])) / _TICKS


def children(pid: int) -> list[int]:
    """The pids of a running process's children (of its main thread, which forks them all
    in the processes we start)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of a running process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The process's soft RLIMIT_NOFILE: how many connections a server can hold at most."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open files limit for {pid}")


def cluster_cpu_seconds(data_dir: Path) -> float | None:
    """User + system CPU seconds of a whole PostgreSQL cluster so far: the postmaster, its live
    processes and the ones it has reaped. None when its data directory cannot be read here."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = _stat(int(proc.name))
            except OSError:
                continue
            if int(proc.name) == postmaster:
                total += sum(int(x) for x in stat[11:15])  # + the reaped children's
            elif int(stat[1]) == postmaster:
                total += int(stat[11]) + int(stat[12])
        return total / _TICKS
    except (OSError, ValueError):
        return None


def tcp_ext_counters(*names: str) -> dict[str, int]:
    """The machine's TcpExt counters of /proc/net/netstat by name (e.g. ListenOverflows: a
    connection dropped because a listener's accept queue was full); machine-wide, since boot."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=True):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], map(int, values.split()[1:]), strict=True))
            return {n: table[n] for n in names}
    raise RuntimeError("no TcpExt in /proc/net/netstat")


def time_wait_sockets() -> int:
    """TCP sockets of the machine in TIME_WAIT (state 06 in /proc/net/tcp and tcp6): each holds
    its local port for 60 s, and a client that binds before connecting (paho does) cannot
    reuse it, so a storm of connections right after another can run out of ephemeral ports."""
    n = 0
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{name}") as f:
            next(f)
            n += sum(1 for line in f if line.split(None, 4)[3] == "06")
    return n
