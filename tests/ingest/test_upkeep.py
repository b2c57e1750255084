"""The periodic upkeep loop (journal replay in the bridge and the API): a round that fails
because a service is away is reported and run again with backoff (from the job's interval,
doubling); a stop ends the loop even while the service stays away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from harness.waiting import eventually
from ingest.upkeep import every


def _loop(
    job: Callable[[], Awaitable[None]],
    stopping: asyncio.Event,
    failures: list[None],
    *,
    interval_s: float,
) -> asyncio.Task[None]:
    return asyncio.create_task(
        every(
            job,
            interval_s=interval_s,
            stopping=stopping,
            name="replay",
            failed=lambda: failures.append(None),
        )
    )


async def test_a_failed_round_is_reported_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stopping = asyncio.Event()
    runs: list[str] = []
    failures: list[None] = []

    async def job() -> None:
        if len(runs) < 2:
            runs.append("failed")
            raise RedisConnectionError("Redis is away")
        runs.append("done")

    loop = _loop(job, stopping, failures, interval_s=0.05)

    async def so_far() -> list[str]:
        # The loop goes on after its success (every 0.05 s): compare the first three runs.
        return runs[:3]

    try:
        await eventually(so_far, ["failed", "failed", "done"])
    finally:
        stopping.set()
        await asyncio.wait_for(loop, 10)
    assert len(failures) == 2
    warnings = [r for r in caplog.records if r.getMessage() == "periodic job failed; retrying"]
    assert all(getattr(r, "job", None) == "replay" for r in warnings)
    # After the interval, then twice that: the waits double.
    assert [getattr(r, "retry_in_s", None) for r in warnings] == [0.05, 0.1]


async def test_stopping_ends_the_loop_while_the_service_stays_away() -> None:
    stopping = asyncio.Event()
    failures: list[None] = []

    async def job() -> None:
        raise ConnectionRefusedError("PostgreSQL is away")

    # An hour between rounds: the stop must cut the wait after the first failure short.
    loop = _loop(job, stopping, failures, interval_s=3600)

    async def retried() -> bool:
        return len(failures) >= 1

    await eventually(retried, True)
    stopping.set()
    await asyncio.wait_for(loop, 10)  # returns instead of raising: the next start retries
