"""loadtest.fleet_restart on a small fleet: the broker really restarts under the publishing
fleet, and the count says "nothing lost" only when every reading is there.

Checks accounting only; it times nothing (benchmarks print figures, tests do not)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from harness.services import free_port
from ingest.counters import Counters
from loadtest.fleet_restart import compare, run_once
from loadtest.scratch import register_robots
from tests.conftest import HARNESS

# Runs the bridge and simulators as processes: `-m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

ROBOTS = 30


async def test_a_restart_under_the_fleet_loses_nothing_and_every_link_comes_back(
    database_url: str, counters: Counters, tmp_path: Path
) -> None:
    args = argparse.Namespace(
        robots=ROBOTS,
        partitions=2,
        sensors="imu",
        rate="imu=2",
        batch="imu=2",
        duration=8.0,
        restarts=[3.0],
        shared=False,
        prefix="frtest",
        settle_s=10.0,
    )
    r = await run_once(
        args,
        dsn=database_url,
        counters=counters,
        redis_url=HARNESS.redis_url,
        workdir=tmp_path,
        ports=(free_port(), free_port()),
    )
    # The fault happened: the broker went away and came back, and every link saw it.
    [restart] = r["restarts"]
    assert restart["down_s"] > 0
    assert r["links_lost"] == ROBOTS
    # Readings were committed after the broker's return: the pipeline resumed.
    assert restart["first_commit_after_s"] is not None
    assert r["published_readings"] == ROBOTS * 16
    assert r["stored"] == r["published_readings"]
    assert (r["lost"], r["extra"], r["groups_off"]) == (0, 0, 0)
    assert r["unacknowledged"] == 0
    assert r["redis_minus_rows"] == 0


async def test_a_missing_reading_is_counted_lost_at_its_second(database_url: str) -> None:
    """compare against rows planted with one gap: seq 4 of 10 is not stored."""
    started = time.time()
    since = started - 1.0
    robot = "frgap-0000"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM sensor_readings WHERE robot_id LIKE 'frgap-%'")
        await register_robots(conn, [robot])
        t0 = datetime.fromtimestamp(started, UTC)
        await conn.executemany(
            "INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)"
            " VALUES ($1, 'imu', $2, $2, $3, '{}')",
            [(robot, t0 + timedelta(seconds=0.5 * s), s) for s in range(10) if s != 4],
        )
        tally = {"valid_readings": 10, "seq_first": 0, "seq_last": 9}
        summaries = [{"per_robot": {robot: {"imu": tally}}}]
        got = await compare(conn, summaries, prefix="frgap", since=since, started=started)
        # The reading after the gap (seq 5) was produced 2.5 s into the run.
        assert (got["lost"], got["extra"], got["groups_off"]) == (1, 0, 1)
        assert got["missing_by_second"] == {"2": 1}

        complete = [{"per_robot": {robot: {"imu": {**tally, "valid_readings": 9}}}}]
        got = await compare(conn, complete, prefix="frgap", since=since, started=started)
        assert (got["lost"], got["extra"], got["groups_off"]) == (0, 0, 0)
    finally:
        await conn.execute("DELETE FROM sensor_readings WHERE robot_id LIKE 'frgap-%'")
        await conn.close()
