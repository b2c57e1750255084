"""Registering the fleet before it publishes: through the REST API, or straight into the table.

The bridge refuses readings of robots it does not know (`unknown_robot`), so a run registers
its robots first. Both ways are idempotent: a robot that exists already is left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import httpx

from db.robot_registry import register_robots

MODEL = "edge-simulator"


@dataclass(frozen=True, slots=True)
class Registered:
    created: int
    existing: int


async def register_via_api(
    *, client: httpx.AsyncClient, robot_ids: Sequence[str], concurrency: int = 16
) -> Registered:
    """`POST /api/robots` for each robot: 201 created, 409 already there; anything else raises.

    `client` has the API's base URL; the caller owns it."""
    created = existing = 0
    gate = asyncio.Semaphore(concurrency)

    async def register(client: httpx.AsyncClient, robot_id: str) -> None:
        nonlocal created, existing
        async with gate:
            response = await client.post(
                "/api/robots", json={"id": robot_id, "name": robot_id, "model": MODEL}
            )
        if response.status_code == httpx.codes.CREATED:
            created += 1
        elif response.status_code == httpx.codes.CONFLICT:
            existing += 1
        else:
            raise RuntimeError(
                f"registering {robot_id}: HTTP {response.status_code} {response.text[:200]}"
            )

    await asyncio.gather(*(register(client, robot_id) for robot_id in robot_ids))
    return Registered(created, existing)


async def register_via_db(*, database_url: str, robot_ids: Sequence[str]) -> Registered:
    conn = await asyncpg.connect(database_url)
    try:
        created = await register_robots(conn, robot_ids=robot_ids, model=MODEL)
    finally:
        await conn.close()
    return Registered(created, len(robot_ids) - created)
