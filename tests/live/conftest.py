"""The live service as a process, on the test's broker, database and Redis prefix, with a
bridge feeding them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from harness.live import LiveProcess
from harness.services import TEST_OPERATOR, Mosquitto
from mqtt_auth.identities import Identity, Role
from telemetry.live import RobotSummary, decode_robot_summary, robot_summary_topic
from tests.conftest import StartBridge
from tests.mqtt_auth.conftest import Client

LIVE_USER = "live"
ROBOTS = ("r1", "r2")

StartLive = Callable[..., LiveProcess]


@pytest.fixture
async def fleet(clean_db: asyncpg.Pool[Any], mosquitto: Mosquitto) -> asyncpg.Pool[Any]:
    """r1, r2 registered with robot identities; no alerts yet."""
    await clean_db.execute("TRUNCATE alerts")
    await clean_db.executemany("INSERT INTO robots (id) VALUES ($1)", [(r,) for r in ROBOTS])
    for robot_id in ROBOTS:
        mosquitto.add_robot(robot_id)
    return clean_db


@pytest.fixture
def start_live(
    fleet: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    database_url: str,
    redis_prefix: str,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> Iterator[StartLive]:
    """Starts a bridge, then returns a function that starts `python -m live` (settings as
    keywords; ticks at 5 Hz, alerts with no hold time and battery written twice a second
    unless told otherwise)."""
    start_bridge()
    mosquitto.add(Identity(LIVE_USER, Role.LIVE, None))
    started: list[LiveProcess] = []

    def start(**settings: str) -> LiveProcess:
        defaults = {
            "live_summary_hz": "5",
            "live_alert_raise_after_s": "0",
            "live_alert_clear_after_s": "0",
            "live_registry_refresh_s": "1",
            "live_battery_write_s": "0.5",
            "live_gaps_refresh_s": "0.5",
        }
        process = LiveProcess(
            database_url=database_url,
            redis_prefix=redis_prefix,
            mqtt_url=mosquitto.url_for(LIVE_USER),
            log_path=tmp_path / "live.log",
            **{**defaults, **settings},
        )
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def operator(mosquitto: Mosquitto) -> Iterator[Client]:
    """An operator subscribed to the whole live view."""
    client = Client(mosquitto, TEST_OPERATOR)
    client.subscribe("fleet/#")
    yield client
    client.close()


def summaries(client: Client, robot_id: str) -> list[RobotSummary]:
    topic = robot_summary_topic(robot_id)
    return [
        decode_robot_summary(bytes(m.payload))
        for m in list(client.messages)
        if m.topic == topic and m.payload
    ]


def alerts(client: Client) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in list(client.messages) if m.topic == "fleet/alerts"]
