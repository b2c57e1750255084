"""Aggregates recomputed from the tables: for rebuilding the Redis counters and checking them."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from db import Connection
from db.readings import GROUP_BY_MINUTE, GROUP_BY_MINUTE_COUNTS, InsertedGroup


async def count_readings_by_minute(
    conn: Connection, *, since: datetime, until: datetime | None = None, slots: bool = True
) -> list[InsertedGroup]:
    """Groups as the merge returns them; with `slots=False` without their slot counts (12
    date_part calls a row less, for a comparison of minute counts)."""
    rows = await conn.fetch(
        (GROUP_BY_MINUTE if slots else GROUP_BY_MINUTE_COUNTS)
        + "FROM sensor_readings WHERE ts >= $1 "
        "AND ($2::timestamptz IS NULL OR ts < $2) GROUP BY 1, 2, 3",
        since,
        until,
    )
    return [InsertedGroup.from_record(r) for r in rows]


async def latest_reading_rows(conn: Connection, *, since: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT DISTINCT ON (robot_id, sensor_type)
                  robot_id, sensor_type, ts, received_at, seq, data::text AS data
           FROM sensor_readings WHERE ts >= $1
           ORDER BY robot_id, sensor_type, ts DESC""",
        since,
    )


async def count_dead_letters_by_minute(
    conn: Connection, *, since: datetime
) -> list[tuple[int, str, int]]:
    rows = await conn.fetch(
        """SELECT (extract(epoch FROM date_trunc('minute', received_at)))::bigint AS minute,
                  reason, count(*)::int AS n
           FROM dead_letters WHERE received_at >= $1 GROUP BY 1, 2""",
        since,
    )
    return [(r["minute"], r["reason"], r["n"]) for r in rows]
