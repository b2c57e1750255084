"""HTTP figures with wrk (Debian's `wrk`, C, a Lua script per shape in loadtest/wrk/):

    python -m loadtest.http_wrk                                    # mix, older, ingest100
    python -m loadtest.http_wrk --baseline main --repeat 3 --sustain 60
    python -m loadtest.http_wrk --shapes ingest100 --connections 64 --server granian

Each round starts `python -m api` (API_WORKERS=--workers, on --port) on a scratch database
(one per tree, made by the tree's own migrations) with robots 1-200 registered, warms it up,
then drives each shape for --duration seconds with wrk (closed loop: --connections keep-alive
connections, zero wait) and records req/s, wrk's latency percentiles, errors and non-2xx
answers, the API's CPU per request (user + system of every API process, from /proc) and each
worker's CPU seconds, the PostgreSQL cluster's CPU per request (when it runs here),
`uptime`, and just before the run a probe of the machine: wrk's rate against bare responders
(loadtest.probe_server, as many as API workers, --probe-seconds), which moves with the
machine's speed at the time but not with the tree. With --baseline REV, REV is checked out
in a temporary worktree and measured in the same rounds, the order of the two trees
alternating. --sustain S
then runs each shape once more per tree for S seconds (issue 15's "sustained": at least 60 s).
Prints the medians per tree and shape; JSON and Markdown go to
loadtest/results/http-wrk-<stamp>.*.

Shapes: `mix`, loadtest.rest's REST mix (90 % 3-reading ingest in the older body shape, the
rest reads); `older`, the older clients' own mix (loadtest/locustfile_older.py's requests and
weights); `ingest100`, the contract's batch of 100 IMU readings per request (figure:
readings/s). The two mixes stamp each reading with the second it is sent in, as robots do
(since round 11; before, a run's readings all fell into one minute of reading time). wrk
costs a few µs of CPU per request, so the API keeps most of the 2 cores; PostgreSQL and Redis
share them.

Every run starts from empty tables, or with --history-hz H from an hour of H IMU, GPS and LiDAR
readings per second each of every robot the shape sends for (loadtest.scratch.fill_readings),
the counters rebuilt from them: a fleet in operation, where the mix's bucket aggregate has a
full hour behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack, ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from db.connect import open_pool
from harness.services import wait_for_port
from harness.settings import BenchSettings
from ingest.counters import Counters
from ingest.rebuild import rebuild_counters
from loadtest import report
from loadtest.accounting import postgres_cpu_seconds
from loadtest.api_cost import GranianApi, _workers
from loadtest.baseline import describe
from loadtest.baseline import trees as baseline_trees
from loadtest.rest import ApiProcess, HttpConnection
from loadtest.scratch import empty_readings, fill_readings, scratch_counters, scratch_database

LUA_DIR = Path(__file__).with_name("wrk")
SCRIPTS = {"mix": "mix.lua", "older": "older.lua", "ingest100": "ingest100.lua"}
READINGS_PER_REQUEST = {"ingest100": 100}
ROBOTS = {"mix": 10, "older": 10, "ingest100": 200}  # robots each shape sends for
REGISTERED = max(ROBOTS.values())
# The mix's types, so that the planner's statistics see each of them (with IMU alone, a read by
# type sorted every GPS row).
HISTORY_TYPES = ("imu", "gps", "lidar")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run_wrk(
    *, port: int, key: str, shape: str, connections: int, threads: int, seconds: float
) -> dict[str, Any]:
    """One wrk run; the figures its script's done() prints, plus req/s."""
    # In a second of its own: the scripts' timestamps are unique within a second of one run
    # (common.lua's next_us), and the warm-up's readings are still stored.
    time.sleep(1.01 - time.time() % 1)
    base_us = time.time_ns() // 1000
    if shape == "ingest100":
        base_us -= 3600 * 1_000_000  # an hour back: 100 ms per request per robot stays behind
    proc = subprocess.run(
        [
            "wrk",
            *("-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"),
            *("--timeout", "10s", "-s", str(LUA_DIR / SCRIPTS[shape])),
            f"http://127.0.0.1:{port}",
            *("--", key, str(base_us), str(threads), str(ROBOTS[shape])),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_LUA_DIR": str(LUA_DIR)},
        check=True,
    )
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    out: dict[str, Any] = orjson.loads(line)
    seconds_run = out["duration_us"] / 1e6
    out["requests_per_s"] = out["requests"] / seconds_run
    out["errors"] = sum(
        out[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    out["non_2xx"] = out["status_errors"]
    out["readings_per_s"] = out["requests_per_s"] * READINGS_PER_REQUEST.get(shape, 0)
    return out


def probe(*, port: int, workers: int, connections: int, threads: int, seconds: float) -> float:
    """wrk's rate against `workers` bare responders (loadtest.probe_server) for `seconds`:
    what this machine serves with no application behind, now."""
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "loadtest.probe_server", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(workers)
    ]
    try:
        wait_for_port(
            port,
            gone=lambda: next(
                (f"probe server exited {s.returncode}" for s in servers if s.poll() is not None),
                None,
            ),
        )
        time.sleep(0.2)  # every process listening, not only the first
        proc = subprocess.run(
            [
                "wrk",
                *("-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"),
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(timeout=10)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Requests/sec:"))
    rate = float(line.split()[1])
    if rate == 0 or "Socket errors" in proc.stdout or "Non-2xx" in proc.stdout:
        raise RuntimeError(f"the probe's responders failed wrk:\n{proc.stdout}")
    return rate


async def register_robots(port: int, key: str) -> None:
    conn = await HttpConnection.open(port, key)
    try:
        for r in range(1, REGISTERED + 1):
            status, body = await conn.request(
                "POST /api/robots", orjson.dumps({"id": str(r), "name": f"r{r}", "model": "b"})
            )
            if status not in (201, 409):
                raise RuntimeError(f"registering robot {r}: {status} {body!r}")
    finally:
        conn.close()


async def measure(
    *,
    root: Path,
    label: str,
    shapes: list[str],
    seconds: float,
    args: argparse.Namespace,
    dsn: str,
    redis_url: str,
    counters: Counters,
) -> dict[str, dict[str, Any]]:
    server = GranianApi if args.server == "granian" else ApiProcess
    api = server(
        dsn=dsn,
        redis_url=redis_url,
        redis_prefix=counters.prefix,
        workers=args.workers,
        log_path=Path(args.workdir) / f"http-wrk-{label}.log",
        root=root,
        **dict(kv.split("=", 1) for kv in args.set),
    )
    api.port = args.port  # our own port range, not any free port
    api.env["API_PORT"] = str(args.port)
    out: dict[str, dict[str, Any]] = {}
    with api:
        await register_robots(api.port, api.key)
        await asyncio.sleep(1.0)  # workers past their start-up
        for shape in shapes:
            # Every run starts from the same empty tables: the mix's bucket aggregate reads
            # the last hour of one robot, so its cost grows with the rows earlier runs left
            # (2.6 → 27 ms over 90 s of the mix), which favoured whichever tree ran first.
            await _empty(dsn, counters)
            if args.history_hz:
                await _history(dsn, counters, shape, args.history_hz)
            run_wrk(
                port=api.port,
                key=api.key,
                shape=shape,
                connections=args.connections,
                threads=args.threads,
                seconds=args.warmup,
            )
            probe_rate = (
                probe(
                    port=args.port + 1,
                    workers=args.workers,
                    connections=args.connections,
                    threads=args.threads,
                    seconds=args.probe_seconds,
                )
                if args.probe_seconds
                else None
            )
            load_before = uptime()
            pg_before = await _postgres_cpu(dsn)
            before = api.cpu_by_process()
            result = run_wrk(
                port=api.port,
                key=api.key,
                shape=shape,
                connections=args.connections,
                threads=args.threads,
                seconds=seconds,
            )
            after = api.cpu_by_process()
            pg_after = await _postgres_cpu(dsn)
            total_cpu = sum(after.values()) - sum(before.get(p, 0.0) for p in after)
            result["cpu_ms_per_request"] = total_cpu * 1000 / max(result["requests"], 1)
            result["postgres_cpu_ms_per_request"] = (
                None
                if pg_before is None or pg_after is None
                else (pg_after - pg_before) * 1000 / max(result["requests"], 1)
            )
            result["worker_cpu_s"] = sorted(
                (after[p] - before.get(p, 0.0) for p in _workers(api, after) if p in after),
                reverse=True,
            )
            result["probe_requests_per_s"] = probe_rate
            result["uptime_before"] = load_before
            result["uptime_after"] = uptime()
            out[shape] = result
            print(
                f"  {label:>8} {shape:>9} {seconds:>4g}s: {result['requests_per_s']:8,.0f} req/s"
                + (
                    f" ({result['readings_per_s']:,.0f} readings/s)"
                    if result["readings_per_s"]
                    else ""
                )
                + f"; p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms;"
                f" errors {result['errors']}, non-2xx {result['non_2xx']};"
                f" API CPU {result['cpu_ms_per_request']:.3f} ms/request, workers"
                f" {[round(x, 1) for x in result['worker_cpu_s']]} s;"
                + (
                    f" PostgreSQL CPU {result['postgres_cpu_ms_per_request']:.3f} ms/request;"
                    if result["postgres_cpu_ms_per_request"] is not None
                    else ""
                )
                + (f" probe {probe_rate:,.0f} req/s;" if probe_rate is not None else "")
                + f" load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return out


async def _empty(dsn: str, counters: Counters) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await empty_readings(conn)
    finally:
        await conn.close()
    await counters.clear()


async def _history(dsn: str, counters: Counters, shape: str, hz: float) -> None:
    """The hour before now: `hz` readings per second of each robot the shape sends for and of
    each type the mix sends (HISTORY_TYPES), the robots interleaved in time as a fleet's
    readings arrive; then the counters are rebuilt from the tables, as if those readings had
    come through the bridge."""
    robots = [str(r) for r in range(1, ROBOTS[shape] + 1)]
    total = int(hz * 3600 * len(robots) * len(HISTORY_TYPES))
    conn = await asyncpg.connect(dsn)
    try:
        await fill_readings(
            conn,
            robots=robots,
            first=0,
            last=total,
            start=datetime.now(UTC) - timedelta(hours=1),
            spacing=timedelta(hours=1) / total,
            sensor_types=HISTORY_TYPES,
        )
    finally:
        await conn.close()
    async with open_pool(dsn=dsn, max_size=1) as pool:
        await rebuild_counters(pool=pool, counters=counters)


async def _postgres_cpu(dsn: str) -> float | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await postgres_cpu_seconds(conn)
    finally:
        await conn.close()


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _median_or_none(runs: list[dict[str, Any]], key: str) -> float | None:
    """Runs recorded before a figure existed, or where it could not be read, lack it."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(statistics.median(values)) if values else None


def summary_rows(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    rows = []
    for label, tree in data["trees"].items():
        for shape in data["args"]["shapes"]:
            runs = [
                x["shapes"][shape]
                for x in data["runs"]
                if x["tree"] == label and x["kind"] == kind and shape in x["shapes"]
            ]
            if not runs:
                continue
            rows.append(
                {
                    "tree": f"{label} ({tree.split(' ')[0]})",
                    "shape": shape,
                    "req/s (median)": _median(runs, "requests_per_s"),
                    "req/s runs": ", ".join(f"{r['requests_per_s']:,.0f}" for r in runs),
                    "readings/s": _median(runs, "readings_per_s") or None,
                    "p50 ms": _median(runs, "p50_us") / 1000,
                    "p99 ms (median)": _median(runs, "p99_us") / 1000,
                    "p99 runs": ", ".join(f"{r['p99_us'] / 1000:.1f}" for r in runs),
                    "errors + non-2xx": sum(r["errors"] + r["non_2xx"] for r in runs),
                    "API CPU ms/req": _median(runs, "cpu_ms_per_request"),
                    "PostgreSQL CPU ms/req": _median_or_none(runs, "postgres_cpu_ms_per_request"),
                    "probe req/s runs": ", ".join(
                        f"{r['probe_requests_per_s']:,.0f}"
                        for r in runs
                        if r.get("probe_requests_per_s") is not None
                    ),
                    "workers' CPU s": "; ".join(
                        "/".join(f"{w:.1f}" for w in r["worker_cpu_s"]) for r in runs
                    ),
                }
            )
    return rows


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    data: dict[str, Any] = {
        **report.header("http_wrk", args),
        "runs": [],
    }
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        async with (
            AsyncExitStack() as databases,
            scratch_counters(servers, label="wrk") as counters,
        ):
            # A database per tree, made by that tree's own migrations.
            dsns = {
                label: await databases.enter_async_context(
                    scratch_database(servers, label=f"wrk_{label}", tree=root)
                )
                for label, root in trees
            }

            async def one(kind: str, label: str, root: Path, seconds: float) -> None:
                shapes = await measure(
                    root=root,
                    label=label,
                    shapes=args.shapes,
                    seconds=seconds,
                    args=args,
                    dsn=dsns[label],
                    redis_url=servers.redis_url,
                    counters=counters,
                )
                data["runs"].append({"tree": label, "kind": kind, "shapes": shapes})

            for r in range(args.repeat):
                print(f"round {r + 1} of {args.repeat}: {uptime()}", flush=True)
                order = trees if r % 2 == 0 else list(reversed(trees))
                for label, root in order:  # interleaved: machine load hits both alike
                    await one("burst", label, root, args.duration)
            if args.sustain:
                print(f"sustained, {args.sustain:g} s each: {uptime()}", flush=True)
                for label, root in trees:
                    await one("sustained", label, root, args.sustain)
    md = [
        f"## HTTP with wrk, {data['started_at']} ({args.workers} API workers, {args.server}, "
        f"{args.connections} connections, {args.threads} wrk thread(s); load average at start "
        f"{data['machine']['load_average_at_start'][0]:.1f})\n",
        f"{args.repeat} x {args.duration:g} s per tree and shape, interleaved:\n",
    ]
    rows = summary_rows(data, "burst")
    md.append(report.markdown_table(rows, list(rows[0])))
    if args.sustain:
        md.append(f"\nSustained: one run of {args.sustain:g} s per tree and shape:\n")
        rows = summary_rows(data, "sustained")
        md.append(report.markdown_table(rows, list(rows[0])))
    markdown = "\n".join(md)
    data["finished_at"] = datetime.now(UTC).isoformat()
    base = report.write(name="http-wrk", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.http_wrk", description=__doc__)
    p.add_argument("--shapes", nargs="+", choices=list(SCRIPTS), default=list(SCRIPTS))
    p.add_argument("--workers", type=int, default=2, help="API_WORKERS")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument(
        "--probe-seconds",
        type=float,
        default=3.0,
        help="before each run, wrk against bare responders (loadtest.probe_server, one per"
        " worker, on --port + 1) for this long: how fast the machine serves at the time; 0: no"
        " probe",
    )
    p.add_argument(
        "--history-hz",
        type=float,
        default=0.0,
        help="before each run, an hour of IMU, GPS and LiDAR readings at this rate each per"
        " robot (a fleet in operation: the mix's bucket aggregate has a full hour behind it);"
        " 0: empty tables",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sustain", type=float, default=0.0, help="seconds of one more run each")
    p.add_argument("--baseline", help="a git revision measured beside this tree, interleaved")
    p.add_argument("--port", type=int, default=8000, help="the API's port")
    p.add_argument("--workdir", default="/tmp", help="where the API's logs go")
    p.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE", help="API settings, both trees"
    )
    args = p.parse_args()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
