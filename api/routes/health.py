"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from fastapi import APIRouter
from starlette.responses import Response

from api.metrics import render_metrics
from api.resources import Res
from api.responses import JSONBytes
from api.schemas import Health, Readiness
from db.errors import DATABASE_AWAY_ERRORS
from ingest.counters import COUNTERS_AWAY_ERRORS

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 1.0
# Away, or any other refusal to answer SELECT 1: not ready either way.
_POSTGRESQL_NOT_READY: tuple[type[Exception], ...] = (*DATABASE_AWAY_ERRORS, asyncpg.PostgresError)


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process answers."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(res: Res) -> Response:
    """PostgreSQL and Redis answer within a second."""
    postgresql = redis = "ok"
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            await res.pool.fetchval("SELECT 1")
    except _POSTGRESQL_NOT_READY as exc:
        log.warning("postgresql not ready: %s", exc)
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


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus text format."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
