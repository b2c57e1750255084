"""The registry in bulk: registering for tools that stand in for the REST API (the simulator),
membership checks for the bridge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from db import Connection


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


async def registered_among(conn: Connection, robot_ids: Sequence[str]) -> set[str]:
    """Which of these ids are registered."""
    rows = await conn.fetch("SELECT id FROM robots WHERE id = ANY($1::text[])", list(robot_ids))
    return {r["id"] for r in rows}
