"""What a query function runs on: a pool (one statement, any connection) or a connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Executor: TypeAlias = asyncpg.Pool[Any] | asyncpg.Connection[Any] | PoolConnectionProxy[Any]
else:
    Executor = Any
