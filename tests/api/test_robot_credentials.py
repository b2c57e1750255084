"""Registering a robot can hand out its MQTT identity; deleting the robot revokes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from api.app import create_app
from api.keys import Scope
from api.settings import ApiSettings
from harness.publisher import Publisher
from harness.services import Mosquitto
from harness.waiting import eventually
from ingest.counters import Counters
from mqtt_auth.probe import connack, wait_accepted
from telemetry.topics import sensor_topic
from tests.api.conftest import create_key
from tests.conftest import HARNESS, StartBridge


@pytest.fixture
async def provisioning_api(
    database_url: str,
    redis_prefix: str,
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    mosquitto: Mosquitto,
    pool: asyncpg.Pool[Any],
) -> AsyncIterator[httpx.AsyncClient]:
    """An API that writes the test broker's identity files and signals it; the client holds
    a key of the registry scope (what provisioning needs) and read."""
    key = await create_key(pool, Scope.REGISTRY, Scope.READ, name="provisioning")
    settings = ApiSettings(
        database_url=database_url,
        redis_url=HARNESS.redis_url,
        redis_prefix=redis_prefix,
        cursor_secret="test-secret",
        mqtt_auth_dir=str(mosquitto.auth.directory),
        mosquitto_pid_file=str(mosquitto.auth.pid_file),
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"X-API-Key": key},
        ) as c,
    ):
        yield c


async def test_credentials_are_returned_once_work_rotate_and_die_with_the_robot(
    provisioning_api: httpx.AsyncClient,
    mosquitto: Mosquitto,
    start_bridge: StartBridge,
    clean_db: asyncpg.Pool[Any],
) -> None:
    start_bridge()
    created = await provisioning_api.post(
        "/api/robots", params={"mqtt_credentials": "true"}, json={"id": "r9"}
    )
    assert created.status_code == 201, created.text
    creds = created.json()["mqtt"]
    assert creds["username"] == "r9"
    wait_accepted("127.0.0.1", mosquitto.port, "r9", creds["password"])
    robot = Publisher(port=mosquitto.port, username="r9", password=creds["password"])
    try:
        payload = orjson.dumps({"ts": int(time.time() * 1000), "data": {"level": 50.0}})
        robot.publish_all([(sensor_topic("r9", "battery"), payload)])
    finally:
        robot.close()

    async def stored() -> int:
        n: int = await clean_db.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(stored, 1) == 1
    # Shown once: reading the robot back does not show it.
    assert "mqtt" not in (await provisioning_api.get("/api/robots/r9")).json()

    rotated = await provisioning_api.post("/api/robots/r9/mqtt-credentials")
    assert rotated.status_code == 200
    new_password = rotated.json()["password"]
    wait_accepted("127.0.0.1", mosquitto.port, "r9", new_password)
    assert connack("127.0.0.1", mosquitto.port, "r9", creds["password"]) != 0

    assert (await provisioning_api.delete("/api/robots/r9")).status_code == 204
    assert mosquitto.identities.get("r9") is None
    deadline = time.monotonic() + 10
    while connack("127.0.0.1", mosquitto.port, "r9", new_password) == 0:
        assert time.monotonic() < deadline, "the broker still accepts a deleted robot"
        await asyncio.sleep(0.05)


async def test_an_api_without_an_identity_directory_says_so(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/robots", params={"mqtt_credentials": "true"}, json={"id": "r8"})
    assert r.status_code == 409
    assert r.json()["error"] == "not_configured"
    assert (await client.get("/api/robots/r8")).status_code == 404
    r = await client.post("/api/robots/r1/mqtt-credentials")
    assert r.status_code == 409
