"""Isolating what PostgreSQL refuses: one refused row must not sink the rows committed with it.

A batch that PostgreSQL refuses for a row's content (db.errors.ROW_REFUSED_ERRORS) is split
into parts that are written on their own, and each refused part again, until a part that cannot
be split is refused: only that part is the caller's to answer for. Both writers of the one
write path use it with their own rules, which stay in the caller:

- the bridge halves a batch down to one row, and turns that row into a dead letter;
- HTTP ingest splits a group commit into its requests, and fails the culprit's request alone.

Errors other than a refusal (the database is away) propagate from any part; retrying them is
the caller's rule too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from db.errors import ROW_REFUSED_ERRORS

log = logging.getLogger(__name__)

Part = TypeVar("Part")
Result = TypeVar("Result")


async def write_isolating(
    part: Part,
    *,
    write: Callable[[Part], Awaitable[Result]],
    split: Callable[[Part], Sequence[Part]],
    refused: Callable[[Part, Exception], Awaitable[Result]],
    noticed: Callable[[Exception], None] = lambda exc: None,
) -> list[Result]:
    """Writes `part`; if PostgreSQL refuses it, writes each of `split(part)` the same way.

    `split` returns fewer than two parts when `part` cannot be split further: `refused(part,
    error)` answers for it then. `noticed` hears every refusal (a metric, say). Returns the
    results of the parts written, in order.
    """
    try:
        return [await write(part)]
    except ROW_REFUSED_ERRORS as exc:
        noticed(exc)
        parts = split(part)
        if len(parts) < 2:
            return [await refused(part, exc)]
        log.warning(
            "batch refused by the database; splitting",
            extra={"error": repr(exc), "parts": len(parts)},
        )
    results: list[Result] = []
    for piece in parts:
        results += await write_isolating(
            piece, write=write, split=split, refused=refused, noticed=noticed
        )
    return results
