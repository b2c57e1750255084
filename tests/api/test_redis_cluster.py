"""The API on a 3-master Redis Cluster: stats equal the table, robots carry their live fields
and latest readings (the counters' reads merged over the shards)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.keys import Scope
from api.settings import ApiSettings
from harness.services import RedisCluster
from ingest.counters import Counters, open_redis
from tests.api.conftest import ROBOTS
from tests.api.test_stats import ingest_spread, table_counts
from tests.conftest import CLUSTER_SHARDS


@pytest.fixture
async def cluster_client(
    database_url: str,
    redis_cluster: RedisCluster,
    redis_prefix: str,
    clean_db: asyncpg.Pool[Any],
    api_keys: dict[Scope, str],
) -> AsyncIterator[httpx.AsyncClient]:
    prefix = f"{redis_prefix}api-cluster:"
    settings = ApiSettings(
        database_url=database_url,
        redis_url=redis_cluster.url,
        redis_cluster=True,
        redis_counter_shards=CLUSTER_SHARDS,
        redis_prefix=prefix,
        cursor_secret="cluster",
    )
    async with open_redis(redis_cluster.url, cluster=True) as redis:
        await Counters(redis=redis, prefix=prefix, shards=CLUSTER_SHARDS).clear()
    await clean_db.executemany("INSERT INTO robots (id) VALUES ($1)", [(r,) for r in ROBOTS])
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"X-API-Key": api_keys[Scope.ADMIN]},
        ) as client,
    ):
        yield client
    async with open_redis(redis_cluster.url, cluster=True) as redis:
        await Counters(redis=redis, prefix=prefix, shards=CLUSTER_SHARDS).clear()


async def test_stats_and_robots_on_a_redis_cluster(
    cluster_client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    await ingest_spread(cluster_client, minutes=30, n=120, seed=14)
    response = await cluster_client.get("/api/stats", params={"window": "1h", "top": 3})
    assert response.status_code == 200, response.text
    stats = response.json()
    since, until = datetime.fromisoformat(stats["since"]), datetime.fromisoformat(stats["until"])
    expected = await table_counts(clean_db, since, until)
    assert stats["total_readings"] == expected["total"] > 0
    assert stats["by_sensor_type"] == expected["by_type"]
    top = [(t["robot_id"], t["readings"]) for t in stats["top_robots"]]
    assert sorted(top) == sorted(expected["by_robot"])
    assert sum(m["readings"] for m in stats["per_minute"]) == expected["total"]
    assert stats["rejected"]["invalid_schema"] > 0  # the null GPS data, counted by reason

    newest = await clean_db.fetchrow(
        "SELECT ts FROM sensor_readings WHERE robot_id = 'r1' AND sensor_type = 'imu' "
        "ORDER BY ts DESC LIMIT 1"
    )
    assert newest is not None
    robot = await cluster_client.get("/api/robots/r1")
    assert robot.status_code == 200, robot.text
    doc = robot.json()
    assert not doc["live_unavailable"]
    assert datetime.fromisoformat(doc["latest"]["imu"]["ts"]) == newest["ts"]
