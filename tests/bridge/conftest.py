from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from harness.publisher import Publisher
from harness.services import TEST_PUBLISHER, Mosquitto
from ingest.counters import Counters


@pytest.fixture
async def registered(clean_db: asyncpg.Pool[Any], counters: Counters) -> asyncpg.Pool[Any]:
    """An empty database with robots r1..r5 registered, and empty counters."""
    await clean_db.execute("INSERT INTO robots (id) SELECT 'r' || g FROM generate_series(1, 5) g")
    return clean_db


@pytest.fixture
def publisher(mosquitto: Mosquitto) -> Iterator[Publisher]:
    p = Publisher(
        port=mosquitto.port, username=TEST_PUBLISHER, password=mosquitto.passwords[TEST_PUBLISHER]
    )
    yield p
    p.close()
