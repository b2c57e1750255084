"""Start-up check of `python -m api`: PostgreSQL and Redis answer, or the process says which
one does not, where and why, in one log line, and exits (a supervisor restarts it)."""

from __future__ import annotations

import logging

import asyncpg

from api.settings import ApiSettings
from ingest.counters import COUNTERS_AWAY_ERRORS, open_redis
from telemetry.logs import unreachable

log = logging.getLogger(__name__)

_TIMEOUT_S = 10.0


def _cannot_start(service: str, url: str, exc: BaseException) -> None:
    # One line with the cause; a traceback would add nothing.
    log.error("cannot start: %s unreachable", service, extra=unreachable(url, exc))


async def services_reachable(settings: ApiSettings) -> bool:
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=_TIMEOUT_S)
        await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _cannot_start("PostgreSQL", settings.database_url, exc)
        return False
    try:
        async with open_redis(
            settings.redis_url, cluster=settings.redis_cluster, socket_connect_timeout=_TIMEOUT_S
        ) as redis:
            await redis.ping()
    except COUNTERS_AWAY_ERRORS as exc:
        _cannot_start("Redis", settings.redis_url, exc)
        return False
    return True
