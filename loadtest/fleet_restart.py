"""Readings across broker restarts under the whole fleet: is every reading stored, once?

    python -m loadtest.fleet_restart --robots 10000 --duration 90 --restarts 30 60 --repeat 3
    python -m loadtest.fleet_restart --robots 200 --duration 20 --restarts 8    # a smoke run

Per run, everything fresh: N robot identities (as the simulator's --provision-mqtt makes them:
each robot its own username and password), a broker with our mosquitto.conf, one bridge
(`python -m bridge`; a plain subscription as one bridge is deployed, or with --shared one in a share
group as several bridges run) to a scratch database with the robots registered. The simulator
itself (`python -m edge_simulator`, in --partitions processes, `--partition i/n` each) publishes
--sensors at --rate per robot in messages of --batch readings, QoS 1, for --duration s. At each
of --restarts (seconds after the whole fleet publishes) the broker is stopped with SIGTERM, as a
service manager restarts it (Mosquitto writes its persistence file, which keeps what it queued
for the bridge's session), and started again on the same port. Robots keep producing while their
link is down (the simulator's backlog), resend what the broker had not acknowledged and
reconnect on their own; the bridge resumes its session.

Counted, against the simulators' summaries (what each robot handed to MQTT, per sensor type):
readings missing per robot and type (lost), readings stored beyond those (extra), redeliveries
the bridge absorbed, the live counters against the rows, messages the simulators never had
acknowledged, the links the fleet saw lost and the reconnects that failed (the simulators'
logs). Timed: the broker's restart, the first commit after it, the longest stretch without a
commit, and when the backlog was back to what it was before the restart. Per second (plot):
readings produced (by their `ts`), committed, the backlog and the p99 produce-to-commit lag.

A count of losses, not a speed: no baseline tree. Ports: --port (the broker) and --port + 1
(the bridge's metrics), 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from edge_simulator.config import Partition
from harness.services import ROOT, Mosquitto
from harness.settings import BenchSettings
from ingest.counters import Counters
from loadtest import report
from loadtest.accounting import RunWatch
from loadtest.fleet_scale import (
    fleet_bridge,
    only_this_fleet,
    provisioned_broker,
    raise_open_files,
)
from loadtest.scratch import scratch_counters, scratch_database
from loadtest.sustained import Series
from loadtest.wire_publisher import fleet_config
from mqtt_auth.passwords import new_password

# What the simulator logs (edge_simulator.run, edge_simulator.fleet).
_PUBLISHING = "; publishing "
_LINK_LOST = "lost ("
_RECONNECT_FAILED = "reconnect of "


async def _simulators(
    args: argparse.Namespace, *, port: int, secret: Path, workdir: Path
) -> list[tuple[asyncio.subprocess.Process, Path, Path]]:
    """The fleet's partitions, started together: (process, its log, its summary)."""
    out = []
    for i in range(args.partitions):
        log, summary = workdir / f"sim-{i}.log", workdir / f"sim-{i}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_simulator", "--robots", str(args.robots),
            "--robot-prefix", args.prefix, "--partition", f"{i}/{args.partitions}",
            "--duration", str(args.duration), "--sensors", args.sensors, "--rate", args.rate,
            "--batch", args.batch, "--mqtt-url", f"mqtt://127.0.0.1:{port}",
            "--mqtt-secret-file", str(secret), "--client-prefix", f"{args.prefix}-{i}",
            "--summary", str(summary), "--log-level", "INFO",
            cwd=ROOT, env=os.environ.copy(), stdout=asyncio.subprocess.DEVNULL,
            stderr=log.open("wb"),
        )  # fmt: skip
        out.append((proc, log, summary))
    return out


