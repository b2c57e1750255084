"""Group commit for HTTP ingest: concurrent requests share one IngestWriter.write.

A request's readings wait at most `max_wait_s` (or until `max_readings` are pending) for
others to join; the batch is committed once, and each request is answered only after the
transaction holding its readings committed. Up to `max_inflight` batches commit at a time;
whatever arrives meanwhile forms the next batch, so under load batches grow instead of
requests queueing one commit each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from api.http_errors import StorageUnavailableError
from api.metrics import (
    BATCH_READINGS,
    BATCH_REQUESTS,
    COMMIT_SECONDS,
    INGEST_INSERTED,
    INGEST_READINGS,
    INGEST_REJECTED,
)
from db.errors import ROW_REFUSED_ERRORS
from ingest.isolation import write_isolating
from ingest.write import IngestWriter
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import Reading, Rejection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    readings: Sequence[Reading]
    future: asyncio.Future[frozenset[str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True, slots=True)
class _Group:
    """What one commit holds: requests that wait for it, and refusals to count with it."""

    requests: Sequence[_Request]
    rejections: Sequence[Rejection]


def _by_request(group: _Group) -> list[_Group]:
    """Our split of a refused group commit: each request alone, then the refusals; a single
    request is not split (its readings are answered together)."""
    if len(group.requests) < 2:
        return []
    parts = [_Group([request], ()) for request in group.requests]
    if group.rejections:
        parts.append(_Group([], group.rejections))
    return parts


class GroupCommitter:
    def __init__(
        self,
        writer: IngestWriter,
        *,
        max_readings: int,
        max_wait_s: float,
        max_inflight: int,
    ) -> None:
        """No defaults: ApiSettings (`INGEST_*`) is where they live."""
        self.writer = writer
        self.max_readings = max_readings
        self.max_wait_s = max_wait_s
        self._pending: list[_Request] = []
        self._pending_readings = 0
        self._rejections: list[Rejection] = []
        self._oldest = 0.0
        self._work = asyncio.Event()
        self._full = asyncio.Event()
        # What the runner awaits while a batch fills: resolved when it is full (or closing),
        # or by a timer when its wait is over.
        self._wake: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(max_inflight)
        self._inflight: set[asyncio.Task[None]] = set()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Commits what is pending, waits for commits in flight, then stops."""
        self._closing = True
        self._work.set()
        self._full.set()
        self._wake_runner()
        if self._runner:
            await self._runner
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def commit(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection] = ()
    ) -> frozenset[str]:
        """Returns once `readings` (and the count of `rejections`) are committed: the robots
        of the batch that are not registered."""
        if self._closing:
            raise StorageUnavailableError("ingest (shutting down)")
        request = _Request(readings)
        self._enqueue(request, rejections)
        return await request.future

    def count_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Counts refusals with the next batch; nobody waits for that commit."""
        if rejections and not self._closing:
            self._enqueue(None, rejections)

    def _enqueue(self, request: _Request | None, rejections: Sequence[Rejection]) -> None:
        if not self._pending and not self._rejections:
            self._oldest = time.monotonic()
        if request is not None:
            self._pending.append(request)
            self._pending_readings += len(request.readings)
        self._rejections.extend(rejections)
        if self._pending_readings >= self.max_readings:
            self._full.set()
            self._wake_runner()
        self._work.set()

    def _wake_runner(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _take(self) -> tuple[list[_Request], list[Rejection]]:
        taken: list[_Request] = []
        n = 0
        while self._pending and (
            not taken or n + len(self._pending[0].readings) <= self.max_readings
        ):
            request = self._pending.pop(0)
            taken.append(request)
            n += len(request.readings)
        self._pending_readings -= n
        rejections, self._rejections = self._rejections, []
        if self._pending:
            self._oldest = time.monotonic()
        else:
            self._work.clear()
        if self._pending_readings < self.max_readings and not self._closing:
            self._full.clear()
        return taken, rejections

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            if not self._pending and not self._rejections:
                if self._closing:
                    return
                self._work.clear()
                continue
            wait = self._oldest + self.max_wait_s - time.monotonic()
            if wait > 0 and not self._full.is_set():
                # A timer rather than asyncio.timeout: at the end of most waits the batch is
                # not full, and a timeout would raise a cancellation into this task each time
                # (~4 % of an ingest worker's samples).
                loop = asyncio.get_running_loop()
                self._wake = loop.create_future()
                timer = loop.call_later(wait, self._wake_runner)
                try:
                    await self._wake
                finally:
                    timer.cancel()
                    self._wake = None
            await self._slots.acquire()
            batch, rejections = self._take()
            task = asyncio.create_task(self._flush(batch, rejections))
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _flush(self, batch: list[_Request], rejections: list[Rejection]) -> None:
        """Commits a batch once. Our rules: a row PostgreSQL refuses fails only its request
        (the batch is split into its requests, ingest.isolation); anything else fails every
        request of the batch at once (503, no retry: the client retries)."""
        await write_isolating(
            _Group(batch, rejections),
            write=self._commit,
            split=_by_request,
            refused=self._refused,
        )

    async def _commit(self, group: _Group) -> None:
        readings = [r for request in group.requests for r in request.readings]
        start = time.perf_counter()
        try:
            result = await self.writer.write(readings, group.rejections)
        except ROW_REFUSED_ERRORS:
            raise  # write_isolating splits the batch
        except Exception as exc:  # noqa: BLE001 - whatever failed, every waiting request must hear it
            log.warning("group commit failed: %s", exc)
            self._fail(group.requests, lambda: StorageUnavailableError("postgresql"), exc)
            return
        COMMIT_SECONDS.observe(time.perf_counter() - start)
        BATCH_READINGS.observe(len(readings))
        BATCH_REQUESTS.observe(len(group.requests))
        INGEST_READINGS.inc(len(readings))
        INGEST_INSERTED.inc(result.inserted)
        for reason, n in result.rejected.items():
            INGEST_REJECTED.labels(reason).inc(n)
        for request in group.requests:
            if not request.future.done():
                request.future.set_result(result.unknown_robots)

    async def _refused(self, group: _Group, exc: Exception) -> None:
        detail = str(exc)
        self._fail(
            group.requests, lambda: ContractError(RejectReason.REJECTED_BY_DATABASE, detail), exc
        )

    @staticmethod
    def _fail(
        batch: Sequence[_Request], error: Callable[[], Exception], cause: BaseException
    ) -> None:
        for request in batch:
            if not request.future.done():
                exc = error()
                exc.__cause__ = cause
                request.future.set_exception(exc)
