"""Connected robots, 1,000 → 10,000: the connect storm, the broker's memory, ingest at one rate.

    python -m loadtest.fleet_scale --robots 1000 2500 5000 10000 --rate 10000 --duration 60
    python -m loadtest.fleet_scale --duration 0 --repeat 3       # the storm alone
    python -m loadtest.fleet_scale --duration 0 --connect-chunk 200   # as the simulator connects
    python -m loadtest.fleet_scale --robots 50 --duration 5        # a smoke run (no verdict)

For each fleet size N, everything fresh: N robot identities made by mqtt_auth (the simulator's
fleet, edge_simulator.identities: each robot its own username, the robot id, and password,
derived from one secret; Mosquitto's password file and the ACL's `pattern write robots/%u/#`),
a broker with our mosquitto.conf, one bridge (`python -m bridge`) to a scratch database. Then:

1. storm: the N robots connect at once, spread over --partitions publisher processes (the
   simulator's `--partition i/n` slices, run by loadtest.wire_publisher's fleet mode: every
   robot its own TCP connection and CONNECT, at the wire level so the publishers cost little),
   from the first TCP connect to the last CONNACK; each connection's connect-to-CONNACK
   p50/p99; the broker's CPU per connect; the kernel's listen-queue overflows and SYN
   retransmits meanwhile (machine-wide counters: Mosquitto 2.0 listens with a backlog of 100);
2. ingest: the same total rate for every N (--rate readings/s, --per-message readings per
   message, QoS 1), each robot publishing its share on robots/<id>/sensors/imu for
   --duration s, through the bridge: the committed rate and whether it was sustained
   (loadtest.sustained), lag p99, lost and duplicates by exact count, the bridge's CPU per
   message (loadtest.accounting), the broker's CPU.
The broker's resident memory (VmRSS) and open files: idle (the bridge connected, no robot),
after the storm, and the peak while ingesting.

The broker takes as many connections as its open-files limit allows (mosquitto.conf sets no
`max_connections`): this command raises RLIMIT_NOFILE for itself and so for the broker and the
publishers it starts. Ports: --port-base and up (a shared machine's range), 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from edge_simulator.config import Partition, SimulationConfig
from edge_simulator.identities import identities
from harness.bridge import BridgeProcess
from harness.procfs import cpu_seconds, fd_limit, open_fds, rss_bytes, tcp_ext_counters
from harness.services import Mosquitto
from harness.settings import BenchSettings
from ingest.counters import Counters
from loadtest import report, sustained
from loadtest.accounting import RunWatch
from loadtest.scratch import empty_readings, register_robots, scratch_counters, scratch_database
from loadtest.wire_publisher import FleetPublishers, StormResult, fleet_config
from mqtt_auth.identities import Identity, Role
from mqtt_auth.passwords import new_password

BRIDGE = "fleetscale-bridge"
_MIB = 1 << 20
_TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")


@dataclass(slots=True)
class _BrokerSampler:
    """The broker's memory and open files every `interval_s`, while ingesting."""

    pid: int
    interval_s: float = 0.5
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_bytes(self.pid))
            self.fds.append(open_fds(self.pid))
            await asyncio.sleep(self.interval_s)

    def stop(self) -> None:
        self._stop.set()


def _storm(storms: list[StormResult], overflows: dict[str, int]) -> dict[str, Any]:
    ms = [x for s in storms for x in s.connect_ms]
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "connections": len(ms),
        "duration_s": max(s.last_connack_at for s in storms)
        - min(s.first_connect_at for s in storms),
        # How far apart the partitions began: the storm is "at once" only if this is small.
        "start_spread_ms": (
            max(s.first_connect_at for s in storms) - min(s.first_connect_at for s in storms)
        )
        * 1000,
        "connect_p50_ms": cuts[49],
        "connect_p99_ms": cuts[98],
        "connect_max_ms": max(ms),
        "publishers_cpu_s": sum(s.cpu_s for s in storms),
        **{f"machine_{k}": v for k, v in overflows.items()},
    }


def _broker(pid: int) -> dict[str, float]:
    return {"rss_mib": rss_bytes(pid) / _MIB, "fds": open_fds(pid)}


def provisioned_broker(
    fleet: SimulationConfig, *, workdir: Path, port: int
) -> tuple[Mosquitto, float]:
    """A broker (not started) with the fleet's identities and the bridge's; the seconds that
    hashing and writing the fleet's identities took."""
    broker = Mosquitto(
        workdir=Path(tempfile.mkdtemp(dir=workdir, prefix=f"mq-{fleet.robots}-")), port=port
    )
    t0 = time.perf_counter()
    broker.identities.put(*identities(fleet))  # one rewrite of the files for the whole fleet
    provision_s = time.perf_counter() - t0
    broker.add(Identity(BRIDGE, Role.BRIDGE, None))
    return broker, provision_s


