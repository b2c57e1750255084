"""Prometheus metrics of the API process, and the ASGI middleware that times requests.

With several workers, `python -m api` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
and /metrics aggregates every worker's samples.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "robosense_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "robosense_api_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INGEST_READINGS = Counter(
    "robosense_api_ingest_readings_total", "Readings committed over HTTP, new or duplicate"
)
INGEST_INSERTED = Counter(
    "robosense_api_ingest_inserted_total", "Readings inserted over HTTP (duplicates excluded)"
)
INGEST_REJECTED = Counter(
    "robosense_api_ingest_rejected_total", "Readings refused over HTTP", ["reason"]
)
BATCH_READINGS = Histogram(
    "robosense_api_commit_batch_readings",
    "Readings per group commit",
    buckets=(1, 3, 10, 30, 100, 300, 1000, 3000, 10000),
)
BATCH_REQUESTS = Histogram(
    "robosense_api_commit_batch_requests",
    "Requests per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
COMMIT_SECONDS = Histogram(
    "robosense_api_commit_seconds",
    "Time of one group commit (PostgreSQL and Redis)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LIVE_CONNECTS = Counter(
    "robosense_api_live_connects_total", "Live subscriptions made to the broker (fleet/#)"
)
LIVE_DISCONNECTS = Counter(
    "robosense_api_live_disconnects_total", "Live subscriptions lost or refused, then retried"
)
LIVE_STREAMS = Gauge(
    "robosense_api_live_streams", "Open live-stream clients", multiprocess_mode="livesum"
)
LIVE_DROPPED = Counter(
    "robosense_api_live_dropped_total", "Summaries a live-stream client missed (superseded)"
)


def render_metrics() -> tuple[bytes, str]:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (bounded label values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            LATENCY.labels(method, path).observe(time.perf_counter() - start)
            REQUESTS.labels(method, path, str(status)).inc()
