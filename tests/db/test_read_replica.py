"""Reads from a streaming replica (`DATABASE_READ_URL`): the API's read routes answer from it,
as of its replay, while writes and key checks stay on the primary.

The replica is made with `pg_basebackup -R` from the machine's PostgreSQL when it allows
replication connections (it needs a `replication` line in pg_hba.conf, which these tests never
add), and otherwise from a primary of the test's own (initdb), so the routing is tested either
way and the skip says which setting the machine lacks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.keys import Scope
from api.settings import ApiSettings
from db.connect import open_pool
from db.migrate import prepare_database
from db.read_pool import open_read_pool
from harness.postgres import LocalPostgres, ReplicationRefused, new_primary, new_replica
from harness.waiting import eventually
from tests.api.conftest import create_key
from tests.conftest import HARNESS

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Replicated:
    primary_dsn: str  # the test's database on the primary
    replica_dsn: str  # the same database on the replica


async def _prepare(dsn: str) -> None:
    await prepare_database(
        dsn=dsn, today=datetime.now(UTC).date(), days_back=2, days_ahead=2, retention_days=30
    )


@pytest.fixture(scope="module", params=["machine-primary", "private-primary"])
def replicated(request: pytest.FixtureRequest) -> Iterator[Replicated]:
    import asyncio

    name = f"rs_replica_{uuid.uuid4().hex[:8]}"
    primary: LocalPostgres | None = None
    if request.param == "machine-primary":
        primary_url = HARNESS.postgres_url
        host_port = primary_url.rsplit("@", 1)[-1]
        host, port = host_port.split(":")
        try:
            replica = new_replica(primary_host=host, primary_port=int(port), pg_bin=HARNESS.pg_bin)
        except ReplicationRefused as refused:
            pytest.skip(
                f"the machine's PostgreSQL ({host_port}) refuses replication connections "
                f"({refused}); this test changes none of its settings: a line "
                "`host replication postgres 127.0.0.1/32 trust` in its pg_hba.conf (and a "
                "reload) would let it run; the private-primary case tests the same routing"
            )
    else:
        primary = new_primary(pg_bin=HARNESS.pg_bin)
        primary.start()
        primary_url = primary.url
        replica = new_replica(
            primary_host="127.0.0.1", primary_port=primary.port, pg_bin=HARNESS.pg_bin
        )
    # The database is created after the copy: it reaches the replica by streaming, as every
    # later write does.
    asyncio.run(_prepare(f"{primary_url}/{name}"))
    try:
        with replica:

            async def replayed_up_to_primary() -> bool:
                # Everything the primary had written (the database and its migration) is replayed.
                primary_conn = await asyncpg.connect(f"{primary_url}/postgres")
                replica_conn = await asyncpg.connect(f"{replica.url}/postgres")
                try:
                    lsn = await primary_conn.fetchval("SELECT pg_current_wal_lsn()")
                    return bool(
                        await replica_conn.fetchval(
                            "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn
                        )
                    )
                finally:
                    await primary_conn.close()
                    await replica_conn.close()

            assert asyncio.run(eventually(replayed_up_to_primary, True))
            yield Replicated(f"{primary_url}/{name}", f"{replica.url}/{name}")
    finally:
        if primary is not None:
            primary.remove()
        else:

            async def drop() -> None:
                conn = await asyncpg.connect(f"{primary_url}/postgres")
                try:
                    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                finally:
                    await conn.close()

            asyncio.run(drop())


@pytest.fixture
async def primary_pool(replicated: Replicated) -> AsyncIterator[asyncpg.Pool[Any]]:
    async with open_pool(dsn=replicated.primary_dsn) as pool:
        yield pool


async def test_read_pool_reads_the_replica_when_given(
    replicated: Replicated, primary_pool: asyncpg.Pool[Any]
) -> None:
    async with open_read_pool(
        primary_pool, read_url=replicated.replica_dsn, min_size=1, max_size=2, application_name="t"
    ) as reads:
        assert reads.replica
        assert await reads.fetchval("SELECT pg_is_in_recovery()") is True
    async with open_read_pool(
        primary_pool, read_url=None, min_size=1, max_size=2, application_name="t"
    ) as reads:
        assert not reads.replica
        assert await reads.fetchval("SELECT pg_is_in_recovery()") is False


async def test_api_reads_are_as_old_as_the_replica_and_keys_are_not(
    replicated: Replicated, primary_pool: asyncpg.Pool[Any]
) -> None:
    settings = ApiSettings(
        database_url=replicated.primary_dsn,
        database_read_url=replicated.replica_dsn,
        redis_url=HARNESS.redis_url,
        redis_prefix=f"rstest-replica-{uuid.uuid4().hex[:8]}:",
        cursor_secret="replica",
    )
    app = create_app(settings)
    async with (
        open_pool(dsn=replicated.replica_dsn, max_size=1, read_only=True) as replica_pool,
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        # Replay stops: the replica keeps what it has, the primary moves on.
        await replica_pool.execute("SELECT pg_wal_replay_pause()")
        try:
            # A key created now works at once: keys are checked on the primary.
            key = await create_key(primary_pool, Scope.READ, Scope.REGISTRY)
            headers = {"X-API-Key": key}
            created = await http.post("/api/robots", json={"id": "rr-1"}, headers=headers)
            assert created.status_code == 201, created.text
            # The write is on the primary; the read routes answer from the paused replica.
            assert await primary_pool.fetchval("SELECT count(*) FROM robots") == 1
            stale = await http.get("/api/robots/rr-1", headers=headers)
            assert stale.status_code == 404, stale.text
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
        finally:
            await replica_pool.execute("SELECT pg_wal_replay_resume()")

        async def status() -> int:
            return (await http.get("/api/robots/rr-1", headers=headers)).status_code

        # Once replayed, the replica answers with the robot.
        assert await eventually(status, 200) == 200
