"""The API when a service drops out from under it: PostgreSQL connections terminated, Redis
down."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.settings import ApiSettings
from harness.services import RedisServer
from tests.api.conftest import GPS, now_ms


def terminate_api_backends_blocking(database_url: str) -> int:
    """Terminates the API pool's backends while the test's event loop is blocked, so that
    the pool cannot notice before its next statement (as when PostgreSQL restarts while
    the API is busy). Returns how many were terminated."""
    result: list[int] = []

    async def terminate() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            n: int = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'robosense-api'"
            )
            result.append(n)
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(terminate()))
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive() or not result:
        raise TimeoutError("terminating the API's backends did not finish")
    return result[0]


async def test_reads_survive_terminated_connections(
    client: httpx.AsyncClient, app: FastAPI, database_url: str
) -> None:
    stored = await client.post(
        "/api/sensors",
        json={"robot_id": "r1", "sensor_type": "gps", "ts": now_ms(), "data": GPS},
    )
    assert stored.status_code == 201
    read_pool = app.state.resources.read_pool
    reads = (
        "/api/robots",
        "/api/robots/r1",
        "/api/sensors?robot_id=r1",
        # Buckets of seconds read the rows at once; whole minutes ask Redis first, and
        # meanwhile the pool may see the closed socket and reconnect before any read meets it.
        "/api/sensors/aggregate?sensor_type=gps&field=lat&robot_id=r1&bucket=30s",
    )
    for path in reads:
        # The pool holds live connections, then loses all of them.
        assert (await client.get(path)).status_code == 200
        before = read_pool.retries
        assert terminate_api_backends_blocking(database_url) >= 1
        response = await client.get(path)
        assert response.status_code == 200, (path, response.text)
        # The fault reached the read: it met a dead connection and was retried.
        assert read_pool.retries == before + 1, path


async def test_key_check_survives_terminated_connections(
    client: httpx.AsyncClient, app: FastAPI, database_url: str
) -> None:
    """The API key's lookup is a read too: once its cache entry has expired, the first thing a
    request sends to PostgreSQL is the lookup, and a dropped connection must not make it a 503."""
    assert (await client.get("/api/robots")).status_code == 200
    read_pool = app.state.resources.read_pool
    before = read_pool.retries
    await asyncio.sleep(app.state.resources.settings.api_key_cache_ttl_s + 0.2)
    assert terminate_api_backends_blocking(database_url) >= 1
    response = await client.get("/api/robots")
    assert response.status_code == 200, response.text
    assert read_pool.retries == before + 1


@pytest.fixture
async def app_without_redis(
    api_settings: ApiSettings, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, RedisServer]]:
    """An app whose Redis is a private server of its own, which the test stops."""
    with RedisServer(workdir=tmp_path / "redis") as server:
        application = create_app(api_settings.model_copy(update={"redis_url": server.url}))
        async with application.router.lifespan_context(application):
            yield application, server


async def test_robots_are_served_from_postgresql_while_redis_is_down(
    client: httpx.AsyncClient, app_without_redis: tuple[FastAPI, RedisServer]
) -> None:
    application, server = app_without_redis
    # `client` registered r1-r3 in a clean database; its admin key serves this app too.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://api",
        headers={"X-API-Key": client.headers["X-API-Key"]},
    ) as c:
        up = (await c.get("/api/robots")).json()["items"]
        assert [r["live_unavailable"] for r in up] == [False, False, False]
        assert up[0]["connection"] == "unknown"
        server.stop()
        # The fault happened: what needs Redis alone now fails.
        assert (await c.get("/api/stats")).status_code == 503
        page = await c.get("/api/robots")
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        assert [r["id"] for r in items] == ["r1", "r2", "r3"]
        for robot in items:
            assert robot["live_unavailable"] is True
            assert robot["connection"] is None
            assert robot["last_seen"] is None
            assert robot["connection_changed_at"] is None
        detail = await c.get("/api/robots/r2")
        assert detail.status_code == 200, detail.text
        assert detail.json()["live_unavailable"] is True
        assert detail.json()["latest"] is None
        # A write to the registry succeeds and says so, rather than a 503 after the commit.
        created = await c.post("/api/robots", json={"id": "r4", "name": "four"})
        assert created.status_code == 201, created.text
        assert created.json()["live_unavailable"] is True
        patched = await c.patch("/api/robots/r4", json={"name": "FOUR"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["name"] == "FOUR"
        server.start()
        back = (await c.get("/api/robots/r4")).json()
        assert back["live_unavailable"] is False
        assert back["connection"] == "unknown"
