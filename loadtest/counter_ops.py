"""The cost of the counters' hot operations: applying a journal entry (one bridge batch), the
stats read (`Counters.window` over an hour, as GET /api/stats does), the latest readings, and
the kept minutes of a bucket aggregate (`Counters.kept_partials` over an hour, as
GET /api/sensors/aggregate does), on one Redis server or a Redis Cluster, with any shard count.

    .venv/bin/python -m loadtest.counter_ops --url redis://127.0.0.1:21500/0 --seconds 10
    .venv/bin/python -m loadtest.counter_ops --url redis://127.0.0.1:21510/0 --cluster --shards 3

Sequential, one client: latency per call, calls per second and this client's CPU per call.
Written against the Counters API that predates sharding too (`--shards 1` passes no shard
count), so the same script run with PYTHONPATH pointing at an older checkout measures "before"
(back to 058818d, which added the kept minutes; across round 11's renaming of their reads).
Uses a prefix of its own and deletes it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster

from db.sensor_aggregates import MinutePartial
from ingest.counters import Counters
from ingest.journal_entry import JournalEntry, LastSeen, LatestReading, MinuteCount

_ROBOTS = 10  # robots per batch, as one bridge batch of a 10-robot publisher carries
_READINGS = 500  # readings per batch


def batch_entry(i: int, minute: int) -> str:
    now_ms = minute * 1000 + i % 60_000
    reading = '{"ts":"2026-11-28T00:00:00+00:00","seq":1,"data":{"ax":0.1,"ay":0.2,"az":9.8}}'
    robots = [f"bench-{(i + r) % 100}" for r in range(_ROBOTS)]
    per = _READINGS // _ROBOTS
    entry = orjson.loads(
        JournalEntry(
            groups=[
                MinuteCount(r, "imu", minute, per, per, i * per, i * per + per - 1) for r in robots
            ],
            latest=[LatestReading(r, "imu", now_ms, reading) for r in robots],
            last_seen=[LastSeen(r, now_ms) for r in robots],
        ).to_json()
    )
    # Each robot's readings in two slots of the minute (a batch across a 10 s boundary), added
    # to the JSON so that a tree from before slot counts runs the same entries (and ignores
    # them).
    for g in entry["groups"]:
        g["slots"] = [per // 2, per - per // 2, 0, 0, 0, 0]
    return orjson.dumps(entry).decode()


async def minute_memory(
    client: Redis | RedisCluster, counters: Counters, robots: int, minute: int, run: str
) -> dict[str, int]:
    """A minute of `robots` robots with readings of 3 types in every slot, applied as batches
    of 100 robots (under a prefix of its own, inside the caller's, so cleared with it); the
    bytes each of the minute's keys takes (summed over shards), by kind."""
    types = ("imu", "gps", "lidar")
    for start in range(0, robots, 100):
        entry = orjson.loads(
            JournalEntry(
                groups=[
                    MinuteCount(f"bench-{r}", t, minute, 60, 0, 0, 0)
                    for r in range(start, min(start + 100, robots))
                    for t in types
                ]
            ).to_json()
        )
        for g in entry["groups"]:
            g["slots"] = [10] * 6
        await counters.apply(f"mem-{run}-{start}", orjson.dumps(entry).decode())
    out: dict[str, int] = {}
    for kind in ("t", "r", "rs", "q"):
        for key in counters.minute_keys(minute, kind):
            out[kind] = out.get(kind, 0) + int(await client.memory_usage(key, samples=0) or 0)
    return out


async def timed(seconds: float, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - t0)
        i += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "calls_per_s": round(len(latencies) / elapsed, 1),
        # This client's CPU (redis-py's encoding and parsing): what an API worker pays per call.
        "client_cpu_ms": round(cpu * 1000 / max(len(latencies), 1), 3),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
        "calls": len(latencies),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--memory-robots",
        type=int,
        default=0,
        help="also apply one minute of this many robots (3 types, every slot written) and "
        "print the bytes its per-robot keys take (MEMORY USAGE)",
    )
    args = parser.parse_args()

    client: Redis | RedisCluster = (
        RedisCluster.from_url(args.url) if args.cluster else Redis.from_url(args.url)
    )
    sharding: dict[str, Any] = {"shards": args.shards} if args.shards != 1 else {}
    counters = Counters(redis=client, prefix=f"rsbench-ops-{uuid.uuid4().hex[:8]}:", **sharding)
    now_minute = int(time.time()) // 60 * 60
    minutes = [now_minute - 60 * k for k in range(60)]
    run = uuid.uuid4().hex[:6]
    try:
        # An hour of history, so the stats read has 60 full minutes to sum.
        for k, minute in enumerate(minutes):
            for j in range(5):
                await counters.apply(f"fill-{run}-{k}-{j}", batch_entry(k * 5 + j, minute))
        apply = await timed(
            args.seconds, lambda i: counters.apply(f"{run}-{i}", batch_entry(i, now_minute))
        )
        stats = await timed(args.seconds, lambda i: counters.window(minutes, top=10))
        robots = [f"bench-{r}" for r in range(10)]
        latest = await timed(args.seconds, lambda i: counters.latest(robots))
        partials = {m: MinutePartial(1, 1, 0.1, 0.1, 0.1) for m in minutes}
        # A tree from before round 11 names these reads by minutes only.
        kept_api: Any = counters
        if hasattr(counters, "kept_partials"):
            await kept_api.store_partials(
                sensor_type="imu", path=("ax",), robot_id="bench-1", minutes=partials
            )
            read = kept_api.kept_partials
        else:
            await kept_api.store_minute_partials(
                sensor_type="imu", path=("ax",), robot_id="bench-1", partials=partials
            )
            read = kept_api.minute_partials
        kept = await timed(
            args.seconds,
            lambda i: read(sensor_type="imu", path=("ax",), robot_id="bench-1", minutes=minutes),
        )
        memory = (
            await minute_memory(
                client,
                Counters(redis=client, prefix=f"{counters.prefix}mem:", **sharding),
                args.memory_robots,
                now_minute,
                run,
            )
            if args.memory_robots
            else {}
        )
    finally:
        await counters.clear()
        await client.aclose()
    result = {
        "label": args.label,
        "cluster": args.cluster,
        "shards": args.shards,
        "apply (500 readings, 10 robots)": apply,
        "stats read (window 60 min, top 10)": stats,
        "latest (10 robots)": latest,
        "kept minutes (60, one robot)": kept,
        "bytes of one minute's keys": memory,
    }
    print(json.dumps(result))
    if memory:
        print(f"{args.label:>10} one minute of {args.memory_robots:,} robots: {memory}")
    for name, figures in result.items():
        if isinstance(figures, dict) and "calls_per_s" in figures:
            print(
                f"{args.label:>10} {name:<36} {figures['calls_per_s']:>9,.0f}/s  "
                f"p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  client CPU "
                f"{figures['client_cpu_ms']:.3f} ms/call"
            )


if __name__ == "__main__":
    asyncio.run(main())
