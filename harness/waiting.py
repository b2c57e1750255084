"""Waiting for an eventually consistent outcome: a wait that times out is a failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, *, timeout: float = 60.0
) -> Any:
    """Polls until probe() == expected and returns that value; raises TimeoutError, showing the
    last value, when it is still different after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while value != expected:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"after {timeout}s probe() gives {value!r}, expected {expected!r}")
        await asyncio.sleep(0.1)
        value = await probe()
    return value
