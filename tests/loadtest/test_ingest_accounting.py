"""The ingest benchmark's smallest configuration counts exactly: every reading stored once.

Checks accounting only; it times nothing (benchmarks print figures, tests do not).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from ingest.counters import Counters
from loadtest.ingest import Bench, Config, run_config
from loadtest.scratch import register_robots
from loadtest.wire_publisher import robot_ids
from tests.conftest import HARNESS

# Each test runs the bridge as a process: `-m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


async def test_smallest_configuration_stores_every_reading_once(
    database_url: str, counters: Counters, tmp_path: Path
) -> None:
    robots = robot_ids(publishers=2, robots_per_publisher=3)
    conn = await asyncpg.connect(database_url)
    try:
        await register_robots(conn, [r for group in robots for r in group])
    finally:
        await conn.close()

    result = await run_config(
        Config(per_message=10, bridges=1, qos=1, rate=0.0),
        Bench(database_url, HARNESS.redis_url, counters, robots, tmp_path, settle_s=5.0),
        readings=4000,
    )

    assert result["published_readings"] == 4000
    assert result["stored"] == 4000
    assert result["lost"] == 0
    assert result["seq_identity_unique"]
    assert result["redis_minus_rows"] == 0
    assert result["rows_without_commit_time"] == 0
    assert sum(result["commits"]["n"]) == 4000
    assert result["latency"] is not None
