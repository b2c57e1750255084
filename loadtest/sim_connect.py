"""The edge simulator's own connect storm, this tree beside a previous commit:

    python -m loadtest.sim_connect --robots 2000 10000 --partitions 4 --repeat 3 --baseline HEAD~1
    python -m loadtest.sim_connect --robots 10000 --repeat 3 --restart

For each fleet size N: a fresh broker with our mosquitto.conf and the fleet's identities (each
robot its own username and password, as `--provision-mqtt` makes them), then, per round and tree
(interleaved), --partitions processes each connecting its `--partition i/n` slice with the
simulator's `edge_simulator.fleet.Fleet` (one connection per robot, paho, the tree's own way of
pacing its connects), all started together. Per run: from the first process's first connect to
the last process's last CONNACK, the slowest process, and the kernel's listen-queue overflows and
SYN resends meanwhile (machine-wide counters: Mosquitto 2.0.11 listens with a backlog of 100).
Then every process disconnects and exits, and the next run waits until the machine has fewer
than 1,000 sockets in TIME_WAIT (paho binds its local port before connecting, so a storm right
after another would find the ephemeral ports taken).

With --restart, once every process is connected the broker is stopped (SIGTERM, as a service
manager restarts it) and started again on the same port, under the connected fleet: from the
broker listening again to the last link back up (the simulator's own reconnects, spread as in
`edge_simulator.fleet.Link._reconnect`), and the kernel's counters meanwhile.

Each process runs `loadtest/sim_connect_child.py` as a script with the tree's directory first on
PYTHONPATH, so that it imports that tree's simulator. Ports: --port and up, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from edge_simulator.config import Partition
from edge_simulator.identities import identities
from harness.procfs import tcp_ext_counters, time_wait_sockets
from harness.services import Mosquitto
from loadtest import baseline, report
from loadtest.fleet_scale import raise_open_files
from loadtest.wire_publisher import fleet_config
from mqtt_auth.passwords import new_password

_TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
PREFIX = "simc"


def _wait_for_ports(timeout_s: float = 120.0) -> float:
    """Waits until the previous runs' connections have left TIME_WAIT, so every run starts with
    the ephemeral ports free (binding one gets slower as they fill, then fails); the wait."""
    t0 = time.monotonic()
    while time_wait_sockets() > 1000:
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{time_wait_sockets()} sockets still in TIME_WAIT")
        time.sleep(1.0)
    return time.monotonic() - t0


def _run_storm(
    *, root: Path, robots: int, secret: str, broker: Mosquitto, args: argparse.Namespace
) -> dict[str, Any]:
    _wait_for_ports()
    env = {**os.environ, **baseline.python_env(root)}
    before = tcp_ext_counters(*_TCP_COUNTERS)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                # Run with nothing of this directory on sys.path: the tree on PYTHONPATH (or this
                # one's install) is what it imports.
                "-c",
                "import runpy, sys; sys.argv[:] = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')",
                str(Path(__file__).resolve().with_name("sim_connect_child.py")),
                "--robots",
                str(robots),
                "--partition",
                f"{i}/{args.partitions}",
                "--prefix",
                PREFIX,
                "--secret",
                secret,
                "--port",
                str(broker.port),
                *(
                    ["--connects-in-flight", str(args.connects_in_flight)]
                    if args.connects_in_flight
                    else []
                ),
                *(["--restart"] if args.restart else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),
        )
        for i in range(args.partitions)
    ]
    outs = [json.loads(_line(p)) for p in procs]
    after = tcp_ext_counters(*_TCP_COUNTERS)
    first = min(o["started"] for o in outs)
    run: dict[str, Any] = {
        "storm_s": max(o["connected"] for o in outs) - first,
        "slowest_partition_s": max(o["connected"] - o["started"] for o in outs),
        "partitions_started_within_s": max(o["started"] for o in outs) - first,
        "links": sum(o["links"] for o in outs),
        **{k: after[k] - before[k] for k in _TCP_COUNTERS},
    }
    if args.restart:
        run.update(_restart(procs, broker))
    for p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"a partition failed (exit {p.returncode}): {out[-500:]!r}")
    return run


def _line(proc: subprocess.Popen[str]) -> str:
    """The partition's next line of JSON; raises when it exited instead."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a partition exited (status {proc.wait(timeout=60)})")
    return line


