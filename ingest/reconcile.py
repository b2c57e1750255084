"""Repairs drift between the Redis minute counters and PostgreSQL, while writes go on.

The counters can drift when Redis comes back from a restart stale but not empty (an older
snapshot): the journal entries it missed were retired long ago, so replay cannot bring them
back, and the counters are not missing, so no rebuild starts. Reconciling recomputes the
reading counts of a run of minutes from `sensor_readings` and rewrites the buckets that differ.

Without pausing any writer (other bridges and the API write too), a bucket is rewritten only
when the comparison cannot be fooled by a batch in flight:
1. read the buckets from Redis (R1);
2. in one REPEATABLE READ snapshot, count the readings per minute and list the journal entries
   (committed batches whose counter update may not be applied yet);
3. ask Redis which of those entries it has applied;
4. read the buckets again (R2).
A minute is left for the next round when R1 != R2 (an update landed meanwhile, maybe of a batch
the snapshot did not see) or when an entry of the snapshot not yet applied touches it (Redis
will count it soon). Otherwise Redis and the snapshot describe the same batches, and a
difference is drift. The repair adds the difference (Redis plus it equals the snapshot), which
stays right when a batch the snapshot did not see lands meanwhile, and is refused when another
reconciler repaired the minute since R2 (it would be added twice).
Only reading counts are repaired: refusal counts, latest readings and seq statistics are not.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from db.journal import journal_entries_up_to
from db.stats import count_readings_by_minute
from ingest.counters import Counters, MinuteBucket
from ingest.journal_entry import decode_entry

log = logging.getLogger(__name__)

# More pending journal entries than this means Redis is behind (down, or catching up): what it
# holds is not comparable yet, and replay, not repair, is the cure.
_MAX_PENDING = 1_000


@dataclass(frozen=True, slots=True)
class Reconciled:
    checked: int  # minutes compared
    skipped: int  # minutes left for the next round (changing, or updates pending)
    repaired: int  # minutes rewritten
    drift: int  # readings by which the repaired minutes were off, summed over robot and type
    deferred: bool = False  # Redis is behind on the journal: nothing was compared


def _split_key(key: str) -> tuple[str, str]:
    robot, sensor = key.split("/", 1)
    return robot, sensor


def _minutes_touched(entry: str) -> set[int]:
    return {g.minute for g in decode_entry(entry).groups}


async def reconcile_minutes(
    *, pool: asyncpg.Pool[Any], counters: Counters, first_minute: int, last_minute: int
) -> Reconciled:
    """Compares the minutes [first_minute, last_minute] (epoch seconds of a minute's start)
    and repairs the ones that drifted."""
    minutes = list(range(first_minute, last_minute + 1, 60))
    before = await counters.minute_buckets(minutes)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        groups = await count_readings_by_minute(
            conn,
            since=datetime.fromtimestamp(first_minute, UTC),
            until=datetime.fromtimestamp(last_minute + 60, UTC),
            slots=False,
        )
        pending = await journal_entries_up_to(conn, limit=_MAX_PENDING)
    if pending is None:
        log.info("counter reconciliation deferred: Redis is behind on the journal")
        return Reconciled(0, len(minutes), 0, 0, deferred=True)
    applied = await counters.applied_entries([entry_id for entry_id, _ in pending])
    unsettled: set[int] = set()
    for entry_id, entry in pending:
        if entry_id not in applied:
            unsettled |= _minutes_touched(entry)
    after = await counters.minute_buckets(minutes)

    expected: dict[int, dict[str, int]] = defaultdict(dict)
    for g in groups:
        expected[g.minute][f"{g.robot_id}/{g.sensor_type}"] = g.count
    skipped = repaired = drift = 0
    for minute, seen_before, seen in zip(minutes, before, after, strict=True):
        if seen_before != seen or minute in unsettled:
            skipped += 1
            continue
        want = expected.get(minute, {})
        want_total = sum(want.values()) if want else None
        # Robot ids cannot hold "/" (telemetry.topics): the key splits back unambiguously.
        rows = [(*_split_key(key), n) for key, n in want.items()]
        if seen.same_counts(MinuteBucket.of(rows)):
            continue
        if await counters.replace_minute(minute, seen=seen, groups=rows):
            repaired += 1
            keys = want.keys() | seen.by_robot_sensor.keys()
            off = sum(abs(want.get(k, 0) - seen.by_robot_sensor.get(k, 0)) for k in keys)
            drift += off
            log.warning(
                "counter drift repaired",
                extra={"minute": minute, "redis": seen.total or 0, "postgres": want_total or 0},
            )
        else:
            skipped += 1
    return Reconciled(len(minutes) - skipped, skipped, repaired, drift)