async def only_this_fleet(
    conn: asyncpg.Connection, counters: Counters, fleet: SimulationConfig
) -> None:
    """No readings, no counters, and the fleet's robots registered: a run counts only its own.
    (Runs of ascending sizes share one id scheme, so the registry may hold smaller fleets'
    robots too: they are the first of this one's.)"""
    await empty_readings(conn)
    await counters.clear()
    await register_robots(conn, fleet.fleet_ids())


def fleet_bridge(
    broker: Mosquitto,
    *,
    dsn: str,
    redis_url: str,
    counters: Counters,
    log_path: Path,
    metrics_port: int,
    shared: bool = True,
) -> BridgeProcess:
    """A fleet run's one bridge, as BRIDGE on `broker`; `shared`: in the broker's share
    group, else a plain subscription."""
    return BridgeProcess(
        database_url=dsn,
        redis_url=redis_url,
        redis_prefix=counters.prefix,
        mqtt_url=broker.url_for(BRIDGE),
        log_path=log_path,
        client_id=BRIDGE,
        share_group=broker.share_group if shared else "",
        metrics_port=str(metrics_port),
    )


async def run_size(
    robots: int,
    *,
    args: argparse.Namespace,
    dsn: str,
    counters: Counters,
    redis_url: str,
    workdir: Path,
    ports: tuple[int, int],
) -> dict[str, Any]:
    """One fleet size: provision, start, storm, ingest, count. `ports`: broker, bridge metrics."""
    secret = new_password()
    fleet = fleet_config(robots=robots, prefix=args.prefix, secret=secret, partition=Partition())
    broker, provision_s = provisioned_broker(fleet, workdir=workdir, port=ports[0])
    conn = await asyncpg.connect(dsn)
    await only_this_fleet(conn, counters, fleet)
    since = time.time() - 1.0  # the publishers stamp readings with their send time
    bridge = fleet_bridge(
        broker,
        dsn=dsn,
        redis_url=redis_url,
        counters=counters,
        log_path=workdir / f"bridge-{robots}.log",
        metrics_port=ports[1],
    )
    publishers = FleetPublishers(
        port=broker.port,
        robots=robots,
        partitions=args.partitions,
        prefix=args.prefix,
        secret=secret,
        readings=int(args.rate * args.duration),
        rate=args.rate,
        per_message=args.per_message,
        keepalive_s=args.keepalive,
        connect_chunk=args.connect_chunk,
    )
    watch = RunWatch(dsn=dsn, bridges=[bridge], since=since)
    try:
        broker.start()
        assert broker.proc is not None
        pid = broker.proc.pid
        fds_allowed = fd_limit(pid)
        bridge.start()
        await asyncio.sleep(1.0)
        idle = _broker(pid)
        overflows = tcp_ext_counters(*_TCP_COUNTERS)
        broker_cpu = cpu_seconds(pid)
        storm = _storm(
            await publishers.connect(),
            {k: v - overflows[k] for k, v in tcp_ext_counters(*_TCP_COUNTERS).items()},
        )
        # Accepting, hashing the password (PBKDF2), CONNACK: the broker's cost per robot.
        storm["broker_cpu_us_per_connect"] = (cpu_seconds(pid) - broker_cpu) * 1e6 / robots
        await asyncio.sleep(1.0)  # what the broker keeps, not what it holds mid-handshake
        connected = _broker(pid)
        if args.duration:
            ingest = await _ingest(pid, publishers, watch, conn, counters, bridge=bridge, args=args)
        else:  # the storm alone: the publishers disconnect and exit
            await publishers.publish()
            ingest = {}
    finally:
        publishers.kill()
        await watch.close()
        if bridge.running:
            bridge.kill()
        broker.stop()
        await conn.close()
    return {
        "robots": robots,
        "provision_s": provision_s,
        "broker_fd_limit": fds_allowed,
        "storm": storm,
        "broker_idle": idle,
        "broker_connected": connected,
        **ingest,
    }


