"""Registering robots in bulk, for tools that stand in for the REST API (the simulator)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg


async def register_robots(
    conn: asyncpg.Connection[Any], *, robot_ids: Sequence[str], model: str = ""
) -> int:
    """Inserts the robots not registered yet; returns how many were new."""
    rows = await conn.fetch(
        "INSERT INTO robots (id, name, model) SELECT id, id, $2 FROM unnest($1::text[]) AS id "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        list(robot_ids),
        model,
    )
    return len(rows)
