"""Drain of a site broker's backlog after an uplink outage (docs/edge.md, BENCHMARKS.md).

Site A: 100 simulated robots (the simulator's default mix unless --sensors/--rate say
otherwise) publish to a site broker (edge/mosquitto.conf) bridged to the cloud broker through
a socat link; site B: --live-robots robots publish to the cloud broker directly. The link is cut
for --outage seconds and restored. Printed: the backlog (readings and messages), the site
broker's memory and persistence file per queued message, the drain rate into PostgreSQL
(readings/s, from the restore until the first reading published after the restore is stored:
the site's queue is one FIFO, so that is when the site has caught up) and site B's ingest
(readings/s and received_at - ts) before the outage and during the drain (while it publishes:
until the backlog is stored or the simulators stop, whichever comes first), and the machine's
load average at each step (other work on the machine shows there).

    .venv/bin/python -m loadtest.edge_drain --outage 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from edge_simulator.cli import SimulatorSettings, build_parser, config_from_args
from harness.bridge import BridgeProcess
from harness.edge import SiteMosquitto, SiteWatch, TcpProxy
from harness.procfs import rss_bytes
from harness.services import ROOT, Mosquitto
from harness.settings import BenchSettings
from loadtest.scratch import scratch_counters, scratch_database
from mqtt_auth.identities import Identity, Role
from telemetry.topics import SITE_REACHABLE, site_status_topic

SECRET = "edge-drain-fleet-secret"


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


async def _simulator(
    *, prefix: str, robots: int, port: int, auth: Path, pid: Path | None, dsn: str,
    duration: float, secret: Path, extra: list[str], log: Path, summary: Path,
) -> asyncio.subprocess.Process:  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_simulator", "--robots", str(robots),
        "--robot-prefix", prefix, "--duration", str(duration),
        "--mqtt-url", f"mqtt://127.0.0.1:{port}", "--mqtt-secret-file", str(secret),
        "--provision-mqtt", str(auth), *(["--mosquitto-pid-file", str(pid)] if pid else []),
        "--register-db", "--database-url", dsn, "--log-level", "WARNING",
        "--summary", str(summary), *extra,
        cwd=ROOT, env=os.environ.copy(), stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip


async def _site_stats(
    conn: asyncpg.Connection[Any], prefix: str, since: datetime, until: datetime
) -> dict[str, float]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)) p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)) p99"
        " FROM sensor_readings WHERE robot_id LIKE $1 AND received_at >= $2 AND received_at < $3",
        prefix + "-%",
        since,
        until,
    )
    assert row is not None
    span = (until - since).total_seconds()
    return {
        "readings_per_s": row["n"] / span if span > 0 else 0.0,
        "delay_p50_s": float(row["p50"] or 0),
        "delay_p99_s": float(row["p99"] or 0),
    }


async def run(args: argparse.Namespace, servers: BenchSettings) -> dict[str, Any]:  # noqa: PLR0915 - one scenario, in order
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-edge-"))
    site_robots = _ids("sa", args.robots)
    secret = workdir / "fleet-secret"
    secret.write_text(SECRET + "\n")
    extra = [*(["--sensors", args.sensors] if args.sensors else []), "--rate", args.rate]
    async with (
        scratch_database(servers, label="edge") as dsn,
        scratch_counters(servers, label="edge") as counters,
    ):
        # --port-base: the brokers, the link and the bridge's metrics on fixed ports (a shared
        # machine's port ranges); 0: free ones.
        base = args.port_base
        cloud = Mosquitto(workdir=workdir / "cloud", port=base or None)
        cloud.add(Identity("bench-bridge", Role.BRIDGE, None))
        cloud.add(Identity("bench-operator", Role.OPERATOR, None))
        cloud.start()
        wan = TcpProxy(
            workdir=workdir / "wan", target_port=cloud.port, port=base + 1 if base else None
        )
        wan.start()
        site = SiteMosquitto(
            workdir=workdir / "site", cloud=cloud, site_id="site-a", robots=site_robots,
            via_port=wan.port, port=base + 2 if base else None,
        )  # fmt: skip
        site.start()
        bridge = BridgeProcess(
            database_url=dsn,
            redis_prefix=counters.prefix,
            mqtt_url=cloud.url_for("bench-bridge"),
            log_path=workdir / "bridge.log",
            client_id="bench-bridge",
            **({"metrics_port": str(base + 3)} if base else {}),
        )
        bridge.start()
        # Until stopped: the simulators run through the outage and the drain.
        duration = 0
        sims = [
            await _simulator(
                prefix="sa", robots=args.robots, port=site.port, auth=site.auth.directory,
                pid=site.auth.pid_file, dsn=dsn, duration=duration, secret=secret, extra=extra,
                log=workdir / "sim-a.log", summary=workdir / "sim-a.json",
            ),
            await _simulator(
                prefix="sb", robots=args.live_robots, port=cloud.port,
                auth=cloud.auth.directory, pid=cloud.auth.pid_file, dsn=dsn, duration=duration,
                secret=secret, extra=extra, log=workdir / "sim-b.log",
                summary=workdir / "sim-b.json",
            ),
        ]  # fmt: skip
        conn = await asyncpg.connect(dsn)
        watch = SiteWatch(cloud, "bench-operator")
        status = site_status_topic("site-a")
        load: dict[str, list[float]] = {}
        try:
            await asyncio.sleep(args.warmup)
            load["cut"] = list(os.getloadavg())
            t_cut = datetime.now(UTC)
            wan.cut()
            await asyncio.sleep(args.outage)
            assert site.proc is not None
            rss = rss_bytes(site.proc.pid)
            db_file = site.data_dir / "mosquitto.db"
            db_size = db_file.stat().st_size if db_file.exists() else 0
            load["restore"] = list(os.getloadavg())
            t_restore = datetime.now(UTC)
            wan.start()
            t_up = await _reconnected(watch, status, t_restore.timestamp())
            await asyncio.sleep(args.after)
            load["simulators_stop"] = list(os.getloadavg())
            t_stop = datetime.now(UTC)
            for sim in sims:
                sim.send_signal(signal.SIGINT)
                await asyncio.wait_for(sim.wait(), 120)
            expected = {
                name: json.loads((workdir / f"sim-{name}.json").read_text())["totals"][
                    "valid_readings"
                ]
                for name in ("a", "b")
            }
            await _settled(conn, sum(expected.values()))
            load["settled"] = list(os.getloadavg())
            r = await _measure(
                conn,
                t_cut=t_cut,
                t_restore=t_restore,
                t_up_s=t_up,
                t_stop=t_stop,
                warmup=timedelta(seconds=args.warmup),
            )
        finally:
            watch.close()
            await conn.close()
            for sim in sims:
                if sim.returncode is None:
                    sim.kill()
                    await sim.wait()
            bridge.stop()
            # A large queue takes the site broker longer to save than the harness waits.
            for broker in (site, cloud):
                try:
                    broker.stop()
                except subprocess.TimeoutExpired:
                    assert broker.proc is not None
                    broker.proc.wait(timeout=600)
                    broker.proc = None
            wan.stop()
    messages = _messages_per_s(args) * args.outage
    return {
        **r,
        "loadavg_1_5_15": load,
        "outage_s": args.outage,
        "site_robots": args.robots,
        "live_robots": args.live_robots,
        "lost_site_a": expected["a"] - r["stored_a"],
        "lost_site_b": expected["b"] - r["stored_b"],
        "backlog_messages_estimated": messages,
        "site_rss_mib": rss / 2**20,
        "site_db_file_mib": db_size / 2**20,
        "rss_bytes_per_queued_message": rss / messages if messages else 0,
        "file_bytes_per_queued_message": db_size / messages if messages else 0,
    }


async def _reconnected(watch: SiteWatch, status: str, since: float) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ups = [t for t, topic, payload in watch.history if topic == status and t > since
               and payload == SITE_REACHABLE]  # fmt: skip
        if ups:
            return ups[0]
        await asyncio.sleep(0.1)
    raise TimeoutError("the site never reconnected")


async def _settled(conn: asyncpg.Connection[Any], expected: int) -> None:
    """Until every acknowledged reading is stored, or nothing more is for 60 s (a save of a
    large queue stops the site broker for many seconds: 5 s of quiet is not the end)."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 60 and last < expected:
        await asyncio.sleep(0.5)
        n = await conn.fetchval("SELECT count(*) FROM sensor_readings")
        if n != last:
            last, since = n, time.monotonic()


