"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.responses import Response

from api.metrics import render_metrics
from api.readiness import readiness
from api.resources import ResourcesDep
from api.responses import JSONBytes
from api.schemas import Health, Readiness
from ingest.counters import COUNTERS_AWAY_ERRORS
from telemetry.sensors import SENSOR_SCHEMAS

log = logging.getLogger(__name__)

_SENSOR_TYPES = tuple(SENSOR_SCHEMAS)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """The process answers."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(res: ResourcesDep) -> Response:
    """PostgreSQL and Redis answer within a second."""
    return await readiness(res)


@router.get("/metrics", response_class=Response)
async def metrics(res: ResourcesDep) -> Response:
    """Prometheus text format."""
    try:
        gaps = await res.counters.fleet_sequence_gaps(_SENSOR_TYPES)
    except COUNTERS_AWAY_ERRORS as exc:
        # The process's own metrics still matter most when Redis is away.
        log.warning("redis unavailable, metrics served without sequence gaps: %s", exc)
        gaps = None
    body, content_type = render_metrics(sequence_gaps=gaps)
    return Response(body, media_type=content_type)
