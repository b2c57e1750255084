"""Rebuilding the Redis counters from PostgreSQL, for when Redis lost them."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from db.journal import take_all_journal_entries
from db.stats import count_dead_letters_by_minute, count_readings_by_minute, latest_reading_rows
from ingest.counters import Counters

log = logging.getLogger(__name__)

_CHUNK = 5000
_BUILT_KEY = "meta:built"


async def counters_present(counters: Counters) -> bool:
    return bool(await counters.redis.exists(f"{counters.prefix}{_BUILT_KEY}"))


async def rebuild_counters(
    *, pool: asyncpg.Pool[Any], counters: Counters, window: timedelta = timedelta(hours=25)
) -> int:
    """Replaces the counters with what the tables hold for the last `window`; returns groups.

    Seq statistics after a rebuild cover the window only. HTTP rejections are not stored in
    dead_letters, so their counts do not survive a rebuild.
    """
    since = datetime.now(UTC) - window
    async with pool.acquire() as conn:
        # Pending journal entries are in the tables already; retire them so a replay cannot
        # count them a second time.
        async with conn.transaction():
            retired = await take_all_journal_entries(conn)
        groups = await count_readings_by_minute(conn, since=since)
        latest = await latest_reading_rows(conn, since=since)
        rejected = await count_dead_letters_by_minute(conn, since=since)
    await counters.clear()
    await counters.mark_applied(retired)
    run = uuid.uuid4().hex
    rows: list[list[Any]] = [
        [g.robot_id, g.sensor_type, g.minute, g.count, g.seq_count, g.seq_min or 0, g.seq_max or 0]
        for g in groups
    ]
    for i in range(0, max(len(rows), 1), _CHUNK):
        entry = {"g": rows[i : i + _CHUNK]}
        await counters.apply(f"rebuild-{run}-g{i}", orjson.dumps(entry).decode())
    entry = {
        "x": [list(x) for x in rejected],
        "l": [
            [
                r["robot_id"],
                r["sensor_type"],
                int(r["ts"].timestamp() * 1000),
                orjson.dumps(
                    {
                        "ts": r["ts"].isoformat(),
                        "received_at": r["received_at"].isoformat(),
                        "seq": r["seq"],
                        "data": orjson.Fragment(r["data"]),
                    }
                ).decode(),
            ]
            for r in latest
        ],
        "s": [[r["robot_id"], int(r["received_at"].timestamp() * 1000)] for r in latest],
    }
    await counters.apply(f"rebuild-{run}-rest", orjson.dumps(entry).decode())
    await counters.redis.set(f"{counters.prefix}{_BUILT_KEY}", datetime.now(UTC).isoformat())
    log.info("rebuilt counters", extra={"groups": len(groups), "retired": len(retired)})
    return len(groups)
