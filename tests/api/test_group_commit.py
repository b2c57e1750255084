"""HTTP ingest's group commit against real PostgreSQL: a row PostgreSQL refuses fails only the
request that sent it; the requests committed with it succeed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from api.group_commit import GroupCommitter
from ingest.counters import Counters
from ingest.write import IngestWriter
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import Reading


def _readings(robot: str, ts: datetime, n: int, *, seq0: int = 0) -> list[Reading]:
    return [
        Reading(
            robot,
            "battery",
            ts + timedelta(milliseconds=i),
            datetime.now(UTC),
            seq0 + i,
            f'{{"level": {i}}}',
        )
        for i in range(n)
    ]


@asynccontextmanager
async def _committer(
    pool: asyncpg.Pool[Any], counters: Counters, robots: list[str], *, max_wait_s: float
) -> AsyncIterator[GroupCommitter]:
    await pool.executemany("INSERT INTO robots (id) VALUES ($1)", [(r,) for r in robots])
    writer = IngestWriter(pool=pool, counters=counters, store_rejections=False)
    committer = GroupCommitter(writer, max_readings=1000, max_wait_s=max_wait_s, max_inflight=1)
    committer.start()
    try:
        yield committer
    finally:
        await committer.close()


async def test_a_refused_row_fails_only_its_request(
    clean_db: asyncpg.Pool[Any], counters: Counters
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # No partition holds a reading from 2001: PostgreSQL refuses the row (the API's time
    # window would refuse it sooner; the committer takes readings as given).
    in_2001 = datetime(2001, 1, 1, tzinfo=UTC)
    # A long wait and room for all three: they share one commit, which PostgreSQL refuses.
    async with _committer(clean_db, counters, ["r1", "r2", "r3"], max_wait_s=0.5) as committer:
        results = await asyncio.gather(
            committer.commit(_readings("r1", now, 3)),
            committer.commit([*_readings("r2", now, 2), *_readings("r2", in_2001, 1, seq0=9)]),
            committer.commit(_readings("r3", now, 4)),
            return_exceptions=True,
        )

    assert results[0] == frozenset() and results[2] == frozenset(), results
    assert isinstance(results[1], ContractError)
    assert results[1].reason is RejectReason.REJECTED_BY_DATABASE
    stored = await clean_db.fetch(
        "SELECT robot_id, count(*) AS n FROM sensor_readings GROUP BY robot_id ORDER BY robot_id"
    )
    # The culprit's request is refused whole: its two good readings are not stored either.
    assert [(r["robot_id"], r["n"]) for r in stored] == [("r1", 3), ("r3", 4)]


async def test_a_lone_refused_request_is_refused(
    clean_db: asyncpg.Pool[Any], counters: Counters
) -> None:
    async with _committer(clean_db, counters, ["r1"], max_wait_s=0.01) as committer:
        with pytest.raises(ContractError) as caught:
            await committer.commit(_readings("r1", datetime(2001, 1, 1, tzinfo=UTC), 2))
    assert caught.value.reason is RejectReason.REJECTED_BY_DATABASE
    assert await clean_db.fetchval("SELECT count(*) FROM sensor_readings") == 0