async def _ingest(
    pid: int,
    publishers: FleetPublishers,
    watch: RunWatch,
    conn: asyncpg.Connection,
    counters: Counters,
    *,
    bridge: BridgeProcess,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The connected fleet publishes; what the bridge committed, and what the broker cost
    (`pid`) meanwhile."""
    await watch.start(conn)
    sampler = _BrokerSampler(pid)
    sampling = asyncio.create_task(sampler.run())
    broker_cpu = cpu_seconds(pid)
    pubs = await publishers.publish()
    broker_cpu = cpu_seconds(pid) - broker_cpu
    published = sum(p.readings for p, _ in pubs)
    messages = sum(p.messages for p, _ in pubs)
    await watch.wait_stored(published, args.settle_s)
    sampler.stop()
    await sampling
    await watch.stop(conn)
    bridge.stop()
    started = min(p.started_at for p, _ in pubs)
    span = max(p.done_at for p, _ in pubs) - started  # first PUBLISH to last PUBACK
    figures = await watch.figures(
        conn, counters, published=published, messages=messages, started=started
    )
    v = sustained.verdict(sustained.Series(**figures["per_second"]), offering_s=args.duration)
    return {
        "broker_ingest_peak": {
            "rss_mib": max(sampler.rss, default=0) / _MIB,
            "fds": max(sampler.fds, default=0),
        },
        "broker_cpu_percent": broker_cpu * 100 / span,
        "broker_cpu_us_per_message": broker_cpu * 1e6 / max(messages, 1),
        "publishers_cpu_percent": sum(c for _, c in pubs) * 100 / span,
        "published_readings": published,
        "published_messages": messages,
        "publisher_max_behind_s": max(p.max_behind_s for p, _ in pubs),
        "verdict": v.as_dict(),
        **figures,
    }


def raise_open_files(needed: int) -> tuple[int, int]:
    """Up to `needed` open files for this process and the ones it starts, within the hard
    limit (raising that needs privileges a container may not have); returns the limits now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if hard < needed:
        print(f"note: at most {hard} open files here (the hard limit), {needed} wanted")
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    s = r["storm"]
    row = {
        "robots": r["robots"],
        "storm s": s["duration_s"],
        "connect p50 / p99 ms": f"{s['connect_p50_ms']:.0f} / {s['connect_p99_ms']:.0f}",
        "listen overflows": s["machine_ListenOverflows"],
        "SYN retransmits": s["machine_TCPSynRetrans"],
        "broker CPU µs/connect": s["broker_cpu_us_per_connect"],
        "broker MiB idle / connected / ingest": (
            f"{r['broker_idle']['rss_mib']:.1f} / {r['broker_connected']['rss_mib']:.1f} / "
            + (f"{r['broker_ingest_peak']['rss_mib']:.1f}" if "verdict" in r else "-")
        ),
        "broker fds": r["broker_connected"]["fds"],
    }
    if "verdict" not in r:  # the storm alone
        return row
    v, lat = r["verdict"], r["latency"] or {}
    return {
        **row,
        "committed/s": v["done_per_s"],
        "sustained": "yes" if v["sustained"] else ("burst" if not v["long_enough"] else "NO"),
        "lag p99 last third ms": v["lag_p99_last_ms"],
        "latency p50 / p99 ms": f"{lat.get('p50_ms', 0):.0f} / {lat.get('p99_ms', 0):.0f}",
        "lost": r["lost"],
        "dups (absorbed, redis-rows)": f"{r['duplicates_absorbed']}, {r['redis_minus_rows']}",
        "bridge CPU µs/msg": r["bridge_cpu_us_per_message"],
        "broker CPU %": r["broker_cpu_percent"],
        "publishers CPU %": r["publishers_cpu_percent"],
    }


def _markdown(data: dict[str, Any]) -> str:
    a = data["args"]
    rows = [_row(r) for r in data["results"]]
    shape = (
        f"{a['rate']:,.0f} readings/s in total, {a['per_message']}/msg, QoS 1, "
        f"{a['duration']:.0f} s, 1 bridge"
        if a["duration"]
        else "the storm alone"
    )
    chunk = f"{a['connect_chunk']} at a time per process" if a["connect_chunk"] else "at once"
    return (
        f"## Fleet scale, {data['started_at']} ({shape}; {a['partitions']} publisher "
        f"processes, robots connecting {chunk}; load average at start "
        f"{data['machine']['load_average_at_start'][0]:.1f})\n\n"
        + report.markdown_table(rows, list(rows[0]) if rows else [])
    )


def _plot(path: Path, data: dict[str, Any]) -> None:
    """x = robots; the storm, the broker's memory and the committed rate (medians of runs)."""
    sizes = sorted({r["robots"] for r in data["results"]})

    def median(get: Any) -> list[float]:
        return [
            statistics.median(get(r) for r in data["results"] if r["robots"] == n) for n in sizes
        ]

    xs = [float(n) for n in sizes]
    rate = data["args"]["rate"]
    ingest = bool(data["args"]["duration"])
    memory = {
        "idle": (xs, median(lambda r: r["broker_idle"]["rss_mib"])),
        "connected": (xs, median(lambda r: r["broker_connected"]["rss_mib"])),
    }
    panels = [
        (
            "connect storm (s)",
            {"first CONNECT to last CONNACK": (xs, median(lambda r: r["storm"]["duration_s"]))},
        ),
        ("broker RSS (MiB)", memory),
    ]
    if ingest:
        memory["ingesting (peak)"] = (xs, median(lambda r: r["broker_ingest_peak"]["rss_mib"]))
        committed = {
            "committed": (xs, median(lambda r: r["verdict"]["done_per_s"])),
            "--offered": (xs, [rate] * len(xs)),
        }
        panels.append(("readings/s", committed))
    chunk = data["args"]["connect_chunk"]
    report.plot_panels(
        path,
        title=(
            f"1 bridge, {rate:,.0f} readings/s in total whatever the fleet's size"
            if ingest
            else "The connect storm alone"
        )
        + (f"; robots connect {chunk} at a time per process" if chunk else ""),
        xlabel="connected robots (each its own connection and identity)",
        panels=panels,
    )


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    limits = raise_open_files(max(args.robots) + 1024)
    if 0 < args.duration < sustained.MIN_SECONDS:
        print(
            f"note: {args.duration:.0f} s < {sustained.MIN_SECONDS:.0f} s: a smoke run, no verdict"
        )
    workdir = Path(tempfile.mkdtemp(prefix="fleetscale-"))
    data: dict[str, Any] = {
        **report.header("fleet-scale", args),
        "open_files_limit": limits,
        "results": [],
    }
    async with (
        scratch_database(servers, label="fleet", prefix="fleetscale") as dsn,
        scratch_counters(servers, label="fleet", prefix="fleetscale") as counters,
    ):
        k = 0
        for _ in range(args.repeat):
            for robots in sorted(args.robots):
                # A port pair per run: a broker's port is not reused while its connections
                # linger in TIME_WAIT.
                r = await run_size(
                    robots,
                    args=args,
                    dsn=dsn,
                    counters=counters,
                    redis_url=servers.redis_url,
                    workdir=workdir,
                    ports=(args.port_base + 2 * k, args.port_base + 2 * k + 1),
                )
                r["load_average"] = list(os.getloadavg())
                k += 1
                data["results"].append(r)
                print(_line(r), flush=True)
    markdown = _markdown(data)
    base = report.write(name="fleet-scale", data=data, markdown=markdown)
    _plot(base.with_name(base.name + ".png"), data)
    print(markdown)
    print(f"results: {base}.json .md .png")


def _line(r: dict[str, Any]) -> str:
    s = r["storm"]
    line = (
        f"{r['robots']:,} robots: storm {s['duration_s']:.2f} s (p50/p99 "
        f"{s['connect_p50_ms']:.0f}/{s['connect_p99_ms']:.0f} ms, listen overflows "
        f"{s['machine_ListenOverflows']}); broker RSS {r['broker_idle']['rss_mib']:.1f} → "
        f"{r['broker_connected']['rss_mib']:.1f} MiB, fds {r['broker_connected']['fds']}"
    )
    if "verdict" in r:
        v = r["verdict"]
        word = "SUSTAINED" if v["sustained"] else ("burst" if not v["long_enough"] else "NOT kept")
        line += (
            f"; ingesting {r['broker_ingest_peak']['rss_mib']:.1f} MiB; {word} "
            f"{v['done_per_s']:,.0f}/s of {v['offered_per_s']:,.0f}/s, lag p99 "
            f"{v['lag_p99_last_ms']:.0f} ms; lost {r['lost']} dup-absorbed "
            f"{r['duplicates_absorbed']} redis-minus-rows {r['redis_minus_rows']}; bridge "
            f"{r['bridge_cpu_us_per_message']:.0f} µs/msg, broker CPU "
            f"{r['broker_cpu_percent']:.1f} %"
        )
    return line + f"; load {r['load_average'][0]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fleet_scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--robots", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    p.add_argument("--rate", type=float, default=10_000, help="readings/s in total, every size")
    p.add_argument("--per-message", type=int, default=10)
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of ingest per size; 0: the storm alone",
    )
    p.add_argument("--partitions", type=int, default=4, help="publisher processes")
    p.add_argument("--repeat", type=int, default=1, help="runs per size (sizes interleaved)")
    p.add_argument("--keepalive", type=int, default=120, help="the robots' MQTT keepalive, s")
    p.add_argument(
        "--connect-chunk",
        type=int,
        default=0,
        help="each publisher connects this many robots at a time, the next chunk once they "
        "have their CONNACKs (edge_simulator's way: 200); 0: all at once",
    )
    p.add_argument("--prefix", default="fleetscale", help="robot ids are PREFIX-0000 ...")
    p.add_argument("--settle-s", type=float, default=10.0, help="give up after idle")
    p.add_argument(
        "--port-base",
        type=int,
        default=27000,
        help="the k-th run's broker on BASE+2k, its bridge's metrics on BASE+2k+1",
    )
    args = p.parse_args()
    report.require_plotting()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
