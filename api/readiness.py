"""Readiness: whether PostgreSQL and Redis answer (`/readyz`, and the older clients'
`/health_check`)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from starlette.responses import Response

from api.resources import ResourcesDep
from api.responses import JSONBytes
from db.errors import DATABASE_AWAY_ERRORS
from ingest.counters import COUNTERS_AWAY_ERRORS

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 1.0

# Away, or any other refusal to answer SELECT 1: not ready either way.
_POSTGRESQL_NOT_READY: tuple[type[Exception], ...] = (*DATABASE_AWAY_ERRORS, asyncpg.PostgresError)


async def readiness(res: ResourcesDep) -> Response:
    """PostgreSQL and Redis answer within a second."""
    postgresql = redis = "ok"
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await res.pool.fetchval("SELECT 1")
    except _POSTGRESQL_NOT_READY as exc:
        log.warning("postgresql not ready: %s", exc)
        postgresql = "unavailable"
    if res.read_pool.replica:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                await res.read_pool.fetchval("SELECT 1")
        except _POSTGRESQL_NOT_READY as exc:
            # The read routes need it as much as the primary.
            log.warning("postgresql read replica not ready: %s", exc)
            postgresql = "unavailable"
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await res.redis.ping()
    except COUNTERS_AWAY_ERRORS as exc:
        log.warning("redis not ready: %s", exc)
        redis = "unavailable"
    ready = postgresql == redis == "ok"
    return JSONBytes(
        {"status": "ready" if ready else "unavailable", "postgresql": postgresql, "redis": redis},
        status_code=200 if ready else 503,
    )
