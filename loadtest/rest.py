"""REST benchmark: the older service's load mix, and read latency against table size.

    python -m loadtest.rest                                  # mix for 30 s, then 0/1M/10M rows
    python -m loadtest.rest --duration 20 --sizes 0 1000000  # shorter
    python -m loadtest.rest --workers 2 --connections 64 --sizes   # the mix only

It starts `python -m api` (API_WORKERS=--workers) on a free port against a scratch database
(dropped at the end) and a Redis prefix of its own, with a fresh admin key
(API_BOOTSTRAP_ADMIN_KEY) that every request sends as `X-API-Key`, registers robots 1-10, and
drives it with a lean asyncio HTTP/1.1 client: keep-alive connections, requests written by
hand, responses read by Content-Length. Locust (loadtest/locustfile.py) runs the same mix,
but its own Python per-request cost would eat most of the 2 cores the API needs; this driver
costs a few µs of CPU per request, and its own share is shown (client CPU seconds per request).

The mix (weights, zero wait): 100 POST /api/sensors (old shape: one robot, IMU + GPS + LiDAR,
5% of GPS entries with data null), 3 GET /api/robots, 3 GET /api/robots/{id},
1 GET /api/sensors?robot_id=, 1 GET /api/sensors?sensor_type=, 1 GET /api/stats,
1 moving average and 1 bucket aggregate (GET /api/sensors/aggregate).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from api.keys import generate_key
from db.connect import open_pool
from harness.procfs import children, cpu_seconds
from harness.services import ROOT, free_port, wait_for_port
from harness.settings import BenchSettings
from harness.spawn import spawn_logged
from ingest.rebuild import rebuild_counters
from loadtest import report, sustained
from loadtest.baseline import describe, python_env
from loadtest.baseline import trees as baseline_trees
from loadtest.scratch import scratch_counters, scratch_database

ROBOTS = [str(i) for i in range(1, 11)]
_IMU = {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0.01, "y": 0.02, "z": 0.03}}
_GPS = {"lat": 52.52, "lon": 13.405, "alt": 34.0}
_LIDAR = {"distance": 4.2, "angle": 12.5}


class _Clock:
    """Unique increasing timestamps: each POST is a new reading, never a no-op duplicate."""

    def __init__(self) -> None:
        self.last_us = int(time.time() * 1e6)

    def next_iso(self) -> str:
        self.last_us = max(int(time.time() * 1e6), self.last_us + 1)
        return datetime.fromtimestamp(self.last_us / 1e6, UTC).isoformat()


def ingest_body(rng: random.Random, clock: _Clock) -> bytes:
    gps = None if rng.random() < 0.05 else _GPS
    return orjson.dumps(
        {
            "robot_id": rng.choice(ROBOTS),
            "timestamp": clock.next_iso(),
            "sensors": [
                {"sensor_type": "IMU", "data": _IMU},
                {"sensor_type": "GPS", "data": gps},
                {"sensor_type": "LiDAR", "data": _LIDAR},
            ],
        }
    )


Request = tuple[str, str, bytes | None]  # endpoint label, method + path, body


def mix() -> list[tuple[int, Callable[[random.Random, _Clock], Request]]]:
    return [
        (100, lambda rng, c: ("POST /api/sensors", "POST /api/sensors", ingest_body(rng, c))),
        (3, lambda rng, c: ("GET /api/robots", "GET /api/robots", None)),
        (3, lambda rng, c: ("GET /api/robots/{id}", f"GET /api/robots/{rng.choice(ROBOTS)}", None)),
        (
            1,
            lambda rng, c: (
                "GET /api/sensors?robot_id",
                f"GET /api/sensors?robot_id={rng.choice(ROBOTS)}",
                None,
            ),
        ),
        (
            1,
            lambda rng, c: (
                "GET /api/sensors?sensor_type",
                "GET /api/sensors?sensor_type=gps",
                None,
            ),
        ),
        (1, lambda rng, c: ("GET /api/stats", "GET /api/stats", None)),
        (
            1,
            lambda rng, c: (
                "GET aggregate window=20",
                "GET /api/sensors/aggregate?sensor_type=imu&field=accel.x"
                f"&robot_id={rng.choice(ROBOTS)}&window=20",
                None,
            ),
        ),
        (
            1,
            lambda rng, c: (
                "GET aggregate bucket=1m",
                "GET /api/sensors/aggregate?sensor_type=imu&field=accel.x"
                f"&robot_id={rng.choice(ROBOTS)}&bucket=1m&fn=avg",
                None,
            ),
        ),
    ]


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; a request at a time."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, key: str
    ):
        self.reader, self.writer = reader, writer
        self.headers = f"Host: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n".encode()

    @classmethod
    async def open(cls, port: int, key: str) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port, key)

    async def request(self, line: str, body: bytes | None) -> tuple[int, bytes]:
        method, target = line.split(" ", 1)
        head = b"%s %s HTTP/1.1\r\n%s" % (method.encode(), target.encode(), self.headers)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for header in raw.split(b"\r\n"):
            if header[:15].lower() == b"content-length:":
                length = int(header[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class MixResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # warm-up included: the API's CPU is measured over the whole run


async def drive_mix(
    *, port: int, key: str, connections: int, duration_s: float, warmup_s: float, seed: int
) -> tuple[MixResult, float, float]:
    """Closed loop, zero wait: returns (result, measured seconds, client CPU seconds)."""
    weights_and_makers = mix()
    makers = [m for _, m in weights_and_makers]
    weights = [w for w, _ in weights_and_makers]
    result = MixResult()
    clock = _Clock()
    conns = [await HttpConnection.open(port, key) for _ in range(connections)]
    start = time.monotonic()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        conn = conns[k]
        while (now := time.monotonic()) < stop_at:
            label, line, body = rng.choices(makers, weights)[0](rng, clock)
            t0 = time.perf_counter()
            status, _ = await conn.request(line, body)
            elapsed = time.perf_counter() - t0
            result.sent += 1
            if now >= measure_from:
                result.latencies.setdefault(label, []).append(elapsed)
                key = f"{label} {status}"
                result.statuses[key] = result.statuses.get(key, 0) + 1
                if status >= 300 and not (label == "POST /api/sensors" and status == 201):
                    result.errors[label] = result.errors.get(label, 0) + 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(k) for k in range(connections)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for c in conns:
        c.close()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return result, duration_s, cpu


async def drive_rate(
    *, port: int, key: str, connections: int, rate: float, duration_s: float, seed: int
) -> tuple[sustained.Series, dict[str, int], float]:
    """Open loop: the mix offered at `rate` requests/s for `duration_s`, whatever the answers'
    pace. A request waits for a free connection when all are busy (that wait is part of its
    lag: from its scheduled time to its answer, so a server that falls behind shows it).
    Returns per-second series (offered by schedule, answered, each answer's lag), the
    non-2xx answers by endpoint, and the client's CPU seconds."""
    weights_and_makers = mix()
    makers = [m for _, m in weights_and_makers]
    weights = [w for w, _ in weights_and_makers]
    clock = _Clock()
    rng = random.Random(seed)
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await HttpConnection.open(port, key))
    seconds = int(duration_s) + 1
    series = sustained.Series(
        offered=[0] * seconds, done=[0] * seconds, lag_p99_ms=[None] * seconds, lag_ms=[]
    )
    lags: list[list[float]] = [[] for _ in range(seconds)]
    errors: dict[str, int] = {}
    total = int(rate * duration_s)
    start = time.monotonic()

    def at(k: int) -> None:
        while k >= len(series.done):
            series.offered.append(0)
            series.done.append(0)
            series.lag_p99_ms.append(None)
            lags.append([])

    async def one(scheduled: float, request: Request) -> None:
        label, line, body = request
        conn = await idle.get()
        try:
            status, _ = await conn.request(line, body)
        finally:
            idle.put_nowait(conn)
        now = time.monotonic()
        k = int(now - start)
        at(k)
        series.done[k] += 1
        lags[k].append((now - scheduled) * 1000)
        if status >= 300:
            errors[label] = errors.get(label, 0) + 1

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    async with asyncio.TaskGroup() as tasks:
        for i in range(total):
            scheduled = start + i / rate
            if (delay := scheduled - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            series.offered[int(i / rate)] += 1
            tasks.create_task(one(scheduled, rng.choices(makers, weights)[0](rng, clock)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    while not idle.empty():
        idle.get_nowait().close()
    series.lag_ms = lags
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return series, errors, cpu


async def sustained_main(args: argparse.Namespace, servers: BenchSettings) -> None:
    """`--rate`: each offered rate held for `--duration` s against this tree and `--baseline`
    (interleaved, `--repeat` times), with a verdict per run (loadtest.sustained)."""
    if args.duration < sustained.MIN_SECONDS:
        print(
            f"note: {args.duration:.0f} s < {sustained.MIN_SECONDS:.0f} s: a smoke run, no verdict"
        )
    data: dict[str, Any] = {
        **report.header("rest-sustained", args),
        "results": [],
    }
    workdir = Path(tempfile.gettempdir()) / f"rs-bench-rest-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        async with (
            scratch_database(servers, label="restsustain") as dsn,
            scratch_counters(servers, label="restsustain") as counters,
        ):
            for rate in args.rate:
                runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
                plotted: dict[str, sustained.Series] = {}
                for i in range(args.repeat):
                    for label, root in trees:
                        with ApiProcess(
                            dsn=dsn,
                            redis_url=servers.redis_url,
                            redis_prefix=counters.prefix,
                            workers=args.workers,
                            log_path=workdir / f"api-{label}.log",
                            root=root,
                        ) as api:
                            await register(api.port, api.key)
                            cpu0 = api.cpu_seconds()
                            series, errors, client_cpu = await drive_rate(
                                port=api.port,
                                key=api.key,
                                connections=args.connections,
                                rate=rate,
                                duration_s=args.duration,
                                seed=i,
                            )
                            api_cpu = api.cpu_seconds() - cpu0
                        v = sustained.verdict(series, offering_s=args.duration)
                        answered = sum(series.done)
                        run = {
                            "verdict": v.as_dict(),
                            "errors": errors,
                            "api_cpu_ms_per_request": api_cpu * 1000 / max(answered, 1),
                            "client_cpu_share": client_cpu / args.duration,
                            "per_second": {"offered": series.offered, "done": series.done},
                        }
                        runs[label].append(run)
                        plotted[f"{label} run {i + 1}"] = series
                        print(
                            f"  [{label}] {rate:,.0f} req/s: {v.line()}; errors {errors}; API CPU "
                            f"{run['api_cpu_ms_per_request']:.3f} ms/request",
                            flush=True,
                        )
                data["results"].append({"rate": rate, "runs": runs})
                sustained.plot(
                    report.RESULTS / f"rest-sustained-{data['started_at']}-{int(rate)}.png",
                    title=f"REST mix offered at {rate:,.0f} req/s ({args.workers} workers)",
                    runs=plotted,
                    unit="requests",
                )
    rows = []
    for res in data["results"]:
        for label, rs in res["runs"].items():
            rows.append(
                {
                    "offered req/s": res["rate"],
                    "tree": f"{label} ({data['trees'][label].split(' ')[0]})",
                    "answered/s (median)": statistics.median(
                        r["verdict"]["done_per_s"] for r in rs
                    ),
                    "sustained? (runs)": ", ".join(
                        "yes" if r["verdict"]["sustained"] else "no" for r in rs
                    ),
                    "lag p99 last third ms (runs)": ", ".join(
                        f"{r['verdict']['lag_p99_last_ms']:.0f}" for r in rs
                    ),
                    "API CPU ms/request (runs)": ", ".join(
                        f"{r['api_cpu_ms_per_request']:.3f}" for r in rs
                    ),
                    "errors (runs)": ", ".join(str(sum(r["errors"].values())) for r in rs),
                }
            )
    markdown = (
        f"## REST mix, sustained mode, {data['started_at']} ({args.duration:.0f} s per run, "
        f"{args.workers} workers, {args.connections} connections; load average at start "
        f"{data['machine']['load_average_at_start'][0]:.1f})\n\n"
        + report.markdown_table(rows, list(rows[0]) if rows else [])
    )
    base = report.write(name="rest-sustained", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md; plots rest-sustained-{data['started_at']}-*.png")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    s = sorted(values)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    return {"p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": s[-1] * 1000}


class ApiProcess:
    def __init__(
        self,
        *,
        dsn: str,
        redis_url: str,
        redis_prefix: str,
        workers: int,
        log_path: Path,
        root: Path = ROOT,
        port: int | None = None,
        **settings: str,
    ) -> None:
        self.port = port or free_port()
        self.root = root
        self.key = generate_key().token
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_prefix,
            "API_PORT": str(self.port),
            "API_WORKERS": str(workers),
            "API_BOOTSTRAP_ADMIN_KEY": self.key,
            **python_env(root),
            **{k.upper(): v for k, v in settings.items()},
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiProcess:
        self.proc = spawn_logged(self.command(), self.log_path, cwd=self.root, env=self.env)
        wait_for_port(self.port, timeout=30)
        return self

    def command(self) -> list[str]:
        return [sys.executable, "-m", "api"]

    def cpu_seconds(self) -> float:
        """User + system CPU of `python -m api` and its workers so far (Linux /proc)."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        """User + system CPU seconds of `python -m api` and each of its descendants, by pid."""
        assert self.proc is not None
        pids, out = [self.proc.pid], {}
        while pids:
            pid = pids.pop()
            try:
                out[pid] = cpu_seconds(pid)
                kids = children(pid)
            except FileNotFoundError:
                out.pop(pid, None)
                continue
            pids.extend(kids)
        return out

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def register(port: int, key: str) -> None:
    conn = await HttpConnection.open(port, key)
    for r in ROBOTS:
        status, body = await conn.request(
            "POST /api/robots", orjson.dumps({"id": r, "name": f"robot {r}", "model": "bench"})
        )
        if status not in (201, 409):
            raise RuntimeError(f"registering robot {r}: {status} {body[:200]!r}")
    conn.close()


async def load_rows(dsn: str, *, total: int, days: float = 7.0) -> float:
    """Adds rows so the table holds `total`: 100 robots x 4 types, spread over the last `days`.

    generate_series inside PostgreSQL: no client round trips; about as fast as COPY here.
    """
    conn = await asyncpg.connect(dsn)
    try:
        have: int = await conn.fetchval("SELECT count(*) FROM sensor_readings")
        t0 = time.perf_counter()
        chunk = 1_000_000
        span_us = int(days * 86400e6)
        for start in range(have, total, chunk):
            n = min(chunk, total - start)
            await conn.execute(
                """INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)
                   SELECT 'load-' || (g % 100),
                          (ARRAY['imu','gps','lidar','battery'])[g / 100 % 4 + 1],
                          now() - make_interval(secs => (g::float8 * $3 / $4) / 1e6),
                          now(), g,
                          '{"level": 50.0}'::jsonb
                   FROM generate_series($1::bigint, $2::bigint) g""",
                start,
                start + n - 1,
                float(span_us),
                float(total),
            )
        await conn.execute("ANALYZE sensor_readings")
        return time.perf_counter() - t0
    finally:
        await conn.close()


READ_PROBES = {
    "GET /api/sensors": "/api/sensors",
    "GET /api/sensors?robot_id=1 robot": "/api/sensors?robot_id=load-7",
    "GET /api/sensors?robot_id=3 robots": "/api/sensors?robot_id=load-7,load-8,load-9",
    "GET /api/sensors?sensor_type": "/api/sensors?sensor_type=gps",
    "GET /api/sensors?robot_id&sensor_type": "/api/sensors?robot_id=load-7&sensor_type=gps",
    "GET /api/sensors?since&until": "/api/sensors?since={since}&until={until}",
    "GET /api/sensors next page (cursor)": "cursor",
    "GET /api/stats": "/api/stats",
}


async def read_latency(*, port: int, key: str, requests: int) -> dict[str, dict[str, float]]:
    """One client, one request at a time: latency without queueing."""
    conn = await HttpConnection.open(port, key)
    until = datetime.now(UTC) - timedelta(days=1)
    since = until - timedelta(hours=1)
    out = {}
    try:
        _, first = await conn.request("GET /api/sensors?sensor_type=imu", None)
        cursor = orjson.loads(first).get("next_cursor")
        for label, probe in READ_PROBES.items():
            if probe == "cursor" and not cursor:
                continue
            template = (
                f"/api/sensors?sensor_type=imu&cursor={cursor}" if probe == "cursor" else probe
            )
            path = template.format(
                since=since.isoformat().replace("+00:00", "Z"),
                until=until.isoformat().replace("+00:00", "Z"),
            )
            times = []
            for i in range(requests + 20):
                t0 = time.perf_counter()
                status, body = await conn.request(f"GET {path}", None)
                if status != 200:
                    raise RuntimeError(f"{path}: {status} {body[:200]!r}")
                if i >= 20:  # warm: plans cached, pages in memory
                    times.append(time.perf_counter() - t0)
            out[label] = percentiles(times)
    finally:
        conn.close()
    return out


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    data: dict[str, Any] = report.header("rest", args)
    workdir = Path(tempfile.gettempdir()) / f"rs-bench-rest-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    async with (
        scratch_database(servers, label="rest") as dsn,
        scratch_counters(servers, label="rest") as counters,
    ):
        with ApiProcess(
            dsn=dsn,
            redis_url=servers.redis_url,
            redis_prefix=counters.prefix,
            workers=args.workers,
            log_path=workdir / "api.log",
        ) as api:
            await register(api.port, api.key)
            if args.duration > 0:
                runs = []
                for i in range(args.repeat):
                    api_cpu0 = api.cpu_seconds()
                    res, seconds, cpu = await drive_mix(
                        port=api.port,
                        key=api.key,
                        connections=args.connections,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        seed=i,
                    )
                    api_cpu = api.cpu_seconds() - api_cpu0
                    total = sum(len(v) for v in res.latencies.values())
                    all_lat = [x for v in res.latencies.values() for x in v]
                    run = {
                        "requests_per_s": total / seconds,
                        "overall": percentiles(all_lat),
                        "endpoints": {
                            k: {"requests_per_s": len(v) / seconds, **percentiles(v)}
                            for k, v in sorted(res.latencies.items())
                        },
                        "errors": res.errors,
                        "statuses": res.statuses,
                        "client_cpu_s_per_request": cpu / max(total, 1),
                        "client_cpu_share": cpu / (seconds + args.warmup),
                        "api_cpu_ms_per_request": api_cpu * 1000 / max(res.sent, 1),
                    }
                    print(
                        f"mix run {i + 1}: {run['requests_per_s']:,.0f} req/s, p50/p99 "
                        f"{run['overall']['p50_ms']:.1f}/{run['overall']['p99_ms']:.1f} ms, "
                        f"errors {res.errors}, client CPU {run['client_cpu_share']:.0%} of a core, "
                        f"API CPU {run['api_cpu_ms_per_request']:.3f} ms per request",
                        flush=True,
                    )
                    runs.append(run)
                runs.sort(key=lambda r: r["requests_per_s"])
                data["mix"] = runs[(len(runs) - 1) // 2]
                data["mix"]["runs_requests_per_s"] = [r["requests_per_s"] for r in runs]
            sizes: dict[str, Any] = {}
            for size in args.sizes:
                async with open_pool(dsn=dsn, max_size=1) as pool:
                    await pool.execute("TRUNCATE sensor_readings, counter_journal")
                    load_s = await load_rows(dsn, total=size) if size else 0.0
                    await rebuild_counters(pool=pool, counters=counters)
                lat = await read_latency(port=api.port, key=api.key, requests=args.read_requests)
                sizes[str(size)] = {"load_seconds": load_s, "latency": lat}
                print(f"{size:>10,} rows (loaded in {load_s:.0f} s):", flush=True)
                for label, p in lat.items():
                    print(f"    {label}: p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms")
            data["table_size"] = sizes
    base = report.write(name="rest", data=data, markdown=_markdown(data))
    _plots(base, data)
    print(_markdown(data))
    print(f"results: {base}.json .md -latency-vs-size.png")


def _markdown(data: dict[str, Any]) -> str:
    out = [f"## REST, {data['started_at']}\n"]
    mix_data = data.get("mix")
    if mix_data:
        out.append(
            f"Mix: **{mix_data['requests_per_s']:,.0f} req/s** (runs: "
            + ", ".join(f"{r:,.0f}" for r in mix_data["runs_requests_per_s"])
            + f"), p50 {mix_data['overall']['p50_ms']:.1f} ms, "
            f"p99 {mix_data['overall']['p99_ms']:.1f} ms; "
            f"client CPU {mix_data['client_cpu_share']:.0%} of a core\n"
        )
        rows = [{"endpoint": k, **v} for k, v in mix_data["endpoints"].items()]
        out.append(
            report.markdown_table(
                rows, ["endpoint", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
            )
        )
    sizes = data.get("table_size") or {}
    if sizes:
        labels = list(next(iter(sizes.values()))["latency"])
        rows = []
        for label in labels:
            row: dict[str, Any] = {"read (p50 / p99 ms)": label}
            for size, d in sizes.items():
                p = d["latency"].get(label)
                row[f"{int(size):,} rows"] = f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}" if p else ""
            rows.append(row)
        out.append("\nRead latency against table size (one client, sequential):\n")
        out.append(report.markdown_table(rows, list(rows[0])))
    return "\n".join(out)


def _plots(base: Path, data: dict[str, Any]) -> None:
    mix_data = data.get("mix")
    if mix_data:
        labels = list(mix_data["endpoints"])
        report.plot_bars(
            base.with_name(base.name + "-latency.png"),
            title=f"REST mix latency ({mix_data['requests_per_s']:,.0f} req/s)",
            ylabel="ms",
            labels=labels,
            groups={
                p: [mix_data["endpoints"][k][f"{p}_ms"] for k in labels]
                for p in ("p50", "p95", "p99")
            },
        )
    sizes = data.get("table_size") or {}
    if sizes:
        xs = [float(s) for s in sizes]
        labels = list(next(iter(sizes.values()))["latency"])
        series = {
            f"{label} p99": (
                xs,
                [sizes[s]["latency"].get(label, {}).get("p99_ms", 0.0) for s in sizes],
            )
            for label in labels
        }
        report.plot_lines(
            base.with_name(base.name + "-latency-vs-size.png"),
            title="Read latency p99 against table size",
            xlabel="rows in sensor_readings",
            ylabel="p99 ms",
            series=series,
        )


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.rest", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--workers", type=int, default=2, help="API_WORKERS")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured per mix run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="*", default=[0, 1_000_000, 10_000_000])
    p.add_argument("--read-requests", type=int, default=200)
    p.add_argument(
        "--rate",
        type=float,
        nargs="+",
        help="sustained mode: offer the mix at each RATE req/s (open loop) for --duration s "
        "and say whether backlog and lag stayed bounded (loadtest.sustained)",
    )
    p.add_argument("--baseline", help="sustained mode: a git revision run beside this tree")
    args = p.parse_args()
    report.require_plotting()
    servers = BenchSettings()
    if args.rate:
        uvloop.run(sustained_main(args, servers))
        return
    uvloop.run(main_async(args, servers))


if __name__ == "__main__":
    main()
