"""HTTP edge benchmark: what header floods and a 64-connection overload do to the API, with its
limits (this tree) and, in the same run, without them (`--baseline REF`, e.g. a commit before
them).

    python -m loadtest.http_edge --baseline 8340d47 --variant MAX_CONCURRENT_REQUESTS=64
    python -m loadtest.http_edge --duration 10 --repeat 1 --connections 64   # this tree, short

For each tree it starts `python -m api` (one worker) on a free port against a scratch database
and Redis prefix, and measures, on loopback only:
1. memory: the API's RSS before, at the peak of, and after 20 connections each sending
   `--flood-mb` MiB of one unfinished header (64 KiB writes);
2. stall: the slowest `GET /healthz` (one every 10 ms on another connection) while one
   connection sends a `--stall-mb` MiB header;
3. overload: the REST mix of `loadtest/rest.py` on 64 and 256 keep-alive connections
   (`--connections`), closed loop, zero wait, for `--duration` s after a warm-up, `--repeat`
   times: served and shed requests per second and the latency of each (a shed request is
   answered 503 at once; its client waits the Retry-After second before its next request, or
   retries at once with `--ignore-retry-after`, the most shedding can cost).
Every loop is bounded by a byte count or a duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from api.keys import generate_key
from harness.procfs import rss_bytes
from harness.services import ROOT, free_port, wait_for_port
from harness.settings import BenchSettings
from loadtest import report
from loadtest.rest import HttpConnection, _Clock, mix, percentiles, register
from loadtest.scratch import scratch_counters, scratch_database

CHUNK = b"a" * 65536
# The API's default RETRY_AFTER_S: a shed client waits this long before its next request.
RETRY_AFTER_S = 1.0


@contextlib.contextmanager
def source_tree(ref: str | None, repo: Path) -> Iterator[Path]:
    """This tree, or `ref` of `repo` exported (git archive) into a temporary directory."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="rs-edge-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", ref], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


# The API's bootstrap admin key for this run, sent on every request.
ADMIN_KEY = generate_key().token


