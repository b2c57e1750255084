"""Simulator -> Mosquitto -> bridge -> PostgreSQL and Redis, checked against the summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.keys import generate_key
from api.settings import ApiSettings
from edge_simulator.config import SensorRate, SimulationConfig
from edge_simulator.faults import FaultConfig
from edge_simulator.registry import register_via_api, register_via_db
from edge_simulator.run import simulate
from harness.bridge import BridgeProcess
from harness.services import Mosquitto
from harness.waiting import eventually
from ingest.counters import Counters
from tests.conftest import HARNESS
from tests.edge_simulator.credentials import provisioned

pytestmark = pytest.mark.slow

MIX = {
    "imu": SensorRate(100.0, 25),
    "gps": SensorRate(2.0, 1),
    "lidar": SensorRate(5.0, 1),
    "battery": SensorRate(1.0, 1),
}


def base_config(mosquitto: Mosquitto, **overrides: Any) -> SimulationConfig:
    now = int(time.time() * 1000)
    cfg = SimulationConfig(
        robots=6,
        duration_s=5.0,
        start_ts_ms=now - now % 1000 - 60_000,
        seed=21,
        mix=MIX,
        flat_out=True,
        qos=1,
        mqtt_port=mosquitto.port,
    )
    return provisioned(replace(cfg, **overrides), mosquitto)


async def test_database_holds_exactly_the_summarys_readings_and_dead_letters(
    bridge: BridgeProcess, clean_db: asyncpg.Pool[Any], database_url: str, mosquitto: Mosquitto
) -> None:
    cfg = base_config(
        mosquitto,
        faults=FaultConfig(
            duplicate=0.1,
            out_of_order=0.1,
            late=0.05,
            late_max_s=1.0,
            malformed=0.1,
            skew=0.3,
            skew_out=0.2,
        ),
    )
    await register_via_db(database_url=database_url, robot_ids=cfg.fleet_ids())
    summary = await simulate(config=cfg)
    totals = summary.totals()
    assert summary.unacknowledged == 0

    async def row_count() -> int:
        n: int = await clean_db.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    async def dead_letters() -> dict[str, int]:
        rows = await clean_db.fetch(
            "SELECT reason, count(*)::int AS n FROM dead_letters GROUP BY 1"
        )
        return {r["reason"]: r["n"] for r in rows}

    def dropped(reason: str) -> int:
        try:
            return int(bridge.metric(f'bridge_dead_letters_over_quota_total{{reason="{reason}"}}'))
        except KeyError:
            return 0

    async def accounted() -> dict[str, int]:
        """Dead letters stored, plus those a flooding source had counted but not stored."""
        stored = await dead_letters()
        return {r: stored.get(r, 0) + dropped(r) for r in stored.keys() | expected_dead.keys()}

    expected_dead = totals["expected_dead_letters"]
    assert await eventually(row_count, totals["valid_readings"]) == totals["valid_readings"]
    assert await eventually(accounted, expected_dead) == expected_dead
    await asyncio.sleep(1.0)  # nothing more trickles in
    assert await row_count() == totals["valid_readings"]
    assert await accounted() == expected_dead

    rows = await clean_db.fetch(
        "SELECT robot_id, sensor_type, count(*)::int AS n, min(seq) AS lo, max(seq) AS hi, "
        "(extract(epoch FROM min(ts)) * 1000)::bigint AS ts_lo, "
        "(extract(epoch FROM max(ts)) * 1000)::bigint AS ts_hi "
        "FROM sensor_readings GROUP BY 1, 2"
    )
    stored = {(r["robot_id"], r["sensor_type"]): r for r in rows}
    for key, tally in summary.tallies.items():
        if tally.valid_readings == 0:
            assert key not in stored
            continue
        r = stored[key]
        assert (r["n"], r["lo"], r["hi"]) == (tally.valid_readings, tally.seq_first, tally.seq_last)
        assert (r["ts_lo"], r["ts_hi"]) == (tally.ts_first_ms, tally.ts_last_ms)
    assert totals["duplicate_readings"] > 0
    assert sum(totals["rejected_readings"].values()) > 0


@pytest.fixture
async def api(
    clean_db: asyncpg.Pool[Any], counters: Counters, database_url: str, redis_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API in process, with its real lifespan, on the session's database and Redis;
    the client holds the bootstrap admin key."""
    admin_key = generate_key().token
    settings = ApiSettings(
        database_url=database_url,
        redis_url=HARNESS.redis_url,
        redis_prefix=redis_prefix,
        cursor_secret="test-secret",
        api_bootstrap_admin_key=admin_key,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"X-API-Key": admin_key},
        ) as c,
    ):
        yield c


async def test_api_reports_an_uncleanly_dropped_robot_offline(
    bridge: BridgeProcess, api: httpx.AsyncClient, mosquitto: Mosquitto
) -> None:
    cfg = base_config(
        mosquitto,
        robots=1,
        duration_s=4.0,
        flat_out=False,
        start_ts_ms=None,
        mix={"battery": SensorRate(5.0, 1)},
        faults=FaultConfig(drop=1.0, drop_down_s=1.5),
    )
    [robot] = cfg.fleet_ids()
    registered = await register_via_api(client=api, robot_ids=[robot])
    assert (registered.created, registered.existing) == (1, 0)
    again = await register_via_api(client=api, robot_ids=[robot])
    assert (again.created, again.existing) == (0, 1)
    seen: list[str] = []

    async def connection() -> Any:
        response = await api.get(f"/api/robots/{robot}")
        response.raise_for_status()
        current = response.json()["connection"]
        if current != "unknown" and (not seen or seen[-1] != current):
            seen.append(current)
        return current

    async def watch() -> None:
        while True:
            await connection()
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        summary = await simulate(config=cfg)
        assert await eventually(connection, "offline") == "offline"
    finally:
        watcher.cancel()
    assert len(summary.drops) == 1
    # online; offline from the Last Will while away; online again; offline at the clean end.
    assert seen == ["online", "offline", "online", "offline"], (seen, bridge.log_tail())
    body = (await api.get(f"/api/robots/{robot}")).json()
    assert body["latest"]["battery"]["seq"] == summary.tallies[(robot, "battery")].seq_last
