"""Everything that speaks SQL: migrations, partitions and the queries, behind named functions."""

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# What every query function takes: a plain connection or one borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
