"""The app with its real lifespan (pool, Redis, group committer) on the session's database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.keys import Scope, generate_key, normalize_scopes
from api.settings import ApiSettings
from db.api_keys import insert_api_key
from harness.services import ROOT, free_port, wait_for_port
from ingest.counters import Counters
from tests.conftest import HARNESS

ROBOTS = ("r1", "r2", "r3")
# The admin key of the `api_url` process (its API_BOOTSTRAP_ADMIN_KEY).
API_PROCESS_ADMIN_KEY = generate_key().token


@pytest.fixture(scope="session")
def api_settings(database_url: str, redis_prefix: str) -> ApiSettings:
    return ApiSettings(
        database_url=database_url,
        redis_url=HARNESS.redis_url,
        redis_prefix=redis_prefix,
        cursor_secret="test-secret",
        max_body_bytes=64 * 1024,
        # Tests fire hundreds of requests at once to exercise group commit; shedding has its
        # own tests (test_http_edge.py) against a real server.
        max_concurrent_requests=10_000,
    )


@pytest.fixture(scope="session")
def api_url(database_url: str, redis_prefix: str) -> Iterator[str]:
    """A real `python -m api` process on a free port, on the session's database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": f"{redis_prefix}st:",
        "API_PORT": str(port),
        "CURSOR_SECRET": "api-process",
        "MAX_BODY_BYTES": str(256 * 1024),
        "API_BOOTSTRAP_ADMIN_KEY": API_PROCESS_ADMIN_KEY,
    }
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env)
    try:
        wait_for_port(port, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="session")
async def app(api_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings)
    async with application.router.lifespan_context(application):
        yield application


async def create_key(pool: asyncpg.Pool[Any], *scopes: Scope, name: str = "test") -> str:
    """Stores a new key with these scopes (as `python -m api keys create` does); the whole key."""
    new = generate_key()
    row = await insert_api_key(
        pool,
        key_id=new.key_id,
        name=name,
        scopes=normalize_scopes(list(scopes)),
        secret_hash=new.secret_hash,
    )
    assert row is not None
    return new.token


@pytest.fixture(scope="session")
async def api_keys(pool: asyncpg.Pool[Any]) -> dict[Scope, str]:
    """One key per scope, for the session (TRUNCATE between tests leaves api_keys alone)."""
    return {scope: await create_key(pool, scope, name=f"test {scope}") for scope in Scope}


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no key."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as c:
        yield c


@pytest.fixture
async def client(
    app: FastAPI, clean_db: asyncpg.Pool[Any], counters: Counters, api_keys: dict[Scope, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh world: empty tables, empty counters, robots r1-r3 registered;
    it sends an admin key (every scope), so tests of behaviour need not think of access."""
    await clean_db.executemany("INSERT INTO robots (id) VALUES ($1)", [(r,) for r in ROBOTS])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api",
        headers={"X-API-Key": api_keys[Scope.ADMIN]},
    ) as c:
        yield c


def now_ms() -> int:
    return int(time.time() * 1000)


IMU = {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0.01, "y": 0.02, "z": 0.03}}
GPS = {"lat": 48.1, "lon": 11.5}
LIDAR = {"distance": 3.5, "angle": 45.0}