async def _all_publishing(
    sims: list[tuple[asyncio.subprocess.Process, Path, Path]], timeout_s: float
) -> None:
    """Until every partition has connected its robots and begun publishing; raises when one
    exits first or on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = 0
        for proc, log, _ in sims:
            text = log.read_text(errors="replace")
            if _PUBLISHING in text:
                continue
            if proc.returncode is not None:
                raise RuntimeError(f"a simulator exited ({proc.returncode}): {text[-1500:]}")
            waiting += 1
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} simulator partitions not publishing after {timeout_s} s")
        await asyncio.sleep(0.2)


async def _restart(broker: Mosquitto) -> dict[str, float]:
    """SIGTERM, then the same broker on the same port; epoch seconds of each step."""
    stopping = time.time()
    await asyncio.to_thread(broker.stop)
    stopped = time.time()
    await asyncio.to_thread(broker.start)
    return {"stopping": stopping, "stopped": stopped, "listening": time.time()}


async def compare(
    conn: asyncpg.Connection,
    summaries: list[dict[str, Any]],
    *,
    prefix: str,
    since: float,
    started: float,
) -> dict[str, Any]:
    """The rows of each robot and sensor type against what its simulator handed to MQTT, and
    where in the run the gaps in their sequence numbers are (by the second, since `started`,
    of the reading after each gap: readings are stamped when produced)."""
    rows = await conn.fetch(
        "SELECT robot_id, sensor_type, count(*) AS n, min(seq) AS lo, max(seq) AS hi"
        " FROM sensor_readings WHERE ts >= to_timestamp($1) AND robot_id LIKE $2"
        " GROUP BY 1, 2",
        since,
        prefix + "-%",
    )
    stored = {(r["robot_id"], r["sensor_type"]): r for r in rows}
    lost = extra = short_groups = groups = 0
    examples: list[str] = []
    for summary in summaries:
        for robot, sensors in summary["per_robot"].items():
            for sensor_type, tally in sensors.items():
                groups += 1
                want = tally["valid_readings"]
                got = stored.pop((robot, sensor_type), None)
                n = got["n"] if got else 0
                lost += max(0, want - n)
                extra += max(0, n - want)
                if n != want:
                    short_groups += 1
                    if len(examples) < 5:
                        span = f"seq {got['lo']}-{got['hi']}" if got else "none stored"
                        examples.append(
                            f"{robot}/{sensor_type}: {n} of {want} (sent seq "
                            f"{tally['seq_first']}-{tally['seq_last']}, {span})"
                        )
    # Rows of a robot and type no simulator sent for.
    extra += sum(r["n"] for r in stored.values())
    gaps = await conn.fetch(
        "SELECT floor(extract(epoch FROM ts) - $3)::int AS s, sum(seq - prev - 1) AS missing"
        " FROM (SELECT ts, seq, lag(seq) OVER (PARTITION BY robot_id, sensor_type ORDER BY seq)"
        "       AS prev FROM sensor_readings WHERE ts >= to_timestamp($1) AND robot_id LIKE $2) g"
        " WHERE seq - prev > 1 GROUP BY 1 ORDER BY 1",
        since,
        prefix + "-%",
        started,
    )
    return {
        # JSON keys: seconds since `started`.
        "missing_by_second": {str(g["s"]): int(g["missing"]) for g in gaps},
        "groups": groups,
        "lost": lost,
        "extra": extra,
        "groups_off": short_groups + len(stored),
        "examples": examples,
    }


def _log_counts(logs: list[Path]) -> dict[str, int]:
    lost = failed = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            lost += _LINK_LOST in line
            failed += _RECONNECT_FAILED in line
    return {"links_lost": lost, "reconnects_failed": failed}


def _timeline(
    figures: dict[str, Any], restarts: list[dict[str, float]], started: float
) -> dict[str, Any]:
    """Around each restart: the first commit after the broker listened again, and when the
    backlog was back to its level before the first restart."""
    commits = figures["commits"]["t"]  # seconds since `started`, ascending
    gaps = [b - a for a, b in pairwise(commits)]
    series = Series(
        offered=figures["per_second"]["offered"],
        done=figures["per_second"]["done"],
        lag_p99_ms=figures["per_second"]["lag_p99_ms"],
    )
    backlog = series.backlog()
    first = int(restarts[0]["stopping"] - started) if restarts else len(backlog)
    before = backlog[max(0, first - 10) : first]
    level = statistics.median(before) if before else 0
    out = []
    for r in restarts:
        listening = r["listening"] - started
        after = [t for t in commits if t >= listening]
        back = next(
            (
                s - listening
                for s in range(int(listening) + 1, len(backlog))
                if backlog[s] <= level * 1.2
            ),
            None,
        )
        out.append(
            {
                "down_s": r["listening"] - r["stopping"],
                "first_commit_after_s": (after[0] - listening) if after else None,
                "backlog_back_s": back,
            }
        )
    return {
        "restarts": out,
        "longest_without_commit_s": max(gaps, default=0.0),
        "backlog_before": level,
        "backlog_peak": max(backlog, default=0),
    }


async def run_once(
    args: argparse.Namespace,
    *,
    dsn: str,
    counters: Counters,
    redis_url: str,
    workdir: Path,
    ports: tuple[int, int],
) -> dict[str, Any]:
    """One run; `ports`: the broker's, the bridge's metrics."""
    secret = new_password()
    fleet = fleet_config(
        robots=args.robots, prefix=args.prefix, secret=secret, partition=Partition()
    )
    broker, _ = provisioned_broker(fleet, workdir=workdir, port=ports[0])
    secret_file = workdir / "fleet.secret"
    secret_file.write_text(secret)
    conn = await asyncpg.connect(dsn)
    await only_this_fleet(conn, counters, fleet)
    since = time.time() - 1.0  # the simulator stamps readings from when it starts publishing
    bridge = fleet_bridge(
        broker,
        dsn=dsn,
        redis_url=redis_url,
        counters=counters,
        log_path=workdir / "bridge.log",
        metrics_port=ports[1],
        # One bridge subscribes plainly, as deployed (README, "What a broker restart loses"):
        # Mosquitto 2.0 does not keep a shared subscription over a restart.
        shared=args.shared,
    )
    watch = RunWatch(dsn=dsn, bridges=[bridge], since=since)
    sims: list[tuple[asyncio.subprocess.Process, Path, Path]] = []
    try:
        broker.start()
        bridge.start()
        await watch.start(conn)
        sims = await _simulators(args, port=ports[0], secret=secret_file, workdir=workdir)
        await _all_publishing(sims, timeout_s=300)
        publishing = time.time()
        restarts = []
        for at in args.restarts:
            await asyncio.sleep(max(0.0, publishing + at - time.time()))
            r = await _restart(broker)
            restarts.append(r)
            print(f"  broker restarted in {r['listening'] - r['stopping']:.2f} s", flush=True)
        codes = [
            await asyncio.wait_for(proc.wait(), timeout=args.duration + 600) for proc, _, _ in sims
        ]
        for code, (_, log, _) in zip(codes, sims, strict=True):
            if code not in (0, 1):  # 1: messages left unacknowledged, counted below
                raise RuntimeError(f"a simulator failed ({code}): {log.read_text()[-1500:]}")
        summaries = [json.loads(path.read_text()) for _, _, path in sims]
        published = sum(s["totals"]["valid_readings"] for s in summaries)
        messages = sum(s["totals"]["messages"] for s in summaries)
        await watch.wait_stored(published, args.settle_s)
        await watch.stop(conn)
        bridge.stop()
        started = min(s["start_ts_ms"] for s in summaries) / 1000
        figures = await watch.figures(
            conn, counters, published=published, messages=messages, started=started
        )
        compared = await compare(conn, summaries, prefix=args.prefix, since=since, started=started)
    finally:
        for proc, _, _ in sims:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await watch.close()
        if bridge.running:
            bridge.kill()
        broker.stop()
        await conn.close()
    return {
        "robots": args.robots,
        "published_readings": published,
        "published_messages": messages,
        "unacknowledged": sum(s["unacknowledged"] for s in summaries),
        "simulator_max_lag_s": max(s["max_lag_s"] for s in summaries),
        **compared,
        "stored": figures["stored"],
        "duplicates_absorbed": figures["duplicates_absorbed"],
        "rejected": figures["rejected"],
        "redis_minus_rows": figures["redis_minus_rows"],
        "latency": figures["latency"],
        "per_second": figures["per_second"],
        **_log_counts([log for _, log, _ in sims]),
        **_timeline(figures, restarts, started),
        "restart_at_s": [r["stopping"] - started for r in restarts],
    }


def _line(r: dict[str, Any]) -> str:
    restarts = "; ".join(
        f"restart {i + 1}: down {x['down_s']:.2f} s, first commit "
        + (f"{x['first_commit_after_s']:.2f} s" if x["first_commit_after_s"] is not None else "-")
        + " after, backlog back "
        + (f"{x['backlog_back_s']:.1f} s" if x["backlog_back_s"] is not None else "never")
        + " after"
        for i, x in enumerate(r["restarts"])
    )
    return (
        f"{r['robots']:,} robots: {r['published_readings']:,} readings in "
        f"{r['published_messages']:,} messages; stored {r['stored']:,}; rejected {r['rejected']}; "
        f"LOST {r['lost']}, extra "
        f"{r['extra']} ({r['groups_off']} of {r['groups']} robot/type off); unacknowledged "
        f"{r['unacknowledged']}; redeliveries absorbed {r['duplicates_absorbed']}; redis-minus-"
        f"rows {r['redis_minus_rows']}; links lost {r['links_lost']}, reconnects failed "
        f"{r['reconnects_failed']}; longest without a commit {r['longest_without_commit_s']:.1f} "
        f"s; {restarts}"
        + (f"; e.g. {r['examples']}" if r["examples"] else "")
        + (f"; missing by second: {r['missing_by_second']}" if r["missing_by_second"] else "")
    )


def _markdown(data: dict[str, Any]) -> str:
    a = data["args"]
    rows = []
    for k, r in enumerate(data["results"]):
        rows.append(
            {
                "run": k + 1,
                "readings (messages)": f"{r['published_readings']:,} ({r['published_messages']:,})",
                "lost": r["lost"],
                "extra": r["extra"],
                "unacked": r["unacknowledged"],
                "redeliveries absorbed": r["duplicates_absorbed"],
                "redis - rows": r["redis_minus_rows"],
                "links lost": r["links_lost"],
                "reconnects failed": r["reconnects_failed"],
                "broker down s": ", ".join(f"{x['down_s']:.2f}" for x in r["restarts"]),
                "first commit after s": ", ".join(
                    f"{x['first_commit_after_s']:.2f}"
                    if x["first_commit_after_s"] is not None
                    else "-"
                    for x in r["restarts"]
                ),
                "backlog back after s": ", ".join(
                    f"{x['backlog_back_s']:.1f}" if x["backlog_back_s"] is not None else "never"
                    for x in r["restarts"]
                ),
                "longest without commit s": round(r["longest_without_commit_s"], 1),
            }
        )
    return (
        f"## Broker restarts under {a['robots']:,} robots, {data['started_at']} ({a['sensors']}: "
        f"{a['rate']} Hz, {a['batch']} per message, QoS 1, {a['duration']:.0f} s, restarts at "
        f"{', '.join(f'{x:.0f}' for x in a['restarts'])} s, {a['partitions']} simulator "
        f"processes, 1 bridge ({'shared' if a['shared'] else 'plain'} subscription); load "
        f"average at start "
        f"{data['machine']['load_average_at_start'][0]:.1f})\n\n"
        + report.markdown_table(rows, list(rows[0]))
    )


def _plot(path: Path, data: dict[str, Any]) -> None:
    """Per second of each run: produced and committed, backlog, lag p99; the restarts dashed."""
    produced: dict[str, tuple[list[float], list[float]]] = {}
    backlogs: dict[str, tuple[list[float], list[float]]] = {}
    lags: dict[str, tuple[list[float], list[float]]] = {}
    for k, r in enumerate(data["results"]):
        ps = r["per_second"]
        xs = [float(s) for s in range(len(ps["done"]))]
        series = Series(offered=ps["offered"], done=ps["done"], lag_p99_ms=ps["lag_p99_ms"])
        produced[f"run {k + 1} produced"] = (xs, [float(v) for v in ps["offered"]])
        produced[f"run {k + 1} committed"] = (xs, [float(v) for v in ps["done"]])
        backlogs[f"run {k + 1}"] = (xs, [float(v) for v in series.backlog()])
        lag_xs = [x for x, v in zip(xs, ps["lag_p99_ms"], strict=True) if v is not None]
        lags[f"run {k + 1}"] = (lag_xs, [v / 1000 for v in ps["lag_p99_ms"] if v is not None])
    first = data["results"][0]
    for i, at in enumerate(first["restart_at_s"]):
        for panel in (produced, backlogs, lags):
            top = max((y for _, ys in panel.values() for y in ys), default=1.0)
            panel[f"--restart {i + 1} (run 1)"] = ([at, at], [0.0, top])
    a = data["args"]
    report.plot_panels(
        path,
        title=f"Broker restarts under {a['robots']:,} robots ({a['sensors']}, QoS 1, 1 bridge)",
        xlabel="seconds since the fleet began publishing",
        panels=[
            ("readings/s", produced),
            ("backlog (readings)", backlogs),
            ("lag p99 (s)", lags),
        ],
    )


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    raise_open_files(args.robots * 2 + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="fleet-restart-"))
    data: dict[str, Any] = {**report.header("fleet-restart", args), "results": []}
    async with (
        scratch_database(servers, label="restart", prefix="fleetrestart") as dsn,
        scratch_counters(servers, label="restart", prefix="fleetrestart") as counters,
    ):
        for k in range(args.repeat):
            run_dir = workdir / f"run-{k + 1}"
            run_dir.mkdir()
            r = await run_once(
                args,
                dsn=dsn,
                counters=counters,
                redis_url=servers.redis_url,
                workdir=run_dir,
                ports=(args.port, args.port + 1),
            )
            r["load_average"] = list(os.getloadavg())
            data["results"].append(r)
            print(f"run {k + 1}: {_line(r)}", flush=True)
    markdown = _markdown(data)
    base = report.write(name="fleet-restart", data=data, markdown=markdown)
    _plot(base.with_name(base.name + ".png"), data)
    print(markdown)
    print(f"results: {base}.json .md .png")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fleet_restart", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--robots", type=int, default=10_000)
    p.add_argument("--partitions", type=int, default=4, help="simulator processes")
    p.add_argument("--sensors", default="imu", help="the simulator's --sensors")
    p.add_argument("--rate", default="imu=1", help="the simulator's --rate (Hz per robot)")
    p.add_argument("--batch", default="imu=4", help="the simulator's --batch (per message)")
    p.add_argument("--duration", type=float, default=90.0, help="seconds the fleet publishes")
    p.add_argument(
        "--restarts",
        type=float,
        nargs="*",
        default=[30.0, 60.0],
        help="seconds after the whole fleet publishes at which the broker restarts",
    )
    p.add_argument(
        "--shared",
        action="store_true",
        help="the bridge in a share group, as several bridges run (Mosquitto 2.0 loses what "
        "robots publish after its restart until the group subscribes again)",
    )
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--prefix", default="restart", help="robot ids are PREFIX-0000 ...")
    p.add_argument("--settle-s", type=float, default=30.0, help="give up after idle")
    p.add_argument("--port", type=int, default=27900, help="the broker's; its bridge's: +1")
    args = p.parse_args()
    if any(at >= args.duration for at in args.restarts):
        p.error("every restart must fall within --duration")
    report.require_plotting()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
