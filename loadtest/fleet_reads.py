"""Read latency and /api/stats as the fleet grows, with the live view's stream clients attached.

    python -m loadtest.fleet_reads --robots 1000 10000 --stream-clients 0 200
    python -m loadtest.fleet_reads --robots 1000 10000 --stream-clients 0 200 --baseline main
    python -m loadtest.fleet_reads --robots 100 --stream-clients 0 20 --sequential 20 \\
        --concurrent 40                                                        # a smoke run

For each robot count: a scratch database and Redis prefix (loadtest.scratch) holding that many
registered robots, each with `--readings-per-robot` IMU readings spread over the last hour
(filled with SQL, counters rebuilt from the table as the bridge does when Redis lost them), so
that /api/stats' per-minute counters and top-N and the robot list's live fields (connection
state from the status hash, one robot in ten offline; last seen) are populated. A private
Mosquitto (our config) and, in a process of its own, a stand-in for the live service
(loadtest.fleet_page's publisher): every robot's retained summary once a second, whether or
not anyone watches, as `python -m live` does with every robot active.

Then for each tree (this one, and `--baseline`, interleaved) and each stream-client count:
`python -m api` (`--workers`, each worker subscribed to the summaries with an identity of
its own), the stream clients attached in processes of their own (loadtest.live_stream_clients:
raw HTTP/1.1 readers, each watching `--watch` robots of its own, the detail views of the
"Live view" section; 0: all), and for each read, with the lean driver of loadtest.rest:
- `--sequential` requests, one at a time on one connection: latency without queueing;
- `--concurrent` requests over `--connections` connections as fast as answered: latency and
  rate under load;
each phase cut at `--max-phase-s` seconds (the requests done are counted); the API's CPU per
request (every API process, /proc), less the background CPU measured over `--idle-s` seconds
before the reads (the stream fan-out and the subscriptions), which is also reported; and the
Redis server's CPU per request (its INFO: the machine's Redis, so whatever else uses it
counts too). Then `--scrapes` GET /metrics, one at a time (the fleet's sequence gaps are
read from every robot's counters at each scrape).

The reads: GET /api/robots (the first page and one in the middle of the registry, by its
cursor; 100 robots with their live fields), GET /api/stats (the last hour, top 10 robots),
GET /api/sensors?robot_id= (one robot) and ?sensor_type=imu (a page after the first, by
cursor). `--profile DIR` samples the API's workers with py-spy during the stats read's
concurrent requests at the largest fleet without stream clients.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import uvloop

from db.connect import open_pool
from harness.services import Mosquitto
from harness.settings import BenchSettings
from ingest.counters import AnyRedis, Counters
from ingest.rebuild import rebuild_counters
from loadtest import report
from loadtest.api_cost import _workers, py_spy, summarize
from loadtest.baseline import describe
from loadtest.baseline import trees as baseline_trees
from loadtest.fleet_page import SummaryPublisher
from loadtest.live_stream_clients import ClientProcesses, ClientStats
from loadtest.rest import ApiProcess, HttpConnection, percentiles
from loadtest.scratch import fill_readings, register_robots, scratch_counters, scratch_database
from mqtt_auth.identities import Identity, Role

LIVE = "live"
PAGE = 100
READS = (
    "GET /api/robots (first page)",
    "GET /api/robots (middle page, cursor)",
    "GET /api/stats",
    "GET /api/sensors?robot_id (one robot)",
    "GET /api/sensors?sensor_type (cursor)",
)


STATS = READS[2]


async def redis_cpu_s(redis: AnyRedis) -> float:
    """The Redis server's CPU seconds so far (user + system, its own INFO)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def robot_ids(count: int) -> list[str]:
    return [f"robot-{i:05d}" for i in range(count)]


