"""The dead-letter listing: filters, keyset order, and that every filter has its index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from db.dead_letters import (
    DeadLetterFilter,
    DeadLetterKey,
    list_dead_letters,
    store_dead_letters,
)
from telemetry.errors import RejectReason
from telemetry.payload import Rejection

T0 = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def _rejection(i: int, robot: str, reason: RejectReason, at: datetime) -> Rejection:
    return Rejection.of(at, f"robots/{robot}/sensors/imu", reason, f"#{i}", f"{i}".encode())


@pytest.fixture
async def letters(clean_db: asyncpg.Pool[Any]) -> asyncpg.Pool[Any]:
    """30 dead letters: robots a, b, a_b (an id with LIKE's wildcard), two reasons, one per
    second, and ties (three letters in each second for the last ten)."""
    rows = []
    for i in range(30):
        robot = ("a", "b", "a_b")[i % 3]
        reason = RejectReason.INVALID_JSON if i % 2 else RejectReason.UNKNOWN_ROBOT
        at = T0 + timedelta(seconds=i if i < 20 else 20 + (i - 20) // 3)
        rows.append(_rejection(i, robot, reason, at))
    async with clean_db.acquire() as conn:
        await store_dead_letters(conn, rows)
    return clean_db


async def _all(db: asyncpg.Pool[Any], where: DeadLetterFilter, page: int) -> list[str]:
    """Every letter the filter selects, page by page, as their details."""
    seen: list[str] = []
    after = None
    while True:
        rows = await list_dead_letters(db, where, after=after, limit=page)
        seen.extend(r["detail"] for r in rows)
        if len(rows) < page:
            return seen
        after = DeadLetterKey(rows[-1]["received_at"], rows[-1]["id"])


async def test_pages_walk_newest_first_without_repeats(letters: asyncpg.Pool[Any]) -> None:
    whole = await list_dead_letters(letters, DeadLetterFilter(), after=None, limit=100)
    keys = [(r["received_at"], r["id"]) for r in whole]
    assert keys == sorted(keys, reverse=True) and len(keys) == 30
    # Pages of 4 cut through the ties in one second; the walk must still match the whole.
    assert await _all(letters, DeadLetterFilter(), 4) == [r["detail"] for r in whole]


async def test_filters(letters: asyncpg.Pool[Any]) -> None:
    by_robot = await _all(letters, DeadLetterFilter(robot_id="a"), 3)
    assert sorted(by_robot, key=lambda d: int(d[1:])) == [f"#{i}" for i in range(0, 30, 3)]
    # `_` is an ordinary character here, not a wildcard.
    assert len(await _all(letters, DeadLetterFilter(robot_id="a_b"), 3)) == 10
    assert len(await _all(letters, DeadLetterFilter(robot_id="a_"), 3)) == 0
    reason = await _all(letters, DeadLetterFilter(reason="invalid_json"), 7)
    assert sorted(int(d[1:]) for d in reason) == list(range(1, 30, 2))
    window = DeadLetterFilter(since=T0 + timedelta(seconds=5), until=T0 + timedelta(seconds=8))
    assert sorted(int(d[1:]) for d in await _all(letters, window, 2)) == [5, 6, 7]
    both = DeadLetterFilter(robot_id="b", reason="unknown_robot", until=T0 + timedelta(seconds=10))
    assert sorted(int(d[1:]) for d in await _all(letters, both, 2)) == [4]


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (DeadLetterFilter(), "dead_letters_received_at_id"),
        (DeadLetterFilter(robot_id="a"), "dead_letters_robot"),
        (DeadLetterFilter(reason="invalid_json"), "dead_letters_reason"),
        (DeadLetterFilter(since=T0), "dead_letters_received_at_id"),
    ],
)
async def test_each_filter_reads_its_index_in_order(
    letters: asyncpg.Pool[Any], where: DeadLetterFilter, index: str
) -> None:
    """With sequential scans and sorts priced out, the plan shows whether the query's
    expressions match an index that already holds the keyset order (a table this small
    would otherwise be scanned whatever the indexes)."""
    plans: list[str] = []

    class Explaining:
        async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
            async with letters.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = off")
                await conn.execute("SET LOCAL enable_sort = off")
                await conn.execute("SET LOCAL enable_bitmapscan = off")
                plan = await conn.fetch(f"EXPLAIN {query}", *args)
            plans.append("\n".join(r[0] for r in plan))
            return []

    await list_dead_letters(
        Explaining(),  # type: ignore[arg-type]
        where,
        after=DeadLetterKey(T0 + timedelta(seconds=25), 10**9),
        limit=10,
    )
    [plan] = plans
    assert f"Index Scan Backward using {index}" in plan, plan
    assert "Sort" not in plan, plan