@contextlib.contextmanager
def api_process(
    tree: Path, dsn: str, prefix: str, log: Path, extra_env: dict[str, str], *, redis_url: str
) -> Iterator[tuple[int, int]]:
    """`python -m api` from `tree` (its own packages first on the path): (port, pid)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "API_PORT": str(port),
        "API_WORKERS": "1",
        # A tree without API keys ignores both the variable and the header.
        "API_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        **extra_env,
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"], cwd=tree, env=env, stdout=out, stderr=out
        )
    try:
        wait_for_port(port, timeout=30)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def send_header(port: int, size: int, *, finish: bool) -> str:
    """One request whose single header is `size` bytes: what the server did with it."""
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Flood: ")
        for _ in range(size // len(CHUNK)):
            writer.write(CHUNK)
            await writer.drain()
        if not finish:
            return "sent"
        writer.write(b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        return head.split(b" ", 2)[1].decode()
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed"
    finally:
        if writer is not None:
            writer.close()


async def memory_flood(port: int, pid: int, *, connections: int, mib: int) -> dict[str, Any]:
    await asyncio.sleep(1)
    before = rss_bytes(pid) / 2**20
    peak = before
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss_bytes(pid) / 2**20)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    # Unfinished headers: the connections stay open (until the server cuts them) while
    # the peak is sampled.
    writers = await asyncio.gather(
        *(send_header(port, mib << 20, finish=False) for _ in range(connections))
    )
    await asyncio.sleep(1)
    done = True
    await sampler
    outcomes = {o: writers.count(o) for o in set(writers)}
    await asyncio.sleep(2)
    return {
        "rss_before_mib": before,
        "rss_peak_mib": peak,
        "rss_after_mib": rss_bytes(pid) / 2**20,
        "outcomes": outcomes,
    }


async def header_stall(port: int, *, mib: int) -> dict[str, Any]:
    """The slowest /healthz while one client sends a `mib` MiB header. A probe whose
    connection the server dropped (its keep-alive timer fired during a stall longer than the
    timeout) counts as failed, lasting until the failure; the next probe reconnects."""
    conn = await HttpConnection.open(port, ADMIN_KEY)
    worst = 0.0
    probes = failures = 0
    flood = asyncio.create_task(send_header(port, mib << 20, finish=True))
    t_start = time.perf_counter()
    while not flood.done():
        t0 = time.perf_counter()
        try:
            status, _ = await conn.request("GET /healthz", None)
        except (ConnectionError, asyncio.IncompleteReadError):
            failures += 1
            conn.close()
            conn = await HttpConnection.open(port, ADMIN_KEY)
        else:
            if status != 200:
                raise RuntimeError(f"/healthz answered {status}")
        worst = max(worst, time.perf_counter() - t0)
        probes += 1
        await asyncio.sleep(0.01)
    conn.close()
    return {
        "outcome": await flood,
        "flood_seconds": time.perf_counter() - t_start,
        "probes": probes,
        "probe_failures": failures,
        "worst_probe_ms": worst * 1000,
    }


async def overload(
    port: int,
    *,
    connections: int,
    duration_s: float,
    warmup_s: float,
    seed: int,
    honour_retry_after: bool,
) -> dict[str, Any]:
    makers = [m for _, m in mix()]
    weights = [w for w, _ in mix()]
    clock = _Clock()
    served: list[float] = []
    shed: list[float] = []
    other: dict[int, int] = {}
    conns = [await HttpConnection.open(port, ADMIN_KEY) for _ in range(connections)]
    measure_from = time.monotonic() + warmup_s
    stop_at = measure_from + duration_s

    async def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        while (now := time.monotonic()) < stop_at:
            _, line, body = rng.choices(makers, weights)[0](rng, clock)
            t0 = time.perf_counter()
            status, _ = await conns[k].request(line, body)
            elapsed = time.perf_counter() - t0
            if now < measure_from:
                continue
            if status < 300:
                served.append(elapsed)
            elif status == 503:
                shed.append(elapsed)
                if honour_retry_after:
                    await asyncio.sleep(RETRY_AFTER_S)
            else:
                other[status] = other.get(status, 0) + 1

    await asyncio.gather(*(worker(k) for k in range(connections)))
    for c in conns:
        c.close()
    return {
        "served_per_s": len(served) / duration_s,
        "shed_per_s": len(shed) / duration_s,
        "served": percentiles(served),
        "shed": percentiles(shed),
        "other_statuses": other,
    }


async def measure(
    tree: Path,
    label: str,
    args: argparse.Namespace,
    workdir: Path,
    *,
    extra_env: dict[str, str],
    floods: bool,
    servers: BenchSettings,
) -> dict[str, Any]:
    out: dict[str, Any] = {"tree": label, "overload": {}}
    log = workdir / f"api-{label.replace(' ', '_')}.log"
    async with (
        scratch_database(servers, label="edge") as dsn,
        scratch_counters(servers, label="edge") as counters,
    ):
        with api_process(
            tree, dsn, counters.prefix, log, extra_env, redis_url=servers.redis_url
        ) as (port, pid):
            await register(port, ADMIN_KEY)
            if floods:
                out["memory"] = await memory_flood(
                    port, pid, connections=args.flood_connections, mib=args.flood_mb
                )
                print(f"{label}: memory {out['memory']}", flush=True)
                out["stall"] = await header_stall(port, mib=args.stall_mb)
                print(f"{label}: stall {out['stall']}", flush=True)
            for connections in args.connections:
                runs = []
                for i in range(args.repeat):
                    run = await overload(
                        port,
                        connections=connections,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        seed=i,
                        honour_retry_after=not args.ignore_retry_after,
                    )
                    print(
                        f"{label}, {connections} connections, run {i + 1}: served "
                        f"{run['served_per_s']:,.0f}/s p50/p99 {run['served']['p50_ms']:.1f}/"
                        f"{run['served']['p99_ms']:.1f} ms, shed {run['shed_per_s']:,.0f}/s "
                        f"p99 {run['shed']['p99_ms']:.1f} ms, other {run['other_statuses']}",
                        flush=True,
                    )
                    runs.append(run)
                runs.sort(key=lambda r: r["served"]["p99_ms"])
                out["overload"][str(connections)] = {
                    "median": runs[(len(runs) - 1) // 2],
                    "runs": runs,
                }
    return out


def _markdown(data: dict[str, Any]) -> str:
    out = [f"## HTTP edge, {data['started_at']}\n"]
    floods = [
        {
            "tree": r["tree"],
            "RSS before/peak/after MiB": f"{r['memory']['rss_before_mib']:.0f} / "
            f"{r['memory']['rss_peak_mib']:.0f} / {r['memory']['rss_after_mib']:.0f}",
            "flood outcomes": r["memory"]["outcomes"],
            "big header: worst /healthz ms": f"{r['stall']['worst_probe_ms']:,.0f}",
            "probes failed": r["stall"]["probe_failures"],
        }
        for r in data["trees"]
        if "memory" in r
    ]
    if floods:
        out.append(report.markdown_table(floods, list(floods[0])))
    rows = []
    for r in data["trees"]:
        for connections, o in r["overload"].items():
            m = o["median"]
            rows.append(
                {
                    "tree": r["tree"],
                    "connections": connections,
                    "served/s": f"{m['served_per_s']:,.0f}",
                    "served p50/p99 ms": f"{m['served']['p50_ms']:.1f} / "
                    f"{m['served']['p99_ms']:.1f}",
                    "shed/s": f"{m['shed_per_s']:,.0f}",
                    "shed p99 ms": f"{m['shed']['p99_ms']:.1f}",
                    "served p99 of each run ms": ", ".join(
                        f"{x['served']['p99_ms']:.0f}" for x in o["runs"]
                    ),
                }
            )
    out.append(report.markdown_table(rows, list(rows[0])))
    return "\n".join(out)


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    data: dict[str, Any] = {
        **report.header("http_edge", args),
        "trees": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="rs-bench-edge-"))
    if args.baseline:
        with source_tree(args.baseline, args.repo) as tree:
            label = f"baseline {args.baseline}"
            data["trees"].append(
                await measure(
                    tree, label, args, workdir, extra_env={}, floods=True, servers=servers
                )
            )
    data["trees"].append(
        await measure(ROOT, "this tree", args, workdir, extra_env={}, floods=True, servers=servers)
    )
    for variant in args.variant:
        name, value = variant.split("=", 1)
        data["trees"].append(
            await measure(
                ROOT,
                f"this tree, {variant}",
                args,
                workdir,
                extra_env={name: value},
                floods=False,
                servers=servers,
            )
        )
    base = report.write(name="http-edge", data=data, markdown=_markdown(data))
    print(_markdown(data))
    print(f"results: {base}.json .md; API logs in {workdir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git ref to measure first, e.g. a commit before")
    parser.add_argument("--repo", type=Path, default=ROOT, help="where --baseline is taken from")
    parser.add_argument("--flood-connections", type=int, default=20)
    parser.add_argument("--flood-mb", type=int, default=10)
    parser.add_argument("--stall-mb", type=int, default=200)
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also this tree with one setting changed (overload only), e.g. "
        "MAX_CONCURRENT_REQUESTS=64; repeatable",
    )
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="shed clients retry at once (the worst case for shedding's own cost)",
    )
    uvloop.run(main_async(parser.parse_args(), BenchSettings()))


if __name__ == "__main__":
    main()
