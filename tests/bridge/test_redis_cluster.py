"""Two bridges counting into a 3-master Redis Cluster: stored once, counted once, the counters
spread over every master, rebuilt there by `python -m bridge rebuild-counters`, and by a
running bridge when the cluster loses them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import RedisCluster as RedisClusterClient

from harness.publisher import Publisher, battery_messages
from harness.services import ROOT, Mosquitto, RedisCluster
from harness.waiting import eventually
from ingest.counters import Counters, open_redis
from tests.bridge.test_delivery import redis_total, row_count
from tests.conftest import CLUSTER_SHARDS, StartBridge

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster_counters(
    redis_cluster: RedisCluster, redis_prefix: str
) -> AsyncIterator[Counters]:
    async with open_redis(redis_cluster.url, cluster=True) as client:
        counters = Counters(redis=client, prefix=redis_prefix, shards=CLUSTER_SHARDS)
        await counters.clear()
        yield counters
        await counters.clear()


async def test_bridges_count_into_a_redis_cluster(
    start_bridge: StartBridge,
    publisher: Publisher,
    registered: asyncpg.Pool[Any],
    mosquitto: Mosquitto,
    redis_cluster: RedisCluster,
    cluster_counters: Counters,
    database_url: str,
    redis_prefix: str,
) -> None:
    cluster_settings = {
        "redis_url": redis_cluster.url,
        "redis_cluster": "true",
        "redis_counter_shards": str(CLUSTER_SHARDS),
        "share_group": mosquitto.share_group,
    }
    first = start_bridge(**cluster_settings)
    second = start_bridge("second", **cluster_settings)
    start = int(time.time() * 1000) - 10_000
    robots = ("r1", "r2", "r3", "r4")
    publisher.publish_all(
        [m for r in robots for m in battery_messages(r, 1000, start_ms=start, per_message=20)]
    )
    assert await eventually(lambda: row_count(registered), 4000) == 4000
    counters = cluster_counters
    assert await eventually(lambda: redis_total(counters, start, 1000), 4000) == 4000
    for robot in robots:
        seq = await counters.seq_stats(robot, "battery")
        assert seq is not None and (seq.count, seq.gaps) == (1000, 0)
    newest = [orjson.loads(r["battery"])["seq"] for r in await counters.latest(list(robots))]
    assert newest == [999] * 4

    # Batches went to every shard, so every master holds counter keys.
    client = counters.redis
    assert isinstance(client, RedisClusterClient)

    async def masters_holding_keys() -> int:
        held = 0
        for node in client.get_primaries():
            _, keys = await client.scan(
                0, match=f"{redis_prefix}*", count=10_000, target_nodes=node
            )
            held += bool(keys[node.name] if isinstance(keys, dict) else keys)
        return held

    assert await masters_holding_keys() == 3

    # The cluster loses the counters; the rebuild command puts them back on the cluster. (The
    # bridges are stopped first: they would rebuild too, racing the command.)
    first.terminate()
    second.terminate()
    await counters.clear()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_PREFIX": redis_prefix,
        **{k.upper(): v for k, v in cluster_settings.items()},
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "rebuild-counters"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert await redis_total(counters, start, 1000) == 4000
    assert await counters.present()
    [latest] = await counters.latest(["r2"])
    assert orjson.loads(latest["battery"])["seq"] == 999

    # A running bridge notices the loss on its own (its counter care) and rebuilds.
    start_bridge("third", journal_replay_interval_s="0.5", **cluster_settings)
    assert await counters.clear() > 0
    assert await eventually(lambda: redis_total(counters, start, 1000), 4000) == 4000
    assert await eventually(counters.present, True)
