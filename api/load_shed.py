"""Load shedding: a worker answers at most `limit` requests at once; the next one gets 503
with Retry-After at once instead of waiting behind the others.

Past what a worker's CPU and database pool can serve, every request waiting makes all the
others slower (BENCHMARKS.md, "Load shedding"); answering the excess at once keeps the
latency of what is served bounded, and tells clients when to come back. The probes and
/metrics are never shed: an overloaded process is alive and should be seen."""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import overloaded_response

SHED = Counter("robosense_api_shed_total", "Requests answered 503 because the worker was full")

_NEVER_SHED = frozenset(("/healthz", "/readyz", "/health_check", "/metrics"))
# A live stream stays open for minutes at no cost while idle; it has its own cap per worker
# (LIVE_MAX_CLIENTS), and counting it here would let a few hundred browsers shed everything.
_OWN_LIMIT = frozenset(("/api/live",))


class LoadShedMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self._shed = overloaded_response(retry_after_s, "the server is at capacity; retry later")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NEVER_SHED or scope["path"] in _OWN_LIMIT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            SHED.inc()
            await self._shed(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
