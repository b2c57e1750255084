"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from api.metrics import render_metrics
from api.readiness import readiness
from api.resources import ResourcesDep
from api.responses import JSONBytes
from api.schemas import Health, Readiness

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
async def metrics() -> Response:
    """Prometheus text format."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
