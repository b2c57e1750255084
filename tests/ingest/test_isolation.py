"""The one isolation of a row PostgreSQL refuses, with the split rules of its two callers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from asyncpg import exceptions as pg

from ingest.isolation import write_isolating


class Table:
    """Refuses any write holding a negative number, like PostgreSQL a row it cannot store."""

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.attempts: list[tuple[int, ...]] = []

    async def write(self, rows: tuple[int, ...]) -> str:
        self.attempts.append(rows)
        if any(r < 0 for r in rows):
            raise pg.DataError("no partition of relation for the row")
        self.stored.extend(rows)
        return f"stored {len(rows)}"


def halves(rows: tuple[int, ...]) -> Sequence[tuple[int, ...]]:
    half = len(rows) // 2
    return [rows[:half], rows[half:]] if len(rows) > 1 else []


async def test_halving_finds_the_refused_row_and_stores_the_rest() -> None:
    table = Table()
    refused: list[tuple[tuple[int, ...], str]] = []
    noticed: list[Exception] = []

    async def answer(rows: tuple[int, ...], exc: Exception) -> str:
        refused.append((rows, str(exc)))
        return "refused"

    rows: tuple[int, ...] = (1, 2, 3, -4, 5, 6, 7, 8)
    results = await write_isolating(
        rows,
        write=table.write,
        split=halves,
        refused=answer,
        noticed=noticed.append,
    )
    assert sorted(table.stored) == [1, 2, 3, 5, 6, 7, 8]
    assert refused == [((-4,), "no partition of relation for the row")]
    assert "refused" in results and len(results) == 4  # (1,2) (3,-4)->(3) (-4) and (5..8)
    # The whole batch, its first half, the quarter and the row: four refusals, each noticed.
    assert len(noticed) == 4


async def test_a_group_split_by_request_fails_only_the_culprits_request() -> None:
    """HTTP ingest's rule: split into requests, never below one request."""
    table = Table()
    requests: tuple[tuple[int, ...], ...] = ((1, 2), (3, -4), (5,))
    failed: list[tuple[int, ...]] = []

    async def write(group: tuple[tuple[int, ...], ...]) -> None:
        await table.write(tuple(r for request in group for r in request))

    async def fail(group: tuple[tuple[int, ...], ...], exc: Exception) -> None:
        failed.extend(group)

    await write_isolating(
        requests,
        write=write,
        split=lambda group: [(request,) for request in group] if len(group) > 1 else [],
        refused=fail,
    )
    assert failed == [(3, -4)]
    assert sorted(table.stored) == [1, 2, 5]


async def test_errors_other_than_a_refusal_reach_the_caller() -> None:
    async def away(rows: tuple[int, ...]) -> str:
        raise ConnectionRefusedError("database is away")

    async def never(rows: tuple[int, ...], exc: Exception) -> str:
        raise AssertionError("not a refusal")

    with pytest.raises(ConnectionRefusedError):
        rows: tuple[int, ...] = (1, 2)
        await write_isolating(rows, write=away, split=halves, refused=never)
