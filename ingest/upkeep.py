"""The write path's periodic upkeep, one loop for the bridge and the API: the journal replay
(counter updates Redis missed, `IngestWriter.replay_journal`, inside the bridge's counter care)
and the bridge's other periodic jobs.

A round that fails because a service is away is reported (a log line, and the caller's metric)
and run again after the job's interval, backing off (doubling) up to 5 s for jobs that run
more often than that; an unexpected PostgreSQL error likewise, logged as an error. Anything
else ends the process's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from db.errors import DATABASE_AWAY_ERRORS
from ingest.counters import COUNTERS_AWAY_ERRORS
from telemetry.retry import MAX_BACKOFF_S, retry

log = logging.getLogger(__name__)

UPKEEP_RETRIED: tuple[type[Exception], ...] = (
    *DATABASE_AWAY_ERRORS,
    *COUNTERS_AWAY_ERRORS,
    asyncpg.PostgresError,
)


async def every(
    job: Callable[[], Awaitable[object]],
    *,
    interval_s: float,
    stopping: asyncio.Event,
    name: str,
    failed: Callable[[], None],
) -> None:
    """Runs `job` now and then every `interval_s` until `stopping` is set; `failed` counts
    each failed round (a metric)."""

    async def wait(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)

    def report(exc: BaseException, retry_in_s: float) -> None:
        failed()
        extra = {"job": name, "error": repr(exc), "retry_in_s": retry_in_s}
        if isinstance(exc, (*DATABASE_AWAY_ERRORS, *COUNTERS_AWAY_ERRORS)):
            log.warning("periodic job failed; retrying", extra=extra)
        else:
            log.error(
                "periodic job failed with an unexpected database error", exc_info=exc, extra=extra
            )

    while not stopping.is_set():
        try:
            await retry(
                job,
                on=UPKEEP_RETRIED,
                report=report,
                # Never sooner than the next round would have come: the counters job replays
                # entries older than its interval, and a reconciliation run sooner would meet
                # the update that Redis missed still pending.
                first_s=interval_s,
                max_s=max(interval_s, MAX_BACKOFF_S),
                stop=lambda _: stopping.is_set(),
                sleep=wait,
            )
        except UPKEEP_RETRIED:
            return  # stopping while the service is away: the next start retries
        await wait(interval_s)
