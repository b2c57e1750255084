"""The FastAPI application: routes, error translation, middleware, and the lifespan that
owns the pool, the Redis client and the group committer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from api.auth import document_bearer
from api.errors import install_error_handlers
from api.lean_route import LeanDispatch
from api.load_shed import LoadShed
from api.metrics import RequestMetrics
from api.request_gate import RequestGate
from api.resources import open_resources
from api.responses import JSONBytes
from api.routes import (
    alerts,
    compat,
    dead_letters,
    fleet_page,
    health,
    keys,
    live,
    robots,
    sensor_aggregates,
    sensor_ingest,
    sensor_latest,
    sensor_reads,
    stats,
)
from api.settings import ApiSettings
from api.strict_query import reject_unknown_query
from telemetry.collector import collect_rarely
from telemetry.logs import configure_logging


def serve() -> FastAPI:
    """The factory `python -m api` gives uvicorn: the app of a process that does nothing but
    serve it, so it also tunes that process's garbage collector once started. Apps made with
    create_app (tests make many in one process) leave the collector alone."""
    return create_app(tune_collector=True)


def create_app(settings: ApiSettings | None = None, *, tune_collector: bool = False) -> FastAPI:
    settings = settings or ApiSettings()
    # Each uvicorn worker is a fresh process that calls this factory: configure logging here.
    configure_logging(level=settings.log_level, process="api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            app.state.resources = resources
            if tune_collector:
                collect_rarely(settings.gc_young_threshold)
            yield

    # /docs and /redoc with Swagger UI and ReDoc served from the package's files, not a CDN:
    # the pages work without internet access.
    app = FastAPIOffline(
        title="RoboSense API",
        version="0.1.0",
        summary="Robot registry, sensor readings and live stats of a robot fleet.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        default_response_class=JSONBytes,
        # FastAPI's built-in OpenTelemetry would wrap every request, dependency and endpoint
        # in (no-op, without an SDK) spans; we export Prometheus metrics and JSON logs instead.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    for router in (
        robots.reads,
        robots.router,
        compat.router,
        sensor_ingest.router,
        sensor_reads.router,
        sensor_latest.router,
        sensor_aggregates.router,
        stats.router,
        alerts.router,
        keys.router,
        dead_letters.router,
        live.router,
        health.router,
        fleet_page.router,
    ):
        app.include_router(router)
    app.mount(fleet_page.STATIC_PATH, fleet_page.static_files(), name="static")
    install_error_handlers(app)
    # Innermost of ours: the LeanRoutes' requests skip the router (api/lean_route.py).
    app.add_middleware(LeanDispatch, fastapi=app)
    # Ours, in one layer: shedding, metrics, the body's type and size (api/request_gate.py).
    app.add_middleware(
        RequestGate,
        shed=LoadShed(limit=settings.max_concurrent_requests, retry_after_s=settings.retry_after_s),
        metrics=RequestMetrics(),
        max_body_bytes=settings.max_body_bytes,
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                sensor_ingest.INGEST_BODY_COMPONENTS
            )
            document_bearer(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
