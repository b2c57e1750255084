"""The counter tests run against one Redis server and against a 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from harness.services import RedisCluster
from ingest.counters import Counters, open_redis
from tests.conftest import CLUSTER_SHARDS, HARNESS


@dataclass(frozen=True)
class CounterTarget:
    url: str
    cluster: bool
    shards: int


@pytest.fixture(params=["redis", "redis-cluster"])
def counter_target(request: pytest.FixtureRequest) -> CounterTarget:
    if request.param == "redis":
        return CounterTarget(HARNESS.redis_url, cluster=False, shards=1)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return CounterTarget(cluster.url, cluster=True, shards=CLUSTER_SHARDS)


@pytest.fixture
async def counters(counter_target: CounterTarget, redis_prefix: str) -> AsyncIterator[Counters]:
    async with open_redis(counter_target.url, cluster=counter_target.cluster) as client:
        c = Counters(redis=client, prefix=redis_prefix, shards=counter_target.shards)
        await c.clear()
        yield c
        await c.clear()
