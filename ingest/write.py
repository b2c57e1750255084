"""The one write path for readings, shared by the MQTT bridge and HTTP ingest.

A batch is committed in one transaction: new readings (duplicates skipped), dead letters, and a
journal entry describing the counter updates. The counters are applied to Redis after the
commit; if Redis is down the journal keeps them until `replay_journal` applies them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from db.dead_letters import store_dead_letters
from db.errors import LOST_RACE_ATTEMPTS, LOST_RACE_ERRORS, StoredAlreadyError
from db.journal import (
    add_journal_entry,
    delete_journal_entries,
    pending_journal_entries,
)
from db.readings import (
    ONE_STATEMENT_MAX_READINGS,
    Conflict,
    MergeResult,
    insert_all_new,
    merge_readings,
    merge_via_staging,
    new_groups,
)
from ingest.counters import COUNTERS_AWAY_ERRORS, Counters
from ingest.dead_letter_limit import DeadLetterLimit
from ingest.journal_entry import (
    JournalEntry,
    LastSeen,
    MinuteRejections,
    epoch_minute,
    epoch_ms,
    latest_reading,
    minute_count,
    reading_json,
    upgrade_legacy_entry,
)
from ingest.rebuild import rebuild_counters
from telemetry.errors import RejectReason
from telemetry.payload import Reading, Rejection
from telemetry.topics import sensor_topic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Retiring:
    ids: list[int]
    done: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    received: int
    inserted: int
    unknown_robots: frozenset[str]
    rejected: Counter[str] = field(default_factory=Counter)
    # Skipped readings whose identity is stored with different data (also in `rejected`).
    conflicting: int = 0
    counters_applied: bool = True
    # Refusals counted but not written to dead_letters (a flood past the DeadLetterLimit).
    dead_letters_over_quota: Counter[str] = field(default_factory=Counter)

    @classmethod
    def combined(cls, results: Sequence[WriteResult]) -> WriteResult:
        """One result for a batch written in parts (ingest.isolation)."""
        first, *rest = results
        for r in rest:
            first = cls(
                received=first.received + r.received,
                inserted=first.inserted + r.inserted,
                unknown_robots=first.unknown_robots | r.unknown_robots,
                rejected=first.rejected + r.rejected,
                conflicting=first.conflicting + r.conflicting,
                counters_applied=first.counters_applied and r.counters_applied,
                dead_letters_over_quota=first.dead_letters_over_quota + r.dead_letters_over_quota,
            )
        return first

    @property
    def duplicates(self) -> int:
        """True redeliveries: same identity, same data."""
        unknown = self.rejected.get(RejectReason.UNKNOWN_ROBOT, 0)
        return self.received - self.inserted - unknown - self.conflicting


def build_journal_entry(
    merge: MergeResult, readings: Sequence[Reading], rejections: Sequence[Rejection]
) -> JournalEntry:
    """The counter updates a committed batch implies."""
    newest: dict[tuple[str, str], Reading] = {}
    last_seen: dict[str, datetime] = {}
    for r in readings:
        if r.robot_id in merge.unknown_robots:
            continue
        key = (r.robot_id, r.sensor_type)
        best = newest.get(key)
        if best is None or r.ts > best.ts:
            newest[key] = r
        seen = last_seen.get(r.robot_id)
        if seen is None or r.received_at > seen:
            last_seen[r.robot_id] = r.received_at
    inserted_pairs = {(g.robot_id, g.sensor_type) for g in merge.groups}
    rejected: Counter[tuple[int, str]] = Counter(
        (epoch_minute(x.received_at), str(x.reason)) for x in rejections
    )
    return JournalEntry(
        groups=[minute_count(g) for g in merge.groups],
        rejected=[MinuteRejections(minute, reason, n) for (minute, reason), n in rejected.items()],
        latest=[latest_reading(r) for pair, r in newest.items() if pair in inserted_pairs],
        last_seen=[LastSeen(robot, epoch_ms(at)) for robot, at in last_seen.items()],
    )


def reading_rejection(r: Reading, reason: RejectReason, detail: str) -> Rejection:
    """A refusal of a reading that passed validation, with the reading as its payload."""
    raw = reading_json(ts=r.ts, received_at=None, seq=r.seq, data=r.data).encode()
    return Rejection.of(r.received_at, sensor_topic(r.robot_id, r.sensor_type), reason, detail, raw)


def conflict_rejections(conflicts: Sequence[Conflict]) -> list[Rejection]:
    return [
        reading_rejection(
            c.reading,
            RejectReason.CONFLICTING_DUPLICATE,
            "a different reading with this robot, sensor type and ts is stored: "
            + c.stored_data[:1000],
        )
        for c in conflicts
    ]


def unknown_robot_rejections(
    readings: Sequence[Reading], unknown: frozenset[str]
) -> list[Rejection]:
    return [
        reading_rejection(r, RejectReason.UNKNOWN_ROBOT, f"robot {r.robot_id!r} is not registered")
        for r in readings
        if r.robot_id in unknown
    ]


class IngestWriter:
    """Commits batches. One writer per process; concurrent `write` calls are safe."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool[Any],
        counters: Counters,
        register_unknown_robots: bool = False,
        store_rejections: bool = True,
        dead_letter_limit: DeadLetterLimit | None = None,
        one_statement_max: int = ONE_STATEMENT_MAX_READINGS,
    ) -> None:
        """`one_statement_max`: the largest batch written in one statement (db.readings
        .insert_all_new) when it needs nothing else; 0 writes every batch in a transaction."""
        self.pool = pool
        self.one_statement_max = one_statement_max
        self.counters = counters
        self.register_unknown_robots = register_unknown_robots
        self.store_rejections = store_rejections
        self.dead_letter_limit = dead_letter_limit
        # Journal entries Redis has applied; the next commit deletes their rows (one round trip
        # fewer than deleting them on their own).
        self._applied_to_retire: list[int] = []
        # Writes run concurrently; a rebuild of the counters runs alone (see `paused`).
        self._writes_in_progress = 0
        self._no_writes = asyncio.Event()
        self._no_writes.set()
        self._writes_allowed = asyncio.Event()
        self._writes_allowed.set()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Holds new writes and waits for running ones: a rebuild must not interleave with
        a commit and its counter update, or that batch would be counted twice or not at all."""
        self._writes_allowed.clear()
        try:
            await self._no_writes.wait()
            yield
        finally:
            self._writes_allowed.set()

    async def write(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection] = ()
    ) -> WriteResult:
        """Commits readings (skipping ones already stored) and dead letters; then the counters.

        A transaction that lost a race (db.errors.LOST_RACE_ERRORS) is run again here. Raises
        asyncpg/OS errors when PostgreSQL fails otherwise: nothing was committed then, and the
        caller must not acknowledge the batch.
        """
        await self._writes_allowed.wait()
        self._writes_in_progress += 1
        self._no_writes.clear()
        try:
            for attempt in range(1, LOST_RACE_ATTEMPTS):
                try:
                    return await self._write_once(readings, rejections)
                except LOST_RACE_ERRORS as exc:
                    log.info(
                        "write lost a race; running it again",
                        extra={"error": repr(exc), "attempt": attempt},
                    )
            return await self._write_once(readings, rejections)
        finally:
            self._writes_in_progress -= 1
            if not self._writes_in_progress:
                self._no_writes.set()

    async def _write_once(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection]
    ) -> WriteResult:
        try:
            return await self._write(readings, rejections, redelivered=False)
        except StoredAlreadyError:
            # A redelivery: the fast path's transaction was lost; the merge skips what is stored.
            return await self._write(readings, rejections, redelivered=True)

    async def _write(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection], *, redelivered: bool
    ) -> WriteResult:
        if (
            not redelivered
            and 0 < len(readings) <= self.one_statement_max
            and not self.register_unknown_robots
            and not (rejections and self.store_rejections)
        ):
            written = await self._write_in_one_statement(readings, rejections)
            if written is not None:
                return written
        with self._retiring() as retiring:
            async with self.pool.acquire() as conn, conn.transaction():
                if redelivered:
                    merge = await merge_via_staging(
                        conn, readings, register_unknown=self.register_unknown_robots
                    )
                else:
                    merge = await merge_readings(
                        conn,
                        readings,
                        register_unknown=self.register_unknown_robots,
                        savepoint=False,
                    )
                all_rejections = [
                    *rejections,
                    *unknown_robot_rejections(readings, merge.unknown_robots),
                    *conflict_rejections(merge.conflicts),
                ]
                admission = None
                if self.store_rejections:
                    to_store: Sequence[Rejection] = all_rejections
                    if self.dead_letter_limit is not None:
                        admission = self.dead_letter_limit.admit(all_rejections, now_s=time.time())
                        to_store = admission.kept
                    await store_dead_letters(conn, to_store)
                entry = build_journal_entry(merge, readings, all_rejections).to_json()
                entry_id = await add_journal_entry(conn, entry, retire=retiring.ids)
            retiring.done = True
        if admission is not None and self.dead_letter_limit is not None:
            self.dead_letter_limit.record(admission)
        counters_applied = await self._apply_counters(entry_id, entry)
        return WriteResult(
            received=len(readings),
            inserted=merge.inserted,
            unknown_robots=merge.unknown_robots,
            rejected=Counter(str(x.reason) for x in all_rejections),
            conflicting=len(merge.conflicts),
            counters_applied=counters_applied,
            dead_letters_over_quota=admission.dropped if admission is not None else Counter(),
        )

    async def _write_in_one_statement(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection]
    ) -> WriteResult | None:
        """The common small batch: all new, all robots registered, no dead letter to store.
        None when a robot is not registered (nothing written): the transaction tells which.
        Raises StoredAlreadyError as the COPY does."""
        entry = build_journal_entry(
            MergeResult(new_groups(readings), frozenset()), readings, rejections
        ).to_json()
        with self._retiring() as retiring:
            async with self.pool.acquire() as conn:
                entry_id = await insert_all_new(
                    conn, readings, journal_entry=entry, retire=retiring.ids
                )
            retiring.done = entry_id is not None
        if entry_id is None:
            return None
        counters_applied = await self._apply_counters(entry_id, entry)
        return WriteResult(
            received=len(readings),
            inserted=len(readings),
            unknown_robots=frozenset(),
            rejected=Counter(str(x.reason) for x in rejections),
            counters_applied=counters_applied,
        )

    @contextmanager
    def _retiring(self) -> Iterator[_Retiring]:
        """The applied journal entries a commit deletes with its own entry. The commit sets
        `done` once it committed; otherwise (it failed, or wrote nothing) the next one gets
        them."""
        retiring = _Retiring(self._applied_to_retire)
        self._applied_to_retire = []
        try:
            yield retiring
        finally:
            if not retiring.done:
                self._applied_to_retire = retiring.ids + self._applied_to_retire

    async def _apply_counters(self, entry_id: int, entry: str) -> bool:
        try:
            await self.counters.apply(entry_id, entry)
        except COUNTERS_AWAY_ERRORS as exc:
            # The journal entry stays; replay_journal applies it once Redis is back.
            log.warning("counter update deferred", extra={"entry": entry_id, "error": str(exc)})
            return False
        self._applied_to_retire.append(entry_id)
        return True

    async def keep_counters(self, *, replay_older_than_s: float) -> bool:
        """Periodic care: rebuilds the counters if Redis lost them (a restart without
        persistence), else applies journal entries whose update was missed. True when it
        rebuilt."""
        if not await self.counters.present():
            async with self.paused():
                if not await self.counters.present():
                    log.warning("counters missing from Redis; rebuilding from PostgreSQL")
                    await rebuild_counters(pool=self.pool, counters=self.counters)
                    return True
        await self.replay_journal(older_than_s=replay_older_than_s)
        return False

    async def replay_journal(self, *, older_than_s: float = 0.0) -> int:
        """Applies journal entries that were committed but not applied; returns how many."""
        replayed = 0
        while True:
            async with self.pool.acquire() as conn:
                entries = await pending_journal_entries(conn, older_than_s=older_than_s)
                for entry_id, entry in entries:
                    await self.counters.apply(entry_id, upgrade_legacy_entry(entry))
                await delete_journal_entries(conn, [entry_id for entry_id, _ in entries])
            replayed += len(entries)
            if len(entries) < 1000:
                return replayed
