"""A pool for reads that survive the connections PostgreSQL dropped (a restart, a failover,
`pg_terminate_backend`).

asyncpg's pool replaces a connection it knows to be closed on acquire, but it learns that a
connection died only when the event loop reads its socket: a statement sent before then
fails (`ConnectionDoesNotExistError`, or `InternalClientError` when the server's farewell
arrives mid-statement), and the pool's other idle connections died with it. A read is
idempotent, so it is run again once, after expiring every connection of the pool so that the
second attempt gets a fresh one. Writes are never retried here: whether a statement that lost
its connection committed is unknown.

`open_read_pool` points the reads at a streaming replica when the process has one
(`DATABASE_READ_URL`): what a replica answers is as old as its replay lag (docs/scaling.md,
"Read replicas"), so a caller that must see its own writes (a key just created, a robot just
registered) reads through the primary's pool instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from db import Connection
from db.connect import open_pool
from db.errors import DEAD_CONNECTION_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReadPool:
    """`fetch`, `fetchrow`, `fetchval` of a pool, each retried once on a dead connection."""

    def __init__(self, pool: asyncpg.Pool[Any], *, replica: bool = False) -> None:
        self._pool = pool
        self.replica = replica  # reads a streaming replica, not the primary
        self.retries = 0

    async def _read(self, run: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            async with self._pool.acquire() as conn:
                return await run(conn)
        except DEAD_CONNECTION_ERRORS as exc:
            self.retries += 1
            log.warning("read lost its PostgreSQL connection, retrying once: %r", exc)
            await self._pool.expire_connections()
        async with self._pool.acquire() as conn:
            return await run(conn)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._read(lambda conn: conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._read(lambda conn: conn.fetchrow(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._read(lambda conn: conn.fetchval(query, *args))


@contextlib.asynccontextmanager
async def open_read_pool(
    primary: asyncpg.Pool[Any],
    *,
    read_url: str | None,
    min_size: int,
    max_size: int,
    application_name: str,
) -> AsyncIterator[ReadPool]:
    """Reads through a pool of its own on `read_url` (a replica) when given, else through the
    primary's pool."""
    if not read_url:
        yield ReadPool(primary)
        return
    async with open_pool(
        dsn=read_url,
        min_size=min_size,
        max_size=max_size,
        application_name=application_name,
        read_only=True,
    ) as pool:
        yield ReadPool(pool, replica=True)
