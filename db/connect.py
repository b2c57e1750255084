"""Opening connections and pools with the codecs and session state the queries rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from db.readings import prepare_connection


async def _init(conn: asyncpg.Connection[Any]) -> None:
    await prepare_connection(conn)


async def _reset(conn: asyncpg.Connection[Any]) -> None:
    """Run on each release to the pool instead of asyncpg's default reset query
    (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`): that query is a round
    trip on every release, i.e. on every API request and every commit, for session state this
    code never leaves behind (no session-level SET, LISTEN, cursor or advisory lock outside a
    transaction; migrations lock on their own connection). A transaction left open is rolled
    back by asyncpg before this is called. Its cost: BENCHMARKS.md, "HTTP: CPU per request"."""


@asynccontextmanager
async def open_pool(
    *,
    dsn: str,
    min_size: int = 1,
    max_size: int = 4,
    application_name: str = "robosense",
    read_only: bool = False,
) -> AsyncIterator[asyncpg.Pool[Any]]:
    """`read_only`: for a replica, which refuses the write path's per-connection staging
    table (and every other write)."""
    pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=None if read_only else _init,
        reset=_reset,
        server_settings={"application_name": application_name},
    )
    try:
        yield pool
    finally:
        await pool.close()
