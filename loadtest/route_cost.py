"""What each read of the REST mixes costs, route by route (BENCHMARKS.md, round 12):

    python -m loadtest.route_cost                          # every route, this tree
    python -m loadtest.route_cost --baseline c3c73b6 --rounds 2 --routes filtered_imu robots

A mix's rate is the cost of its average request, and a read that is 1 request in 40 can cost
more of the machine than its share: in the older clients' mix the reads were a fifth of the
requests and ~40 % of the CPU. Per tree and round this starts `python -m api` (2 workers) on a
scratch database with robots 1-200 registered, fills it with --fill seconds of the older
clients' mix (loadtest/wrk/older.lua), then drives each route alone with wrk (closed loop,
--connections keep-alive connections, one robot of 10 at random per request) for --seconds
after a 2 s warm-up, and records req/s and the CPU seconds per request of the API's processes
and of the PostgreSQL cluster (from /proc). `healthz` is the floor: a route with no work
behind it (through FastAPI's router; the LeanRoutes skip it). With --baseline REV both trees
are measured, alternating, in each round. Prints a line per route; JSON and Markdown go to
loadtest/results/route-cost-<stamp>.*.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import uvloop

from harness.settings import BenchSettings
from loadtest import report
from loadtest.baseline import describe
from loadtest.baseline import trees as baseline_trees
from loadtest.http_wrk import LUA_DIR, _postgres_cpu, register_robots, run_wrk
from loadtest.rest import ApiProcess
from loadtest.scratch import scratch_counters, scratch_database

_ONE_ROUTE = LUA_DIR / "one_route.lua"

# name: (method, path with {r} for a robot id). The older clients' mix's reads, then ours.
ROUTES: dict[str, tuple[str, str]] = {
    "healthz": ("GET", "/healthz"),
    "robots": ("GET", "/api/robots"),
    "robot": ("GET", "/api/robots/{r}"),
    "filtered_imu": (
        "GET",
        "/api/sensors/filtered?robot_id={r}&sensor_type=IMU&field=acceleration.x&window_size=5",
    ),
    "filtered_gps": (
        "GET",
        "/api/sensors/filtered?robot_id={r}&sensor_type=GPS&field=latitude&window_size=5",
    ),
    "older_by_robot": ("GET", "/api/sensors?robot_id={r}&sensor_type=IMU&page=1&page_size=100"),
    "older_by_type": ("GET", "/api/sensors?sensor_type=GPS&page=1&page_size=100"),
    "stats": ("GET", "/api/stats"),
    "update": ("PUT", "/api/robots/{r}"),
    "by_robot": ("GET", "/api/sensors?robot_id={r}"),
    "by_type": ("GET", "/api/sensors?sensor_type=gps"),
    "moving_average": (
        "GET",
        "/api/sensors/aggregate?sensor_type=imu&field=accel.x&robot_id={r}&window=20",
    ),
    "buckets": (
        "GET",
        "/api/sensors/aggregate?sensor_type=imu&field=accel.x&robot_id={r}&bucket=1m&fn=avg",
    ),
}


def wrk_route(
    *, port: int, key: str, method: str, path: str, connections: int, seconds: float
) -> dict[str, Any]:
    """wrk's figures for one route alone (one_route.lua's done() line)."""
    proc = subprocess.run(
        [
            "wrk",
            *("-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s"),
            *("-s", str(_ONE_ROUTE), f"http://127.0.0.1:{port}"),
            *("--", key, str(time.time_ns() // 1000), "1", "10"),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "WRK_LUA_DIR": str(LUA_DIR),
            "ROUTE_METHOD": method,
            "ROUTE_PATH": path,
        },
        check=True,
    )
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    out: dict[str, Any] = orjson.loads(line)
    return out


async def measure(
    *, root: Path, label: str, args: argparse.Namespace, servers: BenchSettings
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    async with (
        scratch_counters(servers, label="route") as counters,
        scratch_database(servers, label=f"route_{label}", tree=root) as dsn,
    ):
        api = ApiProcess(
            dsn=dsn,
            redis_url=servers.redis_url,
            redis_prefix=counters.prefix,
            workers=2,
            log_path=Path(args.workdir) / f"route-cost-{label}.log",
            root=root,
        )
        api.port = args.port
        api.env["API_PORT"] = str(args.port)
        with api:
            await register_robots(api.port, api.key)
            run_wrk(
                port=api.port,
                key=api.key,
                shape="older",
                connections=args.connections,
                threads=1,
                seconds=args.fill,
            )
            for name in args.routes:
                method, path = ROUTES[name]
                drive = partial(
                    wrk_route,
                    port=api.port,
                    key=api.key,
                    method=method,
                    path=path,
                    connections=args.connections,
                )
                drive(seconds=2)
                pg_before = await _postgres_cpu(dsn)
                before = api.cpu_by_process()
                result = drive(seconds=args.seconds)
                after = api.cpu_by_process()
                pg_after = await _postgres_cpu(dsn)
                n = max(result["requests"], 1)
                cpu = sum(after.values()) - sum(before.get(p, 0.0) for p in after)
                failed = sum(
                    result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
                )
                if failed or result["status_errors"]:
                    raise RuntimeError(
                        f"{name}: {failed} errors, {result['status_errors']} non-2xx"
                    )
                out[name] = {
                    "requests_per_s": result["requests"] / (result["duration_us"] / 1e6),
                    "api_cpu_ms_per_request": cpu * 1000 / n,
                    "postgres_cpu_ms_per_request": (
                        None
                        if pg_before is None or pg_after is None
                        else (pg_after - pg_before) * 1000 / n
                    ),
                    "bytes_per_request": result["bytes"] / n,
                }
                r = out[name]
                pg = r["postgres_cpu_ms_per_request"]
                print(
                    f"  {label:>8} {name:>15}: {r['requests_per_s']:7,.0f} req/s; API CPU"
                    f" {r['api_cpu_ms_per_request']:.3f} ms/request"
                    + (f", PostgreSQL {pg:.3f}" if pg is not None else "")
                    + f"; {r['bytes_per_request']:,.0f} bytes/response",
                    flush=True,
                )
    return out


def summary_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in data["args"]["routes"]:
        for label, tree in data["trees"].items():
            runs = [r["routes"][name] for r in data["runs"] if r["tree"] == label]
            api = [r["api_cpu_ms_per_request"] for r in runs]
            pg = [
                r["postgres_cpu_ms_per_request"]
                for r in runs
                if r["postgres_cpu_ms_per_request"] is not None
            ]
            rows.append(
                {
                    "route": name,
                    "tree": f"{label} ({tree.split(' ')[0]})",
                    "API CPU ms/req (median)": statistics.median(api),
                    "API runs": ", ".join(f"{x:.3f}" for x in api),
                    "PostgreSQL CPU ms/req": statistics.median(pg) if pg else None,
                    "req/s (median)": statistics.median(r["requests_per_s"] for r in runs),
                }
            )
    return rows


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    data: dict[str, Any] = {**report.header("route_cost", args), "runs": []}
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", flush=True)
            for label, root in trees if r % 2 == 0 else list(reversed(trees)):
                routes = await measure(root=root, label=label, args=args, servers=servers)
                data["runs"].append({"tree": label, "routes": routes})
    rows = summary_rows(data)
    markdown = "\n".join(
        [
            f"## Cost per request, route by route, {data['started_at']} (2 API workers,"
            f" {args.connections} connections, {args.seconds:g} s per route, after"
            f" {args.fill:g} s of the older clients' mix)\n",
            report.markdown_table(rows, list(rows[0])),
        ]
    )
    base = report.write(name="route-cost", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.route_cost", description=__doc__)
    p.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    p.add_argument("--seconds", type=float, default=8.0, help="per route and round")
    p.add_argument("--fill", type=float, default=20.0, help="seconds of the older mix first")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--baseline", help="a git revision measured beside this tree, alternating")
    p.add_argument("--port", type=int, default=18100, help="the API's port")
    p.add_argument("--workdir", default="/tmp", help="where the API's logs go")
    args = p.parse_args()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
