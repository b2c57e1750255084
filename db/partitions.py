"""Daily partitions of sensor_readings: created ahead of the clock, dropped past retention."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from db import Connection

_NAME = re.compile(r"^sensor_readings_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"sensor_readings_p{day:%Y%m%d}"


async def ensure_partitions(conn: Connection, *, first_day: date, last_day: date) -> list[str]:
    """Creates the missing daily partitions for [first_day, last_day]; returns their names."""
    existing = set(await list_partitions(conn))
    created = []
    day = first_day
    while day <= last_day:
        name = partition_name(day)
        if name not in existing:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            end = start + timedelta(days=1)
            # Identifiers cannot be bound; the name is built from a date, so it is safe.
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF sensor_readings "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
            created.append(name)
        day += timedelta(days=1)
    return created


async def list_partitions(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = 'sensor_readings' ORDER BY c.relname"""
    )
    return [r["relname"] for r in rows]


async def drop_partitions_before(conn: Connection, *, cutoff: date) -> list[str]:
    """Drops whole days older than `cutoff`: retention costs no DELETE and no vacuum."""
    dropped = []
    for name in await list_partitions(conn):
        match = _NAME.match(name)
        if match and datetime.strptime(match.group(1), "%Y%m%d").date() < cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped


async def maintain_partitions(
    conn: Connection,
    *,
    today: date,
    days_back: int,
    days_ahead: int,
    retention_days: int,
) -> tuple[list[str], list[str]]:
    created = await ensure_partitions(
        conn,
        first_day=today - timedelta(days=days_back),
        last_day=today + timedelta(days=days_ahead),
    )
    dropped = await drop_partitions_before(conn, cutoff=today - timedelta(days=retention_days))
    return created, dropped
