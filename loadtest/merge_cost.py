"""PostgreSQL's cost per reading of the bridge's write, without the bridge:

    python -m loadtest.merge_cost [--readings 200000] [--batch 5000] [--rounds 3] [--prefill 0]

Writes the same IMU rows as loadtest.ceilings into a scratch database, one transaction per batch
of `--batch`, on one connection, in three ways, interleaved for `--rounds`:
- `plain COPY`: COPY straight into sensor_readings, nothing else (the floor);
- `staging + merge`: db.readings.merge_via_staging, the merge every batch took before: COPY into
  the temp staging table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING, grouped;
- `merge_readings`: the fast path (a registration check and COPY under a savepoint, falling back
  to the merge when the batch holds a stored reading); the writers run it without the savepoint
  and write a batch holding a stored reading again with the merge (ingest/write.py);
- `transaction + journal`: what IngestWriter commits for a batch past ONE_STATEMENT_MAX_READINGS:
  BEGIN, merge_readings without the savepoint, the journal entry, COMMIT;
- `one statement + journal`: db.readings.insert_all_new, what it commits for a smaller batch.
The last two compare whole commits: run them at the batch sizes HTTP ingest forms (`--batch 21`:
seven 3-reading requests) and around the threshold.
Per way: the server backend's CPU µs per reading (its /proc/PID/stat: PostgreSQL must run on
this machine), the client's, WAL bytes per reading (pg_current_wal_lsn before and after, a
CHECKPOINT first so each way starts with the same full-page-write state) and the wall rate.
CPU and WAL per reading are the figures to read on a shared machine; the rate is a burst.
`--prefill N` fills the table with N rows first (loadtest.scratch.fill_readings) and keeps them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg
import uvloop

from db import Connection
from db.journal import add_journal_entry
from db.readings import insert_all_new, merge_readings, merge_via_staging, prepare_connection
from harness.procfs import cpu_seconds
from harness.settings import BenchSettings
from loadtest import report
from loadtest.ceilings import bench_readings
from loadtest.scratch import fill_readings, register_robots, scratch_database
from telemetry.payload import Reading

_COLUMNS = ("robot_id", "sensor_type", "ts", "received_at", "seq", "data")

Way = Callable[[Connection, Sequence[Reading]], Awaitable[object]]


# A journal entry of the size a small batch's is (its groups, latest readings, last seen).
_ENTRY = '{"groups": [], "rejected": [], "latest": [], "last_seen": []}'


async def _plain_copy(conn: Connection, batch: Sequence[Reading]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("sensor_readings", records=batch, columns=_COLUMNS)


async def _staging_merge(conn: Connection, batch: Sequence[Reading]) -> None:
    async with conn.transaction():
        await merge_via_staging(conn, batch, register_unknown=False)


async def _merge_readings(conn: Connection, batch: Sequence[Reading]) -> None:
    async with conn.transaction():
        await merge_readings(conn, batch, register_unknown=False)


async def _transaction_and_journal(conn: Connection, batch: Sequence[Reading]) -> None:
    async with conn.transaction():
        await merge_readings(conn, batch, register_unknown=False, savepoint=False)
        await add_journal_entry(conn, _ENTRY)


async def _one_statement(conn: Connection, batch: Sequence[Reading]) -> None:
    if await insert_all_new(conn, batch, journal_entry=_ENTRY, retire=()) is None:
        raise RuntimeError("a robot of the batch is not registered")


WAYS: dict[str, Way] = {
    "plain COPY": _plain_copy,
    "staging + merge (before)": _staging_merge,
    "merge_readings (now)": _merge_readings,
    "transaction + journal": _transaction_and_journal,
    "one statement + journal": _one_statement,
}


async def one_way(
    conn: Connection, way: Way, robots: list[str], args: argparse.Namespace, backend: int
) -> dict[str, float]:
    """Fresh readings (ending now) every time: the table only grows, as it does in service,
    with no dead rows from a cleanup in the way."""
    rows = bench_readings(robots=robots, n=args.readings)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    await conn.execute("CHECKPOINT")
    lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()")
    server0, client0, wall0 = cpu_seconds(backend), time.process_time(), time.perf_counter()
    for batch in batches:
        await way(conn, batch)
    wall = time.perf_counter() - wall0
    client, server = time.process_time() - client0, cpu_seconds(backend) - server0
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", lsn0)
    n = sum(len(b) for b in batches)
    return {
        "server_us": server * 1e6 / n,
        "client_us": client * 1e6 / n,
        "wal_bytes": float(wal) / n,
        "rate": n / wall,
    }


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    robots = [f"bench-{k // 10}-{k % 10}" for k in range(20)]
    data: dict[str, object] = report.header("merge-cost", args)
    ways = {name: WAYS[name] for name in args.ways}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    async with scratch_database(servers, label="merge") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await register_robots(conn, robots)
            await prepare_connection(conn)
            if args.prefill:
                t0 = time.perf_counter()
                await fill_readings(conn, robots=robots, first=0, last=args.prefill)
                print(f"prefilled {args.prefill:,} rows in {time.perf_counter() - t0:.0f} s")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            for k in range(args.rounds):
                for name, way in ways.items():
                    r = await one_way(conn, way, robots, args, backend)
                    results[name].append(r)
                    print(
                        f"round {k + 1} {name:26s} server {r['server_us']:5.2f} µs/reading, "
                        f"client {r['client_us']:5.2f}, WAL {r['wal_bytes']:4.0f} B/reading, "
                        f"{r['rate']:9,.0f} readings/s (burst)",
                        flush=True,
                    )
        finally:
            await conn.close()
    table = [
        {
            "way": name,
            "server CPU µs/reading (median)": statistics.median(r["server_us"] for r in rs),
            "client CPU µs/reading": statistics.median(r["client_us"] for r in rs),
            "WAL bytes/reading": statistics.median(r["wal_bytes"] for r in rs),
            "readings/s (burst, one connection)": statistics.median(r["rate"] for r in rs),
        }
        for name, rs in results.items()
    ]
    data["results"] = results
    title = (
        f"## PostgreSQL cost per reading, {data['started_at']} ({args.readings:,} readings in "
        f"batches of {args.batch:,}, {args.rounds} rounds, {args.prefill:,} rows stored before)"
    )
    markdown = title + "\n\n" + report.markdown_table(table, list(table[0])) + "\n"
    base = report.write(name="merge-cost", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md ({datetime.now(UTC):%H:%M:%S} UTC)")


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.merge_cost", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=5_000, help="the bridge's batch_max_readings")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prefill", type=int, default=0, help="rows stored before the first round")
    p.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS), metavar="WAY")
    args = p.parse_args()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
