"""Scratch resources for a benchmark run: a database of its own, migrated, dropped at the end."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from db import Connection
from db.migrate import prepare_database
from harness.services import ROOT
from harness.settings import HarnessSettings
from ingest.counters import Counters
from loadtest.baseline import python_env


@asynccontextmanager
async def scratch_database(
    servers: HarnessSettings,
    *,
    label: str,
    keep: bool = False,
    prefix: str = "rs_bench",
    tree: Path = ROOT,
) -> AsyncIterator[str]:
    """Yields the DSN of a new migrated database `<prefix>_<label>_<hex>`; drops it after.
    `prefix`: whose it is, on a server that several people's runs share. `tree`: whose
    migrations make the schema, e.g. a baseline checkout's (loadtest/baseline.py), so that a
    baseline runs on the tables its own code expects."""
    name = f"{prefix}_{label}_{uuid.uuid4().hex[:8]}"
    dsn = f"{servers.postgres_url}/{name}"
    try:
        if not python_env(tree):  # empty for this tree: its migrations are the ones imported
            await prepare_database(
                dsn=dsn,
                today=datetime.now(UTC).date(),
                days_back=8,
                days_ahead=3,
                retention_days=30,
            )
        else:
            await _migrate_with(tree, dsn)
        yield dsn
    finally:
        if not keep:
            admin = await asyncpg.connect(f"{servers.postgres_url}/postgres")
            try:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await admin.close()


async def _migrate_with(tree: Path, dsn: str) -> None:
    """`python -m db migrate` of the tree at `tree` (it creates the database)."""
    migrate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "db",
        "migrate",
        cwd=tree,
        env={**os.environ, **python_env(tree), "DATABASE_URL": dsn},
    )
    if await migrate.wait() != 0:
        raise RuntimeError(f"migrating {dsn} with {tree}'s migrations failed")


@asynccontextmanager
async def scratch_counters(
    servers: HarnessSettings, *, label: str, prefix: str = "rsbench"
) -> AsyncIterator[Counters]:
    """Counters under a key prefix `<prefix>-<label>-<hex>:` of this run's own, deleted at the
    end."""
    async with Redis.from_url(servers.redis_url) as redis:
        counters = Counters(redis=redis, prefix=f"{prefix}-{label}-{uuid.uuid4().hex[:8]}:")
        try:
            yield counters
        finally:
            await counters.clear()


async def register_robots(conn: Connection, robot_ids: Sequence[str]) -> None:
    await conn.executemany(
        "INSERT INTO robots (id) VALUES ($1) ON CONFLICT DO NOTHING", [(r,) for r in robot_ids]
    )


async def empty_readings(conn: Connection) -> None:
    """Between configurations: no rows, no journal, no dead letters; robots stay."""
    await conn.execute("TRUNCATE sensor_readings, dead_letters, counter_journal")


_FILL_DATA = {
    "imu": '{"accel":{"x":0.12,"y":-0.03,"z":9.81},"gyro":{"x":0.001,"y":0.002,"z":-0.003}}',
    "gps": '{"lat":52.52,"lon":13.405,"alt":34.0}',
    "lidar": '{"distance":4.2,"angle":12.5}',
}


async def fill_readings(
    conn: Connection,
    *,
    robots: Sequence[str],
    first: int,
    last: int,
    chunk: int = 1_000_000,
    start: datetime | None = None,
    spacing: timedelta = timedelta(microseconds=1),
    sensor_types: Sequence[str] = ("imu",),
) -> None:
    """Stores readings number `first` to `last` - 1 of a synthetic history, with SQL (not
    through MQTT): rows of `robots` in turn, and of `sensor_types` (keys of _FILL_DATA) in
    turn after each round of robots, `spacing` apart (one microsecond) from `start` (00:00:01
    UTC today: today's partition, where the bridge inserts, the worst case for index depth),
    seq -1, -2, ... (negative, so a benchmark tells them from its own rows). Then VACUUM
    ANALYZE and a CHECKPOINT, so the measured run does not pay for the fill."""
    day = start or datetime.now(UTC).replace(hour=0, minute=0, second=1, microsecond=0)
    for lo in range(first, last, chunk):
        await conn.execute(
            """INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)
               SELECT ($1::text[])[1 + i % cardinality($1::text[])],
                      ($7::text[])[1 + i / cardinality($1::text[]) % cardinality($7::text[])],
                      $2::timestamptz + i * $6::interval,
                      $2::timestamptz + i * $6::interval, -1 - i,
                      ($3::jsonb[])[1 + i / cardinality($1::text[]) % cardinality($7::text[])]
               FROM generate_series($4::bigint, $5::bigint - 1) AS i""",
            list(robots),
            day,
            [_FILL_DATA[t] for t in sensor_types],
            lo,
            min(lo + chunk, last),
            spacing,
            list(sensor_types),
        )
    await conn.execute("VACUUM (ANALYZE) sensor_readings")
    await conn.execute("CHECKPOINT")
