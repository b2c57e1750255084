"""Retrying a service that is away (PostgreSQL, Redis): one backoff policy for every process.

Built on tenacity. A failure is retried after a wait that starts at `first_s` and doubles up
to `max_s`; before each wait the caller's `report` hears the error and the wait, to log it and
count it in a metric: a failure is never retried silently. Which errors mean "away", when to
give up and how to report stay explicit at each caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never
from tenacity.stop import StopBaseT
from tenacity.wait import wait_exponential

# The longest wait between two attempts: a service back from an outage is noticed within it.
MAX_BACKOFF_S = 5.0

Report = Callable[[BaseException, float], None]
T = TypeVar("T")


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    on: tuple[type[BaseException], ...],
    report: Report,
    first_s: float,
    max_s: float = MAX_BACKOFF_S,
    stop: StopBaseT = stop_never,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> T:
    """Awaits `call()` until it returns, retrying errors of `on`.

    `report(error, retry_in_s)` is called before each wait. When `stop` says so (a deadline,
    a shutdown), the last error is raised; errors not in `on` are raised at once. `sleep`
    replaces asyncio.sleep (a wait that a shutdown can cut short).
    """

    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if error is not None:
            report(error, state.upcoming_sleep)

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits it whatever `call` is (a lambda, say).
        return await call()

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(on),
        wait=wait_exponential(multiplier=first_s, min=first_s, max=max_s),
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep or asyncio.sleep,
    )
    result: T = await retrying(attempt)
    return result
