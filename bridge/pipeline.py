"""The bridge's loops: collect messages into batches, commit them, then acknowledge.

collector ──(bounded queue of batches)──▶ flusher
The collector validates the next batch while the flusher waits on PostgreSQL. When PostgreSQL is
slow or down the queue fills, the collector stops taking messages, the inbox fills, and the
broker stops sending once its in-flight window is unacknowledged: memory stays bounded
and the backlog waits, persisted, in the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from asyncpg import exceptions as pg

from bridge import metrics
from bridge.batcher import Batch, BatchBuilder
from bridge.inbox import Inbox
from bridge.source import Source
from db.errors import DATABASE_AWAY_ERRORS, ROW_REFUSED_ERRORS
from db.robot_registry import registered_among
from ingest.counters import COUNTERS_AWAY_ERRORS, Counters
from ingest.isolation import write_isolating
from ingest.write import IngestWriter, WriteResult, reading_rejection
from telemetry.errors import RejectReason, RoboSenseError
from telemetry.payload import Reading, Rejection, storable_text
from telemetry.retry import retry

log = logging.getLogger(__name__)

# Setting statuses reads the registry (PostgreSQL) and writes Redis.
_STATUS_ERRORS: tuple[type[Exception], ...] = (*DATABASE_AWAY_ERRORS, *COUNTERS_AWAY_ERRORS)


_Rows = tuple[Sequence[Reading], Sequence[Rejection]]


def _halves(rows: _Rows) -> list[_Rows]:
    """The bridge's split: halves the readings (the refusals go with the first half), then
    the refusals; one row alone is not split."""
    readings, rejections = rows
    if len(readings) > 1:
        half = len(readings) // 2
        return [(readings[:half], rejections), (readings[half:], ())]
    if readings and rejections:
        return [(readings, ()), ((), rejections)]
    if len(rejections) > 1:
        half = len(rejections) // 2
        return [((), rejections[:half]), ((), rejections[half:])]
    return []


# A commit is retried while the database is away, and on an unexpected PostgreSQL error too.
_COMMIT_RETRIED: tuple[type[Exception], ...] = (*DATABASE_AWAY_ERRORS, pg.PostgresError)


def _commit_failed(exc: BaseException, retry_in_s: float, batch: Batch) -> None:
    if isinstance(exc, DATABASE_AWAY_ERRORS):
        metrics.DB_ERRORS.labels("transient").inc()
        log.warning(
            "commit failed; retrying",
            extra={"error": repr(exc), "retry_in_s": retry_in_s, "messages": len(batch.messages)},
        )
    else:
        metrics.DB_ERRORS.labels("other").inc()
        log.error(
            "commit failed with an unexpected database error; retrying",
            exc_info=exc,
            extra={"error": repr(exc), "retry_in_s": retry_in_s},
        )


class ShutdownWithUncommittedBatchError(RoboSenseError):
    def __init__(self, messages: int) -> None:
        super().__init__(
            f"stopped while PostgreSQL was unavailable; {messages} messages left unacknowledged "
            "for redelivery"
        )
        self.messages = messages


class Pipeline:
    def __init__(
        self,
        *,
        inbox: Inbox,
        subscriber: Source,
        builder: BatchBuilder,
        writer: IngestWriter,
        counters: Counters,
        batch_max_readings: int,
        batch_max_delay_s: float,
        batch_min_delay_s: float,
        stop_grace_s: float,
        queue_batches: int = 2,
    ) -> None:
        # The limits have no defaults here: BridgeSettings is where they live.
        self.inbox = inbox
        self.subscriber = subscriber
        self.builder = builder
        self.writer = writer
        self.counters = counters
        self.batch_max_readings = batch_max_readings
        self.batch_max_delay_s = batch_max_delay_s
        self.batch_min_delay_s = batch_min_delay_s
        self._flusher_idle = False
        self._stop_deadline: float | None = None
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=queue_batches)
        self.stopping = asyncio.Event()
        self.stop_grace_s = stop_grace_s
        # For the readiness probe, read from the health thread: when the last commit ended,
        # and (oldest receipt, messages) of each batch handed to the flusher but not acked.
        self.last_commit_at = time.time()
        self._handed_over: deque[tuple[float, int]] = deque()

    def stop(self) -> None:
        """Begins a clean stop: flush, commit, ack; give up on commits after the grace time."""
        self.stopping.set()
        self._stop_deadline = time.monotonic() + self.stop_grace_s

    async def collect(self) -> None:
        """Fills batches until stopped, and hands one over when it is full, when its oldest
        message is due, or as soon as the flusher is idle (after a few ms to gather company).

        The last is group commit: under light load a reading waits for one commit, not for a
        fixed delay; under heavy load the flusher is never idle, so batches grow to the size or
        time limit, which is where throughput comes from.
        """
        builder = self.builder
        while not self.stopping.is_set():
            batch = builder.batch
            if batch:
                age = time.time() - batch.oldest_received_at
                if (
                    batch.size >= self.batch_max_readings
                    or age >= self.batch_max_delay_s
                    or (self._flusher_idle and age >= self.batch_min_delay_s)
                ):
                    await self._hand_over(builder.take())
                    continue
                # Look again soon: the flusher may have become idle meanwhile.
                await self.inbox.wait(
                    min(self.batch_max_delay_s - age, max(self.batch_min_delay_s - age, 0.002))
                )
            else:
                await self.inbox.wait(0.5)
            self._fill(builder)
            metrics.INBOX_DEPTH.set(len(self.inbox))
            metrics.SUBSCRIBED.set(1 if self.subscriber.subscribed else 0)
        # Shutdown: what was delivered to us so far is committed and acked; later arrivals stay
        # unacknowledged and the broker redelivers them to our next session.
        for message in self.inbox.take(len(self.inbox)):
            builder.add(message)
        if builder.batch:
            await self._hand_over(builder.take())
        await self.queue.put(None)

    async def _hand_over(self, batch: Batch) -> None:
        self._handed_over.append((batch.oldest_received_at, len(batch.messages)))
        await self.queue.put(batch)

    def oldest_waiting(self) -> float | None:
        """When the oldest message not yet committed arrived (time.time()), or None."""
        with contextlib.suppress(IndexError):  # popped by the loop meanwhile
            return self._handed_over[0][0]
        if self.builder.batch:
            return self.builder.batch.oldest_received_at
        return self.inbox.oldest_received_at()

    def waiting(self) -> int:
        """Messages received and not yet committed (approximate from another thread)."""
        handed_over = sum(n for _, n in list(self._handed_over))
        return handed_over + len(self.builder.batch.messages) + len(self.inbox)

    def _fill(self, builder: BatchBuilder) -> None:
        """Adds waiting messages until the batch is full or the inbox is empty.

        After a stall (database outage, backlog at start) every message is already past its
        delay: filling to the size limit, not just taking one chunk, keeps batches large then.
        """
        while builder.batch.size < self.batch_max_readings:
            # A message holds 1 to 1,000 readings: take small chunks so as not to overshoot.
            chunk = self.inbox.take(min(256, self.batch_max_readings - builder.batch.size))
            if not chunk:
                return
            for message in chunk:
                builder.add(message)

    async def flush(self) -> None:
        while True:
            self._flusher_idle = self.queue.empty()
            batch = await self.queue.get()
            self._flusher_idle = False
            if batch is None:
                return
            started = time.monotonic()
            result = await self._write_until_committed(batch)
            if batch.statuses:
                await self._set_statuses(batch)
            await self.subscriber.ack(batch.messages)
            now = time.time()
            self.last_commit_at = now
            self._handed_over.popleft()
            metrics.FLUSH_SECONDS.observe(time.monotonic() - started)
            metrics.LAG_SECONDS.observe(now - batch.oldest_received_at)
            metrics.MESSAGES_RECEIVED.inc(len(batch.messages))
            metrics.BATCH_SIZE.observe(batch.size)
            metrics.READINGS_INSERTED.inc(result.inserted)
            metrics.READINGS_DUPLICATE.inc(max(result.duplicates, 0))
            metrics.READINGS_CONFLICTING.inc(result.conflicting)
            metrics.RETAINED_IGNORED.inc(batch.retained_readings)
            for reason, n in result.rejected.items():
                metrics.REJECTED.labels(reason).inc(n)
            for reason, n in result.dead_letters_over_quota.items():
                metrics.DEAD_LETTERS_OVER_QUOTA.labels(reason).inc(n)
            if not result.counters_applied:
                metrics.COUNTER_UPDATES_DEFERRED.inc()

    async def _write_until_committed(self, batch: Batch) -> WriteResult:
        """Our rule for a database that is away: retry with backoff until it commits, never
        ack unwritten; an unexpected PostgreSQL error is retried too (logged as an error:
        waiting will not fix it without a person). Gives up only when stopping past the grace
        time: nothing of the batch was acked, so the broker redelivers it to our next session,
        and waiting longer would only get us killed by the supervisor."""
        try:
            return await retry(
                lambda: self._write_isolating(batch.decoded.readings, batch.decoded.rejections),
                on=_COMMIT_RETRIED,
                first_s=0.1,
                report=lambda exc, retry_in_s: _commit_failed(exc, retry_in_s, batch),
                stop=lambda _: self._past_stop_deadline(),
            )
        except _COMMIT_RETRIED as exc:
            raise ShutdownWithUncommittedBatchError(len(batch.messages)) from exc

    def _past_stop_deadline(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    async def _write_isolating(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection]
    ) -> WriteResult:
        """Writes; when one row (a reading or a dead letter) makes PostgreSQL refuse the
        batch, halves until it is found, and dead-letters it or stores a plainer dead letter."""
        results = await write_isolating(
            (readings, rejections),
            write=lambda part: self.writer.write(*part),
            split=_halves,
            refused=lambda part, exc: self._refused_by_database(*part, exc),
            noticed=lambda exc: metrics.DB_ERRORS.labels("data").inc(),
        )
        return WriteResult.combined(results)

    async def _refused_by_database(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection], exc: Exception
    ) -> WriteResult:
        """One row alone was refused. A reading becomes a dead letter; a dead letter that was
        itself refused is replaced by one holding only ASCII text; if even that is refused it
        is dropped with an error, so that no content can stall the stream."""
        error = storable_text(str(exc))[:500]
        if readings:
            refused = reading_rejection(readings[0], RejectReason.REJECTED_BY_DATABASE, error)
            return await self._write_isolating((), [refused])
        original = rejections[0]
        plain = original._replace(
            topic=ascii(original.topic)[:500],
            detail=f"dead letter refused by the database ({error}); detail: "
            f"{ascii(original.detail)[:500]}",
        )
        try:
            return await self.writer.write([], [plain])
        except ROW_REFUSED_ERRORS as again:
            metrics.DEAD_LETTERS_DROPPED.inc()
            log.error(  # noqa: TRY400 - the data's fault; the traceback says nothing more
                "dead letter refused by the database; dropped",
                extra={"topic": plain.topic, "reason": str(original.reason), "error": repr(again)},
            )
            return WriteResult(received=0, inserted=0, unknown_robots=frozenset())

    async def _set_statuses(self, batch: Batch) -> None:
        """Tracks the statuses of registered robots only: anyone may publish a retained status
        for any id, and Redis must not keep one per made-up robot."""
        try:
            async with self.writer.pool.acquire() as conn:
                known = await registered_among(conn, list(batch.statuses))
            await self.counters.set_statuses(
                (robot, status, at)
                for robot, (status, at) in batch.statuses.items()
                if robot in known
            )
        except _STATUS_ERRORS as exc:
            # A status is retained by the broker and comes again with our next subscription
            # (and the hourly refresh): not retried here, but reported.
            metrics.STATUS_UPDATES_LOST.inc()
            log.warning("status update lost", extra={"error": repr(exc)})
            return
        if ignored := len(batch.statuses) - len(known):
            metrics.STATUSES_IGNORED.inc(ignored)