async def _measure(
    conn: asyncpg.Connection[Any],
    *,
    t_cut: datetime,
    t_restore: datetime,
    t_up_s: float,
    t_stop: datetime,
    warmup: timedelta,
) -> dict[str, Any]:
    t_up = datetime.fromtimestamp(t_up_s, UTC)
    backlog = await conn.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE robot_id LIKE 'sa-%' AND ts >= $1 AND ts < $2",
        t_cut,
        t_restore,
    )
    backlog_stored = await conn.fetchval(
        "SELECT max(received_at) FROM sensor_readings WHERE robot_id LIKE 'sa-%' AND ts < $1",
        t_restore,
    )
    first_live = await conn.fetchval(
        "SELECT min(received_at) FROM sensor_readings WHERE robot_id LIKE 'sa-%' AND ts >= $1",
        t_up,
    )
    inversions = await conn.fetchval(
        "SELECT count(*) FROM (SELECT received_at, lag(received_at) OVER w AS before"
        " FROM sensor_readings WHERE robot_id LIKE 'sa-%'"
        " WINDOW w AS (PARTITION BY robot_id, sensor_type ORDER BY seq)) x"
        " WHERE received_at < before"
    )
    stored = {
        row["site"]: row["n"]
        for row in await conn.fetch(
            "SELECT left(robot_id, 2) AS site, count(*) AS n FROM sensor_readings GROUP BY 1"
        )
    }
    drain_s = (backlog_stored - t_up).total_seconds()
    # None: no reading with a timestamp after the reconnect (a simulator far behind its
    # schedule stamps readings with the schedule's time).
    catch_up = (first_live - t_up).total_seconds() if first_live is not None else None
    return {
        "backlog_readings": backlog,
        "reconnect_s": (t_up - t_restore).total_seconds(),
        "drain_s": drain_s,
        "drain_readings_per_s": backlog / drain_s if drain_s > 0 else 0.0,
        "first_live_after_reconnect_s": catch_up,
        "order_inversions": inversions,
        "stored_a": stored.get("sa", 0),
        "stored_b": stored.get("sb", 0),
        # The second half of the warm-up (the simulators start during the first; a window
        # longer than the warm-up would divide its readings by time nothing was published).
        "live_site_before": await _site_stats(conn, "sb", t_cut - warmup / 2, t_cut),
        # While site B publishes: its simulator stops after --after seconds.
        "live_site_during_drain": await _site_stats(conn, "sb", t_up, min(backlog_stored, t_stop)),
        "simulators_stopped_after_reconnect_s": (t_stop - t_up).total_seconds(),
    }


