"""End-to-end ingest benchmark: publishers → our Mosquitto → 1-2 bridges → PostgreSQL + Redis.

    python -m loadtest.ingest --source mqtt nats   # the same matrix on Mosquitto and on a
                                                   # 3-node NATS cluster (docs/nats.md)
    python -m loadtest.ingest --nats-kill          # + a NATS node killed mid-stream: loss and
                                                   # recovery time

    python -m loadtest.ingest                      # the full matrix, flat out, + half-rate runs
    python -m loadtest.ingest --quick              # 1 and 10 readings/message, 1 bridge, QoS 1
    python -m loadtest.ingest --per-message 10 --bridges 2 --qos 1 --readings 300000 --repeat 3

Everything is its own: a scratch database (dropped at the end), a Redis prefix (deleted), a
Mosquitto with our mosquitto.conf on a free port (a fresh one per configuration, so no session
or queue leaks from one configuration into the next), bridges as real `python -m bridge`
processes. Traffic goes to 127.0.0.1 only.

What it measures, per configuration:
- committed readings/s, sustained: between the commits of 10% and 90% of the readings (from
  the commit times, see loadtest.commits), and overall: all readings / first send to last commit;
- publish-to-commit latency p50/p95/p99/max over every reading (and publish-to-received);
- loss (published and acknowledged, not stored) and duplicates (rows per identity can only be 1
  by the primary key, so: redeliveries the bridge absorbed, and Redis counts above the rows)
  by exact count;
- the publishers' own rate, and each figure's ratio to the ceilings measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from db.connect import open_pool
from harness.bridge import BridgeProcess
from harness.nats import NatsBridges, NatsCluster
from harness.services import ROOT, Mosquitto
from harness.settings import BenchSettings
from ingest.counters import Counters
from ingest.rebuild import rebuild_counters
from loadtest import report, sustained
from loadtest.accounting import RunWatch
from loadtest.baseline import describe, python_env
from loadtest.baseline import trees as baseline_trees
from loadtest.ceilings import (
    CEILING_SUBSCRIBER,
    Ceiling,
    mosquitto_ceiling,
    postgres_ceilings,
    publisher_rate,
)
from loadtest.nats_kill import node_kill, print_kill
from loadtest.scratch import (
    empty_readings,
    fill_readings,
    register_robots,
    scratch_counters,
    scratch_database,
)
from loadtest.wire_publisher import publisher_identities, robot_ids, run_publishers
from mqtt_auth.identities import Identity, Role
from telemetry.topics import NATS_MQTT_STREAM


@dataclass(frozen=True, slots=True)
class Bench:
    """What every run of one benchmark shares: its scratch database and Redis prefix, its
    robots (registered, one group per publisher), its work directory, and how long a run
    waits for the last rows once the publishers are done."""

    dsn: str
    redis_url: str
    counters: Counters
    robots: list[list[str]]
    workdir: Path
    settle_s: float


@dataclass(frozen=True, slots=True)
class Config:
    per_message: int
    bridges: int
    qos: int
    rate: float = 0.0  # readings/s in total; 0 = flat out
    # mqtt: our Mosquitto; nats: a 3-node NATS cluster, publishers spread over its nodes'
    # MQTT listeners, the bridges sharing its JetStream consumer.
    source: str = "mqtt"

    @property
    def label(self) -> str:
        pace = f"{self.rate / 1000:.0f}k/s" if self.rate else "flat out"
        plural = "s" if self.bridges > 1 else ""
        shape = f"{self.per_message}/msg, {self.bridges} bridge{plural}, QoS {self.qos}, {pace}"
        return f"NATS x3: {shape}" if self.source == "nats" else shape


def _start_broker(
    config: Config,
    *,
    robots: list[list[str]],
    dsn: str,
    redis_url: str,
    prefix: str,
    workdir: Path,
    root: Path,
) -> tuple[Mosquitto | NatsCluster, list[tuple[str, str]], list[int], list[BridgeProcess]]:
    """The configuration's broker, started with the publishers' and bridges' identities, its
    MQTT ports, and its bridges (not started)."""
    names = [f"bench-bridge-{k}" for k in range(config.bridges)]
    broker: Mosquitto | NatsCluster
    if config.source == "nats":
        broker = NatsCluster(workdir=Path(tempfile.mkdtemp(dir=workdir, prefix="nats-")))
        logins = [(i.username, broker.add(i)) for i in publisher_identities(robots)]
        for name in names:
            broker.add(Identity(name, Role.BRIDGE, None))
        broker.start()
        on_nats = NatsBridges(broker, dsn, prefix, workdir)
        on_nats.setup_stream()
        ports = [n.ports.mqtt for n in broker.nodes]
        settings = {name: on_nats.settings(name) for name in names}
        mqtt_urls = dict.fromkeys(names, "mqtt://127.0.0.1:1")
    else:
        broker = Mosquitto(workdir=Path(tempfile.mkdtemp(dir=workdir, prefix="mosquitto-")))
        logins = [(i.username, broker.add(i)) for i in publisher_identities(robots)]
        for name in names:
            broker.add(Identity(name, Role.BRIDGE, None))
        broker.start()
        ports = [broker.port]
        settings = {name: {"share_group": broker.share_group} for name in names}
        mqtt_urls = {name: broker.url_for(name) for name in names}
    bridges = [
        BridgeProcess(
            database_url=dsn,
            redis_url=redis_url,
            redis_prefix=prefix,
            mqtt_url=mqtt_urls[name],
            log_path=workdir / f"bridge-{k}.log",
            client_id=name,
            **settings[name],
            **python_env(root),
        )
        for k, name in enumerate(names)
    ]
    return broker, logins, ports, bridges


async def run_config(
    config: Config,
    bench: Bench,
    *,
    readings: int,
    profile_dir: Path | None = None,
    root: Path = ROOT,
    keep_rows: bool = False,
) -> dict[str, Any]:
    """One configuration's run. `keep_rows`: the table keeps what it holds (a pre-filled
    history); every figure counts only the rows of this run (`ts` from its start on)."""
    conn = await asyncpg.connect(bench.dsn)
    if not keep_rows:
        await empty_readings(conn)
    await bench.counters.clear()
    if keep_rows:
        # What a bridge does when it finds Redis empty, done before the run instead of in it
        # (over 25 hours of rows, the history included).
        async with open_pool(dsn=bench.dsn, max_size=1) as pool:
            await rebuild_counters(pool=pool, counters=bench.counters)
    since = time.time() - 1.0  # the publishers' readings are stamped with their send time
    broker, logins, ports, bridges = _start_broker(
        config,
        robots=bench.robots,
        dsn=bench.dsn,
        redis_url=bench.redis_url,
        prefix=bench.counters.prefix,
        workdir=bench.workdir,
        root=root,
    )
    for b in bridges:
        b.root = root
    watch = RunWatch(dsn=bench.dsn, bridges=bridges, since=since)
    try:
        for b in bridges:
            b.start()
        await watch.start(conn)
        spies = [_py_spy(b, config, k, profile_dir) for k, b in enumerate(bridges) if profile_dir]
        pubs = await run_publishers(
            port=ports[0],
            more_ports=ports[1:],
            logins=logins,
            robots=bench.robots,
            readings=readings,
            per_message=config.per_message,
            qos=config.qos,
            rate=config.rate,
        )
        published = sum(p.readings for p in pubs)
        messages = sum(p.messages for p in pubs)
        await watch.wait_stored(published, bench.settle_s)
        await watch.stop(conn)
        for b in bridges:
            b.stop()
        for spy in spies:  # py-spy writes its file when the bridge exits
            spy.wait(timeout=30)
        figures = await watch.figures(
            conn,
            bench.counters,
            published=published,
            messages=messages,
            started=min(p.started_at for p in pubs),
            keep_rows=keep_rows,
            seconds=bool(config.rate),
        )
    finally:
        await watch.close()
        for b in bridges:
            if b.running:
                b.kill()
        broker.stop()
        await conn.close()
    return {
        "config": asdict(config),
        "label": config.label,
        "published_readings": published,
        "published_messages": messages,
        "publisher_readings_per_s": publisher_rate(pubs),
        "publisher_max_behind_s": max(p.max_behind_s for p in pubs),
        **figures,
    }


def _py_spy(bridge: BridgeProcess, config: Config, k: int, out: Path) -> subprocess.Popen[bytes]:
    """Samples a bridge (both threads, native frames off) until it exits; collapsed stacks."""
    assert bridge.proc is not None
    out.mkdir(parents=True, exist_ok=True)
    name = f"bridge-{config.per_message}msg-{config.bridges}b-qos{config.qos}"
    name += f"-{int(config.rate)}rps-{k}.txt" if config.rate else f"-flat-{k}.txt"
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            *("record", "--format", "raw", "--rate", "100", "--nonblocking", "--threads"),
            *("--output", str(out / name), "--pid", str(bridge.proc.pid)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median sustained rate (a whole run, so its figures belong together)."""
    ranked = sorted(runs, key=lambda r: r["sustained_readings_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["sustained_runs"] = [r["sustained_readings_per_s"] for r in runs]
    chosen["lost_runs"] = [r["lost"] for r in runs]
    return chosen


async def measure_ceilings(
    *,
    shapes: list[int],
    qoses: list[int],
    robots: list[list[str]],
    readings: int,
    workdir: Path,
    repeat: int,
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for per_message in shapes:
        for qos in qoses:
            key = f"{per_message}/{qos}"
            out[key] = {}
            for sub in ("c", "paho"):
                rates, pub_rates = [], []
                for _ in range(repeat):
                    broker = Mosquitto(
                        workdir=Path(tempfile.mkdtemp(dir=workdir, prefix="mq-ceil-"))
                    )
                    logins = [(i.username, broker.add(i)) for i in publisher_identities(robots)]
                    sub_password = broker.add(Identity(CEILING_SUBSCRIBER, Role.BRIDGE, None))
                    with broker:
                        c: Ceiling = await mosquitto_ceiling(
                            port=broker.port,
                            logins=logins,
                            subscriber_login=(CEILING_SUBSCRIBER, sub_password),
                            robots=robots,
                            readings=readings,
                            per_message=per_message,
                            qos=qos,
                            subscriber=sub,
                        )
                    rates.append(c.readings_per_s)
                    pub_rates.append(c.publisher_readings_per_s or 0.0)
                    print(
                        f"  ceiling {c.name} {per_message}/msg QoS {qos}: "
                        f"{c.readings_per_s:,.0f} readings/s ({c.received}/{c.readings}); "
                        f"publishers {c.publisher_readings_per_s or 0:,.0f}/s"
                    )
                out[key][f"mosquitto_{sub}"] = statistics.median(rates)
                out[key][f"mosquitto_{sub}_publisher"] = statistics.median(pub_rates)
    return out


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    shapes = args.per_message
    bridges_list = args.bridges
    qoses = args.qos
    robots = robot_ids(publishers=args.publishers, robots_per_publisher=args.robots_per_publisher)
    flat = [r for group in robots for r in group]
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-ingest-"))
    started = time.time()
    data: dict[str, Any] = report.header("ingest", args)
    async with (
        scratch_database(servers, label="ingest") as dsn,
        scratch_counters(servers, label="ingest") as counters,
    ):
        conn = await asyncpg.connect(dsn)
        await register_robots(conn, flat)
        await conn.close()
        bench = Bench(dsn, servers.redis_url, counters, robots, workdir, args.settle_s)

        pg: dict[str, list[float]] = {}
        mq: dict[str, dict[str, float]] = {}
        if args.ceilings:
            print("PostgreSQL ceilings (batches of 5,000, one connection):")
        for _ in range(args.repeat if args.ceilings else 0):
            for c in await postgres_ceilings(
                dsn=dsn, robots=flat, readings=args.readings, batch=5000, counters=counters
            ):
                pg.setdefault(c.name, []).append(c.readings_per_s)
                print(f"  {c.name}: {c.readings_per_s:,.0f} rows/s")
        pg_median = {k: statistics.median(v) for k, v in pg.items()}
        data["postgres_ceilings"] = pg_median

        if args.ceilings:
            print("Mosquitto ceilings (same publishers and shapes, do-nothing subscribers):")
            mq = await measure_ceilings(
                shapes=shapes,
                qoses=qoses,
                robots=robots,
                readings=args.readings,
                workdir=workdir,
                repeat=args.repeat,
            )
        data["mosquitto_ceilings"] = mq

        results = []
        matrix = [
            (src, pm, nb, q)
            for pm in shapes
            for nb in bridges_list
            for q in qoses
            for src in args.source
            # The bridges read NATS's $MQTT_msgs, which holds QoS 1 publishes only (docs/nats.md).
            if not (src == "nats" and q == 0)
        ]
        for source, per_message, n_bridges, qos in matrix:
            config = Config(per_message=per_message, bridges=n_bridges, qos=qos, source=source)
            runs = []
            for _ in range(args.repeat):
                r = await run_config(
                    config, bench, readings=args.readings, profile_dir=args.profile
                )
                _print_result(r)
                runs.append(r)
            result = _median_run(runs)
            results.append(result)
            if args.half_rate and qos == 1:
                half = Config(
                    per_message=per_message,
                    bridges=n_bridges,
                    qos=qos,
                    rate=round(result["sustained_readings_per_s"] / 2, -2),
                    source=source,
                )
                runs = []
                for _ in range(args.repeat):
                    r = await run_config(
                        half, bench, readings=min(args.readings, int(half.rate * args.half_rate_s))
                    )
                    _print_result(r)
                    runs.append(r)
                results.append(_median_run(runs))
        data["nats_kill"] = (
            await _kills(dsn=dsn, counters=counters, workdir=workdir, seconds=args.nats_kill_s)
            if args.nats_kill
            else []
        )
    _add_ratios(results, mosquitto=mq, postgres=pg_median)
    data["results"] = results
    data["seconds"] = time.time() - started
    base = report.write(name="ingest", data=data, markdown=_markdown(data))
    _plots(base, results)
    print(_markdown(data))
    print(f"results: {base}.json .md -throughput.png -latency.png")


async def sustained_main(args: argparse.Namespace, servers: BenchSettings) -> None:
    """`--sustain`: each offered rate held for `--duration` s, verdict per run (loadtest.sustained),
    this tree and `--baseline` interleaved, medians of `--repeat` runs."""
    robots = robot_ids(publishers=args.publishers, robots_per_publisher=args.robots_per_publisher)
    flat = [r for group in robots for r in group]
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-sustain-"))
    if args.duration < sustained.MIN_SECONDS:
        print(
            f"note: {args.duration:.0f} s < {sustained.MIN_SECONDS:.0f} s: a smoke run, no verdict"
        )
    data: dict[str, Any] = {
        **report.header("ingest-sustained", args),
        "results": [],
    }
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        async with (
            scratch_database(servers, label="sustain") as dsn,
            scratch_counters(servers, label="sustain") as counters,
        ):
            conn = await asyncpg.connect(dsn)
            await register_robots(conn, flat)
            await conn.close()
            bench = Bench(dsn, servers.redis_url, counters, robots, workdir, args.settle_s)
            filled = 0  # history rows stored by fill_readings
            for prefill in args.prefill:
                if prefill:
                    conn = await asyncpg.connect(dsn)
                    t0 = time.perf_counter()
                    await fill_readings(conn, robots=flat, first=filled, last=prefill)
                    await conn.close()
                    print(
                        f"table filled to {prefill:,} history rows in "
                        f"{time.perf_counter() - t0:.0f} s",
                        flush=True,
                    )
                    filled = prefill
                for config in _sustained_configs(args):
                    runs: dict[str, list[dict[str, Any]]] = {t: [] for t, _ in trees}
                    for _ in range(args.repeat):
                        for label, root in trees:
                            r = await run_config(
                                config,
                                bench,
                                readings=int(config.rate * args.duration),
                                root=root,
                                keep_rows=bool(filled),
                                profile_dir=args.profile / label if args.profile else None,
                            )
                            series = sustained.Series(**r["per_second"])
                            v = sustained.verdict(series, offering_s=args.duration)
                            r["verdict"] = v.as_dict()
                            r["tree"] = label
                            r["history_rows"] = filled
                            print(f"  [{label}] {config.label}: {v.line()}", flush=True)
                            _print_result(r)
                            runs[label].append(r)
                    summary = _sustained_summary(config, runs)
                    summary["history_rows"] = filled
                    data["results"].append(summary)
                    _sustained_plot(config, runs, data["started_at"], history_rows=filled)
    markdown = _sustained_markdown(data)
    base = report.write(name="ingest-sustained", data=data, markdown=markdown)
    if len(args.prefill) > 1:
        prefill_plot(data, base.with_name(base.name + "-table-size.png"))
    print(markdown)
    print(f"results: {base}.json .md; plots ingest-sustained-{data['started_at']}-*.png")


def prefill_plot(data: dict[str, Any], path: Path) -> None:
    """Committed readings/s (median) and CPU per reading against the rows stored before the
    run, one group of bars per configuration and tree."""
    results = data["results"]
    levels = sorted({r["history_rows"] for r in results})
    labels = [f"{n / 1e6:g}M rows stored" if n else "empty table" for n in levels]
    groups: dict[str, list[float]] = {}
    for r in results:
        for tree, t in r["trees"].items():
            name = f"{r['label']} [{tree}]"
            groups.setdefault(name, [0.0] * len(levels))
            groups[name][levels.index(r["history_rows"])] = t["done_per_s_median"]
    report.plot_bars(
        path,
        title="Committed readings/s over 60 s against the table's size",
        ylabel="readings/s",
        labels=labels,
        groups=groups,
    )
    print(f"plot: {path}")


def _sustained_configs(args: argparse.Namespace) -> list[Config]:
    return [
        Config(per_message, n_bridges, qos, rate=rate)
        for per_message in args.per_message
        for n_bridges in args.bridges
        for qos in args.qos
        for rate in args.sustain
    ]


def _sustained_summary(config: Config, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"config": asdict(config), "label": config.label, "trees": {}}
    for label, rs in runs.items():
        done = [r["verdict"]["done_per_s"] for r in rs]
        ranked = sorted(rs, key=lambda r: r["verdict"]["done_per_s"])
        median = ranked[(len(ranked) - 1) // 2]
        out["trees"][label] = {
            "done_per_s_median": statistics.median(done),
            "done_per_s_runs": done,
            "sustained_runs": [r["verdict"]["sustained"] for r in rs],
            "lag_p99_last_ms_runs": [r["verdict"]["lag_p99_last_ms"] for r in rs],
            "bridge_cpu_us_per_message_runs": [r["bridge_cpu_us_per_message"] for r in rs],
            "postgres_cpu_us_per_reading_runs": [r["postgres_cpu_us_per_reading"] for r in rs],
            "lost_runs": [r["lost"] for r in rs],
            "median_run": {k: v for k, v in median.items() if k != "commits"},
        }
    return out


def _sustained_plot(
    config: Config, runs: dict[str, list[dict[str, Any]]], stamp: str, *, history_rows: int = 0
) -> None:
    series = {
        f"{label} run {k + 1}": sustained.Series(**r["per_second"])
        for label, rs in runs.items()
        for k, r in enumerate(rs)
    }
    name = f"ingest-sustained-{stamp}-{config.per_message}msg-{config.bridges}b-{int(config.rate)}"
    stored = f", {history_rows / 1e6:g}M rows stored before" if history_rows else ""
    name += f"-{history_rows // 1_000_000}M" if history_rows else ""
    report.RESULTS.mkdir(exist_ok=True)
    sustained.plot(
        report.RESULTS / f"{name}.png",
        title=f"Offered {config.rate:,.0f} readings/s: {config.label}{stored}",
        runs=series,
        unit="readings",
    )


def _sustained_markdown(data: dict[str, Any]) -> str:
    rows = []
    for res in data["results"]:
        for label, t in res["trees"].items():
            m = t["median_run"]
            rows.append(
                {
                    "configuration": res["label"]
                    + (
                        f", {res['history_rows'] / 1e6:g}M rows stored"
                        if res["history_rows"]
                        else ""
                    ),
                    "tree": f"{label} ({data['trees'][label].split(' ')[0]})",
                    "committed/s (median)": t["done_per_s_median"],
                    "runs": ", ".join(f"{x:,.0f}" for x in t["done_per_s_runs"]),
                    "sustained? (runs)": ", ".join(
                        "yes" if x else "no" for x in t["sustained_runs"]
                    ),
                    "lag p99 last third ms (runs)": ", ".join(
                        f"{x:.0f}" for x in t["lag_p99_last_ms_runs"]
                    ),
                    "bridge CPU µs/msg (runs)": ", ".join(
                        f"{x:.1f}" for x in t["bridge_cpu_us_per_message_runs"]
                    ),
                    "PostgreSQL CPU µs/reading (runs)": ", ".join(
                        "-" if x is None else f"{x:.1f}"
                        for x in t["postgres_cpu_us_per_reading_runs"]
                    ),
                    "lost (runs)": ", ".join(str(x) for x in t["lost_runs"]),
                    "backlog slope/s (median run)": m["verdict"]["backlog_slope_per_s"],
                }
            )
    return (
        f"## Ingest, sustained mode, {data['started_at']} ({data['args']['duration']:.0f} s per "
        f"run; load average at start {data['machine']['load_average_at_start'][0]:.1f})\n\n"
        + report.markdown_table(rows, list(rows[0]) if rows else [])
    )


async def _kills(
    *, dsn: str, counters: Counters, workdir: Path, seconds: float
) -> list[dict[str, Any]]:
    print("NATS node killed mid-stream (robots with failover, 2 bridges):")
    kills = []
    for kill_leader in (None, NATS_MQTT_STREAM, "ROBOSENSE"):
        k = await node_kill(
            dsn=dsn, counters=counters, workdir=workdir, kill_leader=kill_leader, seconds=seconds
        )
        print_kill(k)
        kills.append(k)
    return kills


def _add_ratios(
    results: list[dict[str, Any]],
    *,
    mosquitto: dict[str, dict[str, float]],
    postgres: dict[str, float],
) -> None:
    """Each result as a fraction of the ceilings measured in the same run."""
    mq, pg_median = mosquitto, postgres
    for r in results:
        cfg = r["config"]
        ceil = mq.get(f"{cfg['per_message']}/{cfg['qos']}", {})
        r["vs_mosquitto_c"] = (
            r["overall_readings_per_s"] / ceil["mosquitto_c"] if ceil.get("mosquitto_c") else None
        )
        r["vs_mosquitto_paho"] = (
            r["overall_readings_per_s"] / ceil["mosquitto_paho"]
            if ceil.get("mosquitto_paho")
            else None
        )
        merge = pg_median.get("PostgreSQL merge_readings (COPY; merge on a conflict)")
        write_path = pg_median.get("write path (merge + journal + Redis)")
        r["vs_pg_merge"] = r["sustained_readings_per_s"] / merge if merge else None
        r["vs_write_path"] = r["sustained_readings_per_s"] / write_path if write_path else None


def _print_result(r: dict[str, Any]) -> None:
    lat = r["latency"] or {}
    print(
        f"  {r['label']}: sustained {r['sustained_readings_per_s']:,.0f}/s, overall "
        f"{r['overall_readings_per_s']:,.0f}/s, publishers {r['publisher_readings_per_s']:,.0f}/s; "
        f"p50/p99 {lat.get('p50_ms', 0):.0f}/{lat.get('p99_ms', 0):.0f} ms; "
        f"stored {r['stored']}/{r['published_readings']} lost {r['lost']} "
        f"bridge CPU {r['bridge_cpu_us_per_message']:.1f} µs/msg "
        f"PostgreSQL CPU {r['postgres_cpu_us_per_reading'] or 0:.1f} µs/reading "
        f"dup-absorbed {r['duplicates_absorbed']} redis-minus-rows {r['redis_minus_rows']}",
        flush=True,
    )


def _markdown(data: dict[str, Any]) -> str:
    rows = []
    for r in data["results"]:
        lat = r["latency"] or {}
        rows.append(
            {
                "configuration": r["label"],
                "sustained readings/s": r["sustained_readings_per_s"],
                "overall readings/s": r["overall_readings_per_s"],
                "msgs/s": r["overall_readings_per_s"] / r["config"]["per_message"],
                "publishers readings/s": r["publisher_readings_per_s"],
                "p50 ms": lat.get("p50_ms"),
                "p95 ms": lat.get("p95_ms"),
                "p99 ms": lat.get("p99_ms"),
                "lost": r["lost"],
                "dups absorbed": r["duplicates_absorbed"],
                "redis - rows": r["redis_minus_rows"],
                "÷ mosquitto_sub": r["vs_mosquitto_c"],
                "÷ paho sub": r["vs_mosquitto_paho"],
                "÷ PG merge": r["vs_pg_merge"],
                "÷ write path": r["vs_write_path"],
            }
        )
    cols = list(rows[0]) if rows else []
    ceil_rows = [{"ceiling": k, "readings/s": v} for k, v in data["postgres_ceilings"].items()] + [
        {
            "ceiling": f"{name} ({shape.split('/')[0]}/msg, QoS {shape.split('/')[1]})",
            "readings/s": v,
        }
        for shape, d in data["mosquitto_ceilings"].items()
        for name, v in d.items()
    ]
    kills = data.get("nats_kill") or []
    kill_md = (
        "\n### NATS node killed mid-stream (same run)\n\n"
        + report.markdown_table(kills, list(kills[0]))
        if kills
        else ""
    )
    return (
        f"## Ingest, {data['started_at']}\n\n"
        + report.markdown_table(rows, cols)
        + kill_md
        + "\n### Ceilings (same run)\n\n"
        + report.markdown_table(ceil_rows, ["ceiling", "readings/s"])
    )


def _plots(base: Path, results: list[dict[str, Any]]) -> None:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in results:
        t, n = r["commits"]["t"], r["commits"]["n"]
        if not t:
            continue
        buckets: dict[int, int] = {}
        for ti, ni in zip(t, n, strict=True):
            buckets[int(ti * 2)] = buckets.get(int(ti * 2), 0) + ni
        xs = [k / 2 for k in range(0, max(buckets) + 1)]
        series[r["label"]] = (xs, [buckets.get(int(x * 2), 0) * 2 for x in xs])
    report.plot_lines(
        base.with_name(base.name + "-throughput.png"),
        title="Committed readings/s over time (0.5 s buckets)",
        xlabel="seconds since the first publish",
        ylabel="readings/s",
        series=series,
    )
    with_latency = [r for r in results if r["latency"]]
    report.plot_bars(
        base.with_name(base.name + "-latency.png"),
        title="Publish → commit latency",
        ylabel="ms (log)",
        logy=True,
        labels=[r["label"] for r in with_latency],
        groups={p: [r["latency"][f"{p}_ms"] for r in with_latency] for p in ("p50", "p95", "p99")},
    )


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.ingest", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--per-message", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--bridges", type=int, nargs="+", default=[1, 2])
    p.add_argument("--qos", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    p.add_argument("--readings", type=int, default=200_000, help="per configuration and ceiling")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes")
    p.add_argument("--robots-per-publisher", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="runs per figure; the median is kept")
    p.add_argument(
        "--no-half-rate",
        dest="half_rate",
        action="store_false",
        help="skip the latency runs at half the measured sustained rate (QoS 1)",
    )
    p.add_argument("--half-rate-s", type=float, default=10.0, help="length of a half-rate run")
    p.add_argument("--settle-s", type=float, default=5.0, help="QoS 0: give up after idle")
    p.add_argument("--profile", type=Path, help="py-spy each bridge; collapsed stacks here")
    p.add_argument("--no-ceilings", dest="ceilings", action="store_false")
    p.add_argument("--quick", action="store_true", help="1 and 10 per message, 1 bridge, QoS 1")
    p.add_argument(
        "--source",
        nargs="+",
        default=["mqtt"],
        choices=["mqtt", "nats"],
        help="the broker(s): our Mosquitto, a 3-node NATS cluster (docs/nats.md), or both",
    )
    p.add_argument(
        "--nats-kill", action="store_true", help="also kill a NATS node mid-stream (three cases)"
    )
    p.add_argument("--nats-kill-s", type=float, default=20.0, help="length of a node-kill run")
    p.add_argument(
        "--sustain",
        type=float,
        nargs="+",
        metavar="RATE",
        help="sustained mode: offer each RATE readings/s (total) for --duration s and say "
        "whether backlog and lag stayed bounded (loadtest.sustained); no flat-out runs",
    )
    p.add_argument("--duration", type=float, default=60.0, help="sustained mode: seconds offered")
    p.add_argument("--baseline", help="sustained mode: a git revision run beside this tree")
    p.add_argument(
        "--prefill",
        type=int,
        nargs="+",
        default=[0],
        metavar="ROWS",
        help="sustained mode: run every configuration with the table holding ROWS history rows "
        "(filled with SQL, ascending; the runs' own rows stay too)",
    )
    args = p.parse_args()
    report.require_plotting()
    if args.quick:
        args.per_message, args.bridges, args.qos = [1, 10], [1], [1]
    servers = BenchSettings()
    if args.sustain:
        if args.qos == [0, 1]:
            args.qos = [1]
        uvloop.run(sustained_main(args, servers))
        return
    uvloop.run(main_async(args, servers))


if __name__ == "__main__":
    main()
