"""The bridge's care of what is not the stream: the Redis side (journal replay, rebuild, drift
repair, statuses) every few seconds, and hourly housekeeping (dead letters, stale statuses).

The Redis side runs as one periodic job, so a rebuild and a reconciliation never interleave in
this process.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bridge import metrics
from bridge.source import Source
from db.dead_letters import delete_dead_letters_before
from db.robot_registry import registered_among
from ingest.counters import Counters
from ingest.reconcile import Reconciled, reconcile_minutes
from ingest.write import IngestWriter

log = logging.getLogger(__name__)


class CounterCare:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool[Any],
        counters: Counters,
        writer: IngestWriter,
        subscriber: Source,
        replay_older_than_s: float,
        reconcile_interval_s: float,
        reconcile_minutes: int,
        full_window_minutes: int,
    ) -> None:
        self.pool = pool
        self.counters = counters
        self.writer = writer
        self.subscriber = subscriber
        self.replay_older_than_s = replay_older_than_s
        self.reconcile_interval_s = reconcile_interval_s
        self.reconcile_minutes = reconcile_minutes
        self.full_window_minutes = full_window_minutes
        self._full_reconcile_due = False
        self._first_round = True
        self._first_housekeeping = True
        self._next_reconcile = time.monotonic() + reconcile_interval_s

    async def round(self) -> None:
        """One round: replay or rebuild; after a Redis restart (noticed by this bridge or, for a
        restart while it was down, recorded in Redis), the statuses again (from the broker's
        retained messages) and every counted minute compared until done; else, when due, the
        recent minutes compared."""
        rebuilt = await self.writer.keep_counters(replay_older_than_s=self.replay_older_than_s)
        restarted = await self.counters.restarted_since_last_look()
        if (rebuilt or restarted) and not self._first_round:
            # (On the first round the bridge has just subscribed: the statuses are on their way.)
            log.warning(
                "Redis lost or restarted; asking the broker for every retained status",
                extra={"rebuilt": rebuilt},
            )
            self.subscriber.refresh_statuses()
        self._first_round = False
        if restarted and not rebuilt:
            self._full_reconcile_due = True
        if self._full_reconcile_due:
            result = await self.reconcile(minutes=self.full_window_minutes)
            self._full_reconcile_due = result.deferred
        elif time.monotonic() >= self._next_reconcile:
            await self.reconcile(minutes=self.reconcile_minutes)

    async def reconcile(self, *, minutes: int) -> Reconciled:
        self._next_reconcile = time.monotonic() + self.reconcile_interval_s
        now_minute = int(time.time()) // 60 * 60
        result = await reconcile_minutes(
            pool=self.pool,
            counters=self.counters,
            first_minute=now_minute - (minutes - 1) * 60,
            last_minute=now_minute,
        )
        metrics.COUNTER_REPAIRS.inc(result.repaired)
        metrics.COUNTER_DRIFT.inc(result.drift)
        if result.repaired:
            log.warning(
                "counters reconciled",
                extra={"repaired_minutes": result.repaired, "drift_readings": result.drift},
            )
        return result

    async def housekeeping(self, *, dead_letter_retention: timedelta) -> None:
        """Hourly: expires dead letters, drops statuses of robots no longer registered, and has
        the broker resend the retained statuses, so robots registered since their last status
        change get theirs (not on the first run: the subscription has just brought them)."""
        cutoff = datetime.now(UTC) - dead_letter_retention
        async with self.pool.acquire() as conn:
            expired = await delete_dead_letters_before(conn, cutoff=cutoff)
        metrics.DEAD_LETTERS_EXPIRED.inc(expired)
        if expired:
            log.info("dead letters expired", extra={"deleted": expired})
        await self.prune_statuses()
        if not self._first_housekeeping:
            self.subscriber.refresh_statuses()
        self._first_housekeeping = False

    async def prune_statuses(self) -> int:
        """Drops the statuses of robots no longer registered (deleted, or tracked before
        only registered robots were); returns how many."""
        tracked = await self.counters.status_robot_ids()
        if not tracked:
            return 0
        async with self.pool.acquire() as conn:
            known = await registered_among(conn, tracked)
        dropped = await self.counters.drop_statuses([r for r in tracked if r not in known])
        metrics.STATUSES_PRUNED.inc(dropped)
        if dropped:
            log.info("statuses of unregistered robots dropped", extra={"dropped": dropped})
        return dropped
