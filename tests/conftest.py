from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from db.connect import open_pool
from db.migrate import prepare_database
from harness.bridge import BridgeProcess
from harness.edge import TcpProxy
from harness.services import Mosquitto, RedisCluster
from harness.settings import HarnessSettings
from ingest.counters import Counters
from mqtt_auth.identities import Identity, Role

# The servers the tests make their private databases and Redis prefixes on (TEST_POSTGRES_URL,
# TEST_REDIS_URL): read here once, for every test module and fixture.
HARNESS = HarnessSettings()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs the bridge as a process is slow, marked or not: `-m "not slow"`
    stays the fast loop as such tests are added."""
    for item in items:
        if "start_bridge" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


_TABLES = "robots, sensor_readings, dead_letters, counter_journal"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this test session's own, migrated, dropped at the end."""
    import asyncio
    from datetime import UTC, datetime

    name = f"rs_test_{uuid.uuid4().hex[:10]}"
    dsn = f"{HARNESS.postgres_url}/{name}"

    async def setup() -> None:
        await prepare_database(
            dsn=dsn, today=datetime.now(UTC).date(), days_back=8, days_ahead=3, retention_days=30
        )

    async def teardown() -> None:
        conn = await asyncpg.connect(f"{HARNESS.postgres_url}/postgres")
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    asyncio.run(setup())
    yield dsn
    asyncio.run(teardown())


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"rstest-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    async with open_pool(dsn=database_url, max_size=4) as p:
        yield p


@pytest.fixture(scope="session")
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(HARNESS.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# Counter shards on the test cluster: one per master, as docs/scaling.md advises.
CLUSTER_SHARDS = 3


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on free loopback ports, for the session (started when a test
    first asks for it)."""
    with RedisCluster(workdir=tmp_path_factory.mktemp("redis-cluster"), masters=3) as cluster:
        yield cluster


@pytest.fixture
async def counters(redis: Redis, redis_prefix: str) -> AsyncIterator[Counters]:
    c = Counters(redis=redis, prefix=redis_prefix)
    await c.clear()
    yield c
    await c.clear()


@pytest.fixture
async def clean_db(pool: asyncpg.Pool[Any]) -> asyncpg.Pool[Any]:
    """The session's database, emptied before the test."""
    await pool.execute(f"TRUNCATE {_TABLES}")
    return pool


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private broker running our mosquitto.conf on a free port, for one test."""
    with Mosquitto(workdir=tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def wan(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[TcpProxy]:
    """The site's uplink: a TCP proxy to the cloud broker (the `mosquitto` fixture)."""
    proxy = TcpProxy(workdir=tmp_path / "wan", target_port=mosquitto.port)
    proxy.start()
    yield proxy
    proxy.stop()


StartBridge = Callable[..., BridgeProcess]


@pytest.fixture
def start_bridge(
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    database_url: str,
    redis_prefix: str,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> Iterator[StartBridge]:
    """Starts `python -m bridge` processes on the test's broker, database and Redis prefix
    (emptied first); `name` is the bridge's MQTT identity (its client id) and names its log
    file; other keywords are settings. Every bridge started is stopped at the end of the test."""
    started: list[BridgeProcess] = []

    def start(name: str = "bridge", **settings: str) -> BridgeProcess:
        if name not in mosquitto.passwords:
            mosquitto.add(Identity(name, Role.BRIDGE, None))
        process = BridgeProcess(
            database_url=database_url,
            redis_prefix=redis_prefix,
            mqtt_url=mosquitto.url_for(name),
            log_path=tmp_path / f"{name}.log",
            client_id=name,
            **{"redis_url": HARNESS.redis_url, **settings},
        )
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def bridge(start_bridge: StartBridge) -> BridgeProcess:
    """One bridge, started."""
    return start_bridge()