def _restart(procs: list[subprocess.Popen[str]], broker: Mosquitto) -> dict[str, Any]:
    """Stops the broker under the connected fleet and starts it again on the same port; the
    fleet comes back on its own reconnects. From the broker listening again to the last link
    back up, and the kernel's counters meanwhile."""
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("restart\n")
        p.stdin.flush()
    stopping = time.time()
    broker.stop()
    before = tcp_ext_counters(*_TCP_COUNTERS)
    broker.start()
    listening = time.time()
    backs = [json.loads(_line(p)) for p in procs]
    after = tcp_ext_counters(*_TCP_COUNTERS)
    return {
        "broker_down_s": listening - stopping,
        "back_s": max(b["all_up"] for b in backs) - listening,
        **{f"restart_{k}": after[k] - before[k] for k in _TCP_COUNTERS},
    }


def main_parent(args: argparse.Namespace) -> None:
    raise_open_files(max(args.robots) * 2 + 1000)
    data: dict[str, Any] = report.header("sim-connect", args)
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack:
        trees = baseline.trees(stack, args.baseline)
        data["trees"] = {label: baseline.describe(root) for label, root in trees}
        workdir = Path(tempfile.mkdtemp(prefix="sim-connect-"))
        for robots in args.robots:
            secret = new_password()
            fleet = fleet_config(robots=robots, prefix=PREFIX, secret=secret, partition=Partition())
            broker = Mosquitto(
                workdir=Path(tempfile.mkdtemp(dir=workdir, prefix=f"mq-{robots}-")),
                port=args.port,
            )
            broker.identities.put(*identities(fleet))
            broker.start()
            try:
                for k in range(args.repeat):
                    for label, root in trees:
                        r = _run_storm(
                            root=root, robots=robots, secret=secret, broker=broker, args=args
                        )
                        r.update(tree=label, robots=robots, round=k + 1)
                        runs.append(r)
                        print(
                            f"  {label:>8} {robots:>6} robots, round {k + 1}: storm "
                            f"{r['storm_s']:.2f} s (slowest partition "
                            f"{r['slowest_partition_s']:.2f} s), {r['links']} connected; listen "
                            f"overflows "
                            f"{r['ListenOverflows']}, SYN resends {r['TCPSynRetrans']}"
                            + (
                                f"; broker restarted in {r['broker_down_s']:.2f} s, all back "
                                f"{r['back_s']:.2f} s after (listen overflows "
                                f"{r['restart_ListenOverflows']}, SYN resends "
                                f"{r['restart_TCPSynRetrans']})"
                                if args.restart
                                else ""
                            ),
                            flush=True,
                        )
            finally:
                broker.stop()
    table = []
    for robots in args.robots:
        for label, _ in trees:
            rs = [r for r in runs if r["robots"] == robots and r["tree"] == label]
            table.append(
                {
                    "robots": f"{robots:,}",
                    "tree": f"{label} ({data['trees'][label].split()[0]})",
                    "storm s (median)": round(statistics.median(r["storm_s"] for r in rs), 2),
                    "storm s (runs)": ", ".join(f"{r['storm_s']:.2f}" for r in rs),
                    "listen overflows (runs)": ", ".join(str(r["ListenOverflows"]) for r in rs),
                    "SYN resends (runs)": ", ".join(str(r["TCPSynRetrans"]) for r in rs),
                    **(
                        {
                            "back after a restart s (runs)": ", ".join(
                                f"{r['back_s']:.2f}" for r in rs
                            ),
                            "restart listen overflows (runs)": ", ".join(
                                str(r["restart_ListenOverflows"]) for r in rs
                            ),
                        }
                        if args.restart
                        else {}
                    ),
                }
            )
    data["runs"] = runs
    title = (
        f"## The simulator's connect storm, {data['started_at']} ({args.partitions} processes, "
        f"{args.repeat} rounds, interleaved)"
    )
    markdown = title + "\n\n" + report.markdown_table(table, list(table[0])) + "\n"
    base = report.write(name="sim-connect", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.sim_connect", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--robots", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline", help="a git revision measured beside this tree, interleaved")
    p.add_argument("--port", type=int, default=26100, help="the broker's port")
    p.add_argument(
        "--connects-in-flight", type=int, default=0, help="per process; 0: the tree's default"
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="then stop and start the broker under the connected fleet, and time its return",
    )
    main_parent(p.parse_args())


if __name__ == "__main__":
    main()