async def prepare_fleet(
    dsn: str, counters: Counters, robots: list[str], per_robot: int
) -> dict[str, float]:
    """Registers `robots`, stores `per_robot` readings of each over the last hour (one robot
    after the other, so every robot reads in every minute when per_robot >= 60), rebuilds the
    counters from the table and sets each robot's connection status. Returns the seconds
    each step took."""
    took: dict[str, float] = {}
    rows = len(robots) * per_robot
    now = datetime.now(UTC)
    async with open_pool(dsn=dsn, max_size=2) as pool:
        t0 = time.perf_counter()
        async with pool.acquire() as conn:
            await register_robots(conn, robots)
            await fill_readings(
                conn,
                robots=robots,
                first=0,
                last=rows,
                start=now - timedelta(hours=1),
                spacing=timedelta(hours=1) / rows,
            )
        took["fill_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await rebuild_counters(pool=pool, counters=counters)
        took["rebuild_counters_s"] = time.perf_counter() - t0
    now_ms = int(time.time() * 1000)
    await counters.set_statuses(
        (r, "offline" if i % 10 == 9 else "online", now_ms) for i, r in enumerate(robots)
    )
    return took


def _publish(  # noqa: PLR0917 (multiprocessing passes arguments by position)
    port: int,
    username: str,
    password: str,
    robots: list[str],
    started: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    with SummaryPublisher(port, username, password, robots):
        started.set()
        stop.wait()


class LiveStandIn:
    """The live service's summaries from a process of its own: this one measures latency, and
    a publishing thread here would hold the GIL against it."""

    def __init__(self, broker: Mosquitto, robots: list[str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._started = ctx.Event()
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_publish,
            args=(broker.port, LIVE, broker.passwords[LIVE], robots, self._started, self._stop),
            daemon=True,
        )

    def __enter__(self) -> LiveStandIn:
        self._proc.start()
        if not self._started.wait(60):
            raise RuntimeError("the summary publisher did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


@dataclass
class Phase:
    latencies: list[float]
    seconds: float
    errors: int


async def run_phase(
    *, port: int, key: str, target: str, requests: int, connections: int, max_s: float
) -> Phase:
    """`requests` GETs of `target` over `connections` connections, each one request at a
    time, until done or `max_s` seconds have passed."""
    conns = [await HttpConnection.open(port, key) for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    left = requests
    start = time.monotonic()
    stop_at = start + max_s

    async def worker(conn: HttpConnection) -> None:
        nonlocal left, errors
        while left > 0 and time.monotonic() < stop_at:
            left -= 1
            t0 = time.perf_counter()
            status, _ = await conn.request(f"GET {target}", None)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return Phase(latencies, time.monotonic() - start, errors)


async def read_targets(port: int, key: str, robots: list[str]) -> dict[str, str]:
    """The path of each read; the cursors are this API process's own (CURSOR_SECRET)."""
    conn = await HttpConnection.open(port, key)
    try:
        cursor: str | None = None
        for _ in range(len(robots) // PAGE // 2):
            path = f"/api/robots?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
            status, body = await conn.request(f"GET {path}", None)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {body[:200]!r}")
            cursor = orjson.loads(body)["next_cursor"]
        status, body = await conn.request(f"GET /api/sensors?sensor_type=imu&limit={PAGE}", None)
        if status != 200:
            raise RuntimeError(f"sensors by type: {status} {body[:200]!r}")
        sensors_cursor = orjson.loads(body)["next_cursor"]
    finally:
        conn.close()
    middle = f"/api/robots?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
    return dict(
        zip(
            READS,
            (
                f"/api/robots?limit={PAGE}",
                middle,
                "/api/stats?window=1h&top=10",
                f"/api/sensors?robot_id={robots[len(robots) // 3]}&limit={PAGE}",
                f"/api/sensors?sensor_type=imu&limit={PAGE}&cursor={sensors_cursor}",
            ),
            strict=True,
        )
    )


async def live_token(port: int, key: str) -> str:
    conn = await HttpConnection.open(port, key)
    try:
        status, body = await conn.request("POST /api/live/token", b"{}")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"live token: {status} {body[:200]!r}")
    token: str = orjson.loads(body)["token"]
    return token


def stream_queries(token: str, robots: list[str], clients: int, watch: int) -> list[str]:
    queries = []
    for k in range(clients):
        params = [("token", token)]
        if watch:
            params += [("robot_id", robots[(k * watch + j) % len(robots)]) for j in range(watch)]
        queries.append(urlencode(params))
    return queries


async def measure_reads(
    api: ApiProcess,
    robots: list[str],
    args: argparse.Namespace,
    redis: AnyRedis,
    profile: str | None,
) -> dict[str, Any]:
    """Every read, sequential then concurrent, with the API's and Redis' CPU per request;
    `profile`: py-spy the API's workers during the stats read's concurrent phase, into
    `--profile` with this name."""
    targets = await read_targets(api.port, api.key, robots)
    for target in targets.values():  # warm: plans cached, pages in memory
        await run_phase(
            port=api.port, key=api.key, target=target, requests=10, connections=1, max_s=10
        )
    cpu0, t0 = api.cpu_seconds(), time.monotonic()
    await asyncio.sleep(args.idle_s)
    background = (api.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    out: dict[str, Any] = {"background_cpu_share": background, "reads": {}}
    for label, target in targets.items():
        phases: dict[str, Any] = {}
        for name, requests, connections in (
            ("sequential", args.sequential, 1),
            ("concurrent", args.concurrent, args.connections),
        ):
            spied: list[Path] = []
            with ExitStack() as stack:
                if profile and label == STATS and name == "concurrent":
                    workers = _workers(api, api.cpu_by_process())
                    spied = stack.enter_context(py_spy(workers, args.profile, profile))
                cpu0, redis0 = api.cpu_seconds(), await redis_cpu_s(redis)
                phase = await run_phase(
                    port=api.port,
                    key=api.key,
                    target=target,
                    requests=requests,
                    connections=connections,
                    max_s=args.max_phase_s,
                )
                cpu = api.cpu_seconds() - cpu0 - background * phase.seconds
                redis_cpu = await redis_cpu_s(redis) - redis0
            if spied:  # py-spy has written them on leaving
                (args.profile / f"{profile}-summary.txt").write_text(summarize(spied))
            done = len(phase.latencies)
            phases[name] = {
                "requests": done,
                "errors": phase.errors,
                "requests_per_s": done / phase.seconds,
                "api_cpu_ms_per_request": cpu * 1000 / max(done, 1),
                "redis_cpu_ms_per_request": redis_cpu * 1000 / max(done, 1),
                **percentiles(phase.latencies),
            }
        out["reads"][label] = phases
        seq, conc = phases["sequential"], phases["concurrent"]
        print(
            f"      {label}: sequential p50/p99 {seq['p50_ms']:.1f}/{seq['p99_ms']:.1f} ms; "
            f"{args.connections} connections p50/p99 {conc['p50_ms']:.1f}/"
            f"{conc['p99_ms']:.1f} ms, {conc['requests_per_s']:,.0f} req/s; API CPU "
            f"{seq['api_cpu_ms_per_request']:.2f} / {conc['api_cpu_ms_per_request']:.2f} "
            f"ms/request, Redis {seq['redis_cpu_ms_per_request']:.2f} / "
            f"{conc['redis_cpu_ms_per_request']:.2f}; errors {seq['errors'] + conc['errors']}",
            flush=True,
        )
    # A Prometheus scrape of the API: its fleet-wide sequence gaps walk every robot.
    cpu0, redis0 = api.cpu_seconds(), await redis_cpu_s(redis)
    phase = await run_phase(
        port=api.port,
        key=api.key,
        target="/metrics",
        requests=args.scrapes,
        connections=1,
        max_s=args.max_phase_s,
    )
    done = max(len(phase.latencies), 1)
    out["scrape"] = {
        "requests": len(phase.latencies),
        "errors": phase.errors,
        "api_cpu_ms_per_request": (api.cpu_seconds() - cpu0 - background * phase.seconds)
        * 1000
        / done,
        "redis_cpu_ms_per_request": (await redis_cpu_s(redis) - redis0) * 1000 / done,
        **percentiles(phase.latencies),
    }
    sc = out["scrape"]
    print(
        f"      GET /metrics: p50 {sc['p50_ms']:.0f} ms, API CPU {sc['api_cpu_ms_per_request']:.1f}"
        f" ms, Redis {sc['redis_cpu_ms_per_request']:.1f} ms per scrape",
        flush=True,
    )
    return out


def stream_figures(stats: list[ClientStats], seconds: float) -> dict[str, Any]:
    latencies = [x for s in stats for x in s.latencies]
    return {
        "delivered_per_s": sum(s.window_summaries for s in stats) / seconds,
        "told_missed_per_s": sum(s.window_missed for s in stats) / seconds,
        "latency": percentiles(latencies),
    }


async def one_configuration(
    *,
    root: Path,
    label: str,
    clients: int,
    robots: list[str],
    broker: Mosquitto,
    dsn: str,
    prefix: str,
    args: argparse.Namespace,
    servers: BenchSettings,
    redis: AnyRedis,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    with ExitStack() as stack:
        api = stack.enter_context(
            ApiProcess(
                dsn=dsn,
                redis_url=servers.redis_url,
                redis_prefix=prefix,
                workers=args.workers,
                log_path=args.workdir / f"api-{label}.log",
                root=root,
                port=args.port_base + 10,
                mqtt_url=broker.url,
                live_provision_identity="true",
                mqtt_auth_dir=str(broker.auth.directory),
                mosquitto_pid_file=str(broker.auth.pid_file),
                live_max_clients=str(clients + 10),
                max_connections=str(clients + 200),
            )
        )
        await asyncio.sleep(2)  # each worker's identity added and its subscription made
        streams = None
        if clients:
            token = await live_token(api.port, api.key)
            streams = stack.enter_context(
                ClientProcesses(
                    port=api.port,
                    queries=stream_queries(token, robots, clients, args.watch),
                    processes=args.client_processes,
                    latency="ts",
                )
            )
            await asyncio.sleep(2)  # past the current state each stream gets on opening
            streams.measuring.set()
        t0 = time.monotonic()
        profile = None
        if args.profile and not clients and len(robots) == max(args.robots):
            profile = f"fleet-reads-stats-{len(robots)}-{label}"
        result = await measure_reads(api, robots, args, redis, profile)
        if profile:
            result["profile"] = f"{profile}-summary.txt"
        result["load_average_before"] = load_before
        result["load_average_after"] = os.getloadavg()
        if streams is not None:
            seconds = time.monotonic() - t0
            streams.measuring.clear()
            result["streams"] = stream_figures(streams.stop(), seconds)
            s = result["streams"]
            print(
                f"      streams: {s['delivered_per_s']:,.0f} summaries/s delivered, "
                f"{s['told_missed_per_s']:,.0f}/s told missed, latency p50/p99 "
                f"{s['latency']['p50_ms']:.0f}/{s['latency']['p99_ms']:.0f} ms",
                flush=True,
            )
    print(
        f"      background API CPU {result['background_cpu_share']:.0%} of a core; load "
        f"{load_before[0]:.1f} -> {result['load_average_after'][0]:.1f}",
        flush=True,
    )
    return result


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> dict[str, Any]:
    data: dict[str, Any] = {**report.header("fleet_reads", args), "fleets": []}
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        broker = stack.enter_context(
            Mosquitto(workdir=args.workdir / "mosquitto", port=args.port_base + 1)
        )
        broker.add(Identity(LIVE, Role.LIVE, None))
        for count in args.robots:
            robots = robot_ids(count)
            print(f"{count:,} robots", flush=True)
            async with (
                scratch_database(servers, label=f"r{count}", prefix=args.scratch_prefix) as dsn,
                scratch_counters(servers, label=f"r{count}", prefix=args.scratch_prefix) as ctr,
            ):
                took = await prepare_fleet(dsn, ctr, robots, args.readings_per_robot)
                print(f"  prepared: {took}", flush=True)
                fleet: dict[str, Any] = {"robots": count, "prepare": took, "runs": []}
                with LiveStandIn(broker, robots):
                    for clients in args.stream_clients:
                        for label, root in trees:
                            print(f"  [{label}] {clients} stream clients", flush=True)
                            result = await one_configuration(
                                root=root,
                                label=label,
                                clients=clients,
                                robots=robots,
                                broker=broker,
                                dsn=dsn,
                                prefix=ctr.prefix,
                                args=args,
                                servers=servers,
                                redis=ctr.redis,
                            )
                            fleet["runs"].append({"tree": label, "clients": clients, **result})
                data["fleets"].append(fleet)
    return data


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for fleet in data["fleets"]:
        for run in fleet["runs"]:
            for read, phases in run["reads"].items():
                seq, conc = phases["sequential"], phases["concurrent"]
                rows.append(
                    {
                        "robots": fleet["robots"],
                        "streams": run["clients"],
                        "tree": f"{run['tree']} ({data['trees'][run['tree']].split(' ')[0]})",
                        "read": read,
                        "sequential p50 / p95 / p99 ms": (
                            f"{seq['p50_ms']:.1f} / {seq['p95_ms']:.1f} / {seq['p99_ms']:.1f}"
                        ),
                        f"{data['args']['connections']} conns p50 / p95 / p99 ms": (
                            f"{conc['p50_ms']:.1f} / {conc['p95_ms']:.1f} / {conc['p99_ms']:.1f}"
                        ),
                        "req/s": conc["requests_per_s"],
                        "API CPU ms/req (seq / conc)": (
                            f"{seq['api_cpu_ms_per_request']:.2f} / "
                            f"{conc['api_cpu_ms_per_request']:.2f}"
                        ),
                        "Redis CPU ms/req (seq / conc)": (
                            f"{seq['redis_cpu_ms_per_request']:.2f} / "
                            f"{conc['redis_cpu_ms_per_request']:.2f}"
                        ),
                        "requests (seq, conc)": f"{seq['requests']}, {conc['requests']}",
                    }
                )
    return rows


def _compact(data: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per read and fleet size, a column per tree and stream-client count: sequential
    p50 / concurrent p99 ms, and API + Redis CPU ms per request (concurrent)."""
    rows = []
    for read in (*READS, "GET /metrics"):
        for fleet in data["fleets"]:
            row: dict[str, Any] = {"read": read, "robots": fleet["robots"]}
            for r in fleet["runs"]:
                column = f"{r['tree']}, {r['clients']} streams"
                if read == "GET /metrics":
                    sc = r["scrape"]
                    row[column] = (
                        f"{sc['p50_ms']:.0f} ms; CPU {sc['api_cpu_ms_per_request']:.0f} + "
                        f"{sc['redis_cpu_ms_per_request']:.0f}"
                    )
                    continue
                seq, conc = r["reads"][read]["sequential"], r["reads"][read]["concurrent"]
                row[column] = (
                    f"{seq['p50_ms']:.1f} / {conc['p99_ms']:.0f}; CPU "
                    f"{conc['api_cpu_ms_per_request']:.2f} + {conc['redis_cpu_ms_per_request']:.2f}"
                )
            rows.append(row)
    return rows


def _markdown(data: dict[str, Any]) -> str:
    a = data["args"]
    out = [
        f"## Reads against the fleet's size, {data['started_at']} ({a['workers']} API "
        f"workers; load average at start {data['machine']['load_average_at_start'][0]:.1f})\n",
        "Trees: " + "; ".join(f"{k}: {v}" for k, v in data["trees"].items()) + "\n",
    ]
    compact = _compact(data)
    if compact:
        out.append(
            "Each cell: sequential p50 / concurrent p99 ms; CPU ms per request (concurrent) of "
            "the API + of Redis. GET /metrics: p50 of the scrapes; CPU ms per scrape.\n"
        )
        out.append(report.markdown_table(compact, list(compact[0])))
    rows = _rows(data)
    if rows:
        out.append("\nEvery figure:\n")
        out.append(report.markdown_table(rows, list(rows[0])))
    runs = [
        {
            "robots": f["robots"],
            "streams": r["clients"],
            "tree": r["tree"],
            "background API CPU": f"{r['background_cpu_share']:.0%}",
            "GET /metrics p50 ms (API / Redis CPU ms)": (
                f"{r['scrape']['p50_ms']:.0f} ({r['scrape']['api_cpu_ms_per_request']:.0f} / "
                f"{r['scrape']['redis_cpu_ms_per_request']:.0f})"
            ),
            "summaries delivered/s": r.get("streams", {}).get("delivered_per_s"),
            "told missed/s": r.get("streams", {}).get("told_missed_per_s"),
            "stream latency p50 / p99 ms": (
                f"{r['streams']['latency']['p50_ms']:.0f} / {r['streams']['latency']['p99_ms']:.0f}"
                if "streams" in r
                else ""
            ),
            "load average before -> after": (
                f"{r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f}"
            ),
        }
        for f in data["fleets"]
        for r in f["runs"]
    ]
    if runs:
        out.append("\nEach configuration's background and streams:\n")
        out.append(report.markdown_table(runs, list(runs[0])))
    return "\n".join(out)


def _plots(base: Path, data: dict[str, Any]) -> list[Path]:
    """Per read, latency against the fleet's size, a line per tree and stream-client count:
    p50 of the sequential requests, p99 of the concurrent ones."""
    xs = [float(f["robots"]) for f in data["fleets"]]
    configurations = [(r["tree"], r["clients"]) for r in data["fleets"][0]["runs"]]
    paths = []
    for phase, stat in (("sequential", "p50"), ("concurrent", "p99")):
        panels = {
            read: {
                f"{tree}, {clients} streams": (
                    xs,
                    [
                        next(
                            r["reads"][read][phase][f"{stat}_ms"]
                            for r in f["runs"]
                            if (r["tree"], r["clients"]) == (tree, clients)
                        )
                        for f in data["fleets"]
                    ],
                )
                for tree, clients in configurations
            }
            for read in READS
        }
        path = base.with_name(f"{base.name}-{phase}-{stat}.png")
        report.plot_grid(
            path,
            title=f"Read latency {stat}, {phase} requests, against registered robots",
            xlabel="registered robots",
            ylabel=f"{stat} ms",
            panels=panels,
            logx=True,
            logy=True,
        )
        paths.append(path)
    cpu = {
        read: {
            f"{tree}, {clients} streams: {who}": (
                xs,
                [
                    next(
                        (r["scrape"] if read == "GET /metrics" else r["reads"][read]["concurrent"])[
                            f"{who.lower()}_cpu_ms_per_request"
                        ]
                        for r in f["runs"]
                        if (r["tree"], r["clients"]) == (tree, clients)
                    )
                    for f in data["fleets"]
                ],
            )
            for tree, clients in configurations
            for who in ("API", "Redis")
        }
        for read in (*READS, "GET /metrics")
    }
    path = base.with_name(f"{base.name}-cpu.png")
    report.plot_grid(
        path,
        title="CPU per request (concurrent requests; /metrics: one at a time)",
        xlabel="registered robots",
        ylabel="CPU ms per request",
        panels=cpu,
        logx=True,
        logy=True,
    )
    paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.fleet_reads", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--robots", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--stream-clients", type=int, nargs="+", default=[0, 200])
    p.add_argument("--watch", type=int, default=5, help="robots per stream client (0: all)")
    p.add_argument("--client-processes", type=int, default=4)
    p.add_argument("--readings-per-robot", type=int, default=60, help="over the last hour")
    p.add_argument("--workers", type=int, default=2, help="API_WORKERS")
    p.add_argument("--sequential", type=int, default=200, help="requests per read, one at a time")
    p.add_argument("--concurrent", type=int, default=400, help="requests per read, concurrent")
    p.add_argument("--connections", type=int, default=16, help="for the concurrent requests")
    p.add_argument("--max-phase-s", type=float, default=10.0, help="a phase's longest run")
    p.add_argument("--idle-s", type=float, default=3.0, help="background CPU measured so long")
    p.add_argument("--scrapes", type=int, default=5, help="GET /metrics, one at a time")
    p.add_argument("--baseline", help="a git revision measured beside this tree, interleaved")
    p.add_argument("--port-base", type=int, default=27100, help="broker +1, API +10")
    p.add_argument("--scratch-prefix", default="rs_bench", help="scratch database and Redis")
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy the API's workers during /api/stats' concurrent requests at the largest "
        "fleet without stream clients; stacks and summaries here",
    )
    args = p.parse_args()
    report.require_plotting()
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    with tempfile.TemporaryDirectory(prefix="rs-fleet-reads-") as tmp:
        args.workdir = Path(tmp)
        data = uvloop.run(main_async(args, BenchSettings()))
    data["finished_at"] = report.stamp()
    markdown = _markdown(data)
    base = report.write(name="fleet-reads", data=data, markdown=markdown)
    plots = _plots(base, data)
    print(markdown)
    print(f"results: {base}.json .md; plots: {', '.join(p.name for p in plots)}")
    errors = sum(
        phase["errors"]
        for f in data["fleets"]
        for r in f["runs"]
        for phases in [*r["reads"].values(), {"scrape": r["scrape"]}]
        for phase in phases.values()
    )
    if errors:
        raise SystemExit("fleet_reads: some reads were answered with an error (see the JSON)")


if __name__ == "__main__":
    main()