def _messages_per_s(args: argparse.Namespace) -> float:
    """Site A's message rate, from the configured mix (the simulator's own arithmetic)."""

    parsed = build_parser(SimulatorSettings()).parse_args(
        ["--robots", str(args.robots), *(["--sensors", args.sensors] if args.sensors else []),
         "--rate", args.rate]
    )  # fmt: skip
    config = config_from_args(parsed, now_ms=int(time.time() * 1000))
    return float(args.robots * sum(s.rate_hz / s.batch for s in config.mix.values()))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.edge_drain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--robots", type=int, default=100, help="site A's robots")
    p.add_argument("--live-robots", type=int, default=20, help="site B's robots (no outage)")
    p.add_argument("--outage", type=float, default=600.0, help="seconds the uplink is cut")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the cut")
    p.add_argument("--after", type=float, default=300.0, help="publishing after the restore")
    p.add_argument("--sensors", default="", help="the simulator's --sensors (default: all)")
    p.add_argument("--rate", default="", help="the simulator's --rate")
    p.add_argument("--port-base", type=int, default=0,
                   help="cloud broker, link, site broker, bridge metrics on this port and the "
                        "next three (0: free ports)")  # fmt: skip
    r = asyncio.run(run(p.parse_args(), BenchSettings()))
    print(json.dumps(r, default=str, indent=2))
    print(f"outage {r['outage_s']:.0f} s, site A {r['site_robots']} robots, "
          f"site B {r['live_robots']} robots live;"
          f" lost: A {r['lost_site_a']}, B {r['lost_site_b']}")  # fmt: skip
    print(f"backlog: {r['backlog_readings']:,} readings, ~{r['backlog_messages_estimated']:,.0f}"
          f" messages; site broker RSS {r['site_rss_mib']:.0f} MiB"
          f" ({r['rss_bytes_per_queued_message']:.0f} B/message), persistence file"
          f" {r['site_db_file_mib']:.0f} MiB"
          f" ({r['file_bytes_per_queued_message']:.0f} B/message)")  # fmt: skip
    print(f"reconnected {r['reconnect_s']:.1f} s after the restore; backlog stored"
          f" {r['drain_s']:.1f} s after that: {r['drain_readings_per_s']:,.0f} readings/s;"
          f" first live reading {r['first_live_after_reconnect_s']} s after reconnecting;"
          f" order inversions {r['order_inversions']}")  # fmt: skip
    print(f"load average (1, 5, 15 min): {r['loadavg_1_5_15']}")
    for name in ("live_site_before", "live_site_during_drain"):
        s = r[name]
        print(f"site B {name[10:]}: {s['readings_per_s']:,.0f} readings/s, received_at - ts"
              f" p50 {s['delay_p50_s']:.3f} s, p99 {s['delay_p99_s']:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
