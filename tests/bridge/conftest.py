from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from ingest.counters import Counters
from tests.support.publisher import Publisher
from tests.support.services import Mosquitto


@pytest.fixture
async def registered(clean_db: asyncpg.Pool[Any], counters: Counters) -> asyncpg.Pool[Any]:
    """An empty database with robots r1..r5 registered, and empty counters."""
    await clean_db.execute("INSERT INTO robots (id) SELECT 'r' || g FROM generate_series(1, 5) g")
    return clean_db


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(port=mosquitto.port)
    yield p
    p.close()


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, *, timeout: float = 60.0
) -> Any:
    """Polls until probe() == expected; returns the last value (the assert shows it)."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await probe()
    return value
