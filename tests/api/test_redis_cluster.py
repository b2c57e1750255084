"""The API on a 3-master Redis Cluster: stats equal the table, robots carry their live fields
and latest readings, bucket aggregates keep minutes (the counters' reads merged over the
shards)."""

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
from tests.api.conftest import ROBOTS, now_ms
from tests.api.test_aggregates import answer, iso, post_battery, rows_answer, same_answer
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


async def test_bucket_aggregates_keep_minutes_on_a_redis_cluster(
    cluster_client: httpx.AsyncClient,
    clean_db: asyncpg.Pool[Any],
    redis_cluster: RedisCluster,
    redis_prefix: str,
) -> None:
    """The minutes' counts are read from every shard and summed; the kept partials live in a
    key of their own slot. Both answers (minutes read, then kept) are the rows'."""
    first = now_ms() // 60_000 * 60_000 - 6 * 60_000
    for i in range(36):
        await post_battery(cluster_client, "r1", first + i * 10_000, i)
    for robot_id in ("r1", None):
        params = {
            "field": "level",
            "fn": "avg",
            "bucket": "1m",
            "since": iso(first + 7_000),
            "until": iso(first + 6 * 60_000),
        }
        if robot_id:
            params["robot_id"] = robot_id
        expected = await rows_answer(clean_db, params)
        assert len(expected) == 6
        assert same_answer(await answer(cluster_client, params), expected)
        assert same_answer(await answer(cluster_client, params), expected)
    minute = first // 1000 + 60
    async with open_redis(redis_cluster.url, cluster=True) as redis:
        counters = Counters(
            redis=redis, prefix=f"{redis_prefix}api-cluster:", shards=CLUSTER_SHARDS
        )
        for robot_id in ("r1", None):
            kept, _ = await counters.kept_partials(
                sensor_type="battery", path=["level"], robot_id=robot_id, minutes=[minute]
            )
            partial = kept[minute]
            assert partial is not None and partial.readings == 6, kept
