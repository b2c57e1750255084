"""What a read function runs on: a pool (one statement on any free connection) or a
connection (several statements, or a transaction)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from db import Connection
from db.read_pool import ReadPool

Executor: TypeAlias = "asyncpg.Pool[Any] | Connection"

# What a function that only reads runs on: also a ReadPool (retried on a dead connection).
Reader: TypeAlias = "Executor | ReadPool"
