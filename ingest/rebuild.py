"""Rebuilding the Redis counters from PostgreSQL, for when Redis lost them."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from db.journal import take_all_journal_entries
from db.stats import count_dead_letters_by_minute, count_readings_by_minute, latest_reading_rows
from ingest.counters import Counters
from ingest.journal_entry import (
    JournalEntry,
    LastSeen,
    LatestReading,
    MinuteRejections,
    epoch_ms,
    minute_count,
    reading_json,
)

log = logging.getLogger(__name__)

_CHUNK = 5000


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
    counts = [minute_count(g) for g in groups]
    for i in range(0, max(len(counts), 1), _CHUNK):
        entry = JournalEntry(groups=counts[i : i + _CHUNK])
        await counters.apply(f"rebuild-{run}-g{i}", entry.to_json())
    entry = JournalEntry(
        rejected=[MinuteRejections(*x) for x in rejected],
        latest=[
            LatestReading(
                r["robot_id"],
                r["sensor_type"],
                epoch_ms(r["ts"]),
                reading_json(
                    ts=r["ts"], received_at=r["received_at"], seq=r["seq"], data=r["data"]
                ),
            )
            for r in latest
        ],
        last_seen=[LastSeen(r["robot_id"], epoch_ms(r["received_at"])) for r in latest],
    )
    await counters.apply(f"rebuild-{run}-rest", entry.to_json())
    await counters.forget_windows()
    await counters.mark_built(datetime.now(UTC))
    log.info("rebuilt counters", extra={"groups": len(groups), "retired": len(retired)})
    return len(groups)
