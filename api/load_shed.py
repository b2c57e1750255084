"""Load shedding: a worker answers at most `limit` requests at once; the next one gets 503
with Retry-After at once instead of waiting behind the others.

Past what a worker's CPU and database pool can serve, every request waiting makes all the
others slower (BENCHMARKS.md, "Load shedding"); answering the excess at once keeps the
latency of what is served bounded, and tells clients when to come back. The probes and
/metrics are never shed: an overloaded process is alive and should be seen. The app's
request gate (api/request_gate.py) asks first, before anything else is done for a request."""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp

from api.errors import overloaded_response

SHED = Counter("robosense_api_shed_total", "Requests answered 503 because the worker was full")

_NEVER_SHED = frozenset(("/healthz", "/readyz", "/health_check", "/metrics"))
# A live stream stays open for minutes at no cost while idle; it has its own cap per worker
# (LIVE_MAX_CLIENTS), and counting it here would let a few hundred browsers shed everything.
_OWN_LIMIT = frozenset(("/api/live",))
_UNCOUNTED = _NEVER_SHED | _OWN_LIMIT


class LoadShed:
    """The requests in flight in one worker. `admit(path)`: None if the path is never counted,
    True if the request is counted in (call `leave()` once it is answered), False if the
    worker is full (then answer with `refusal`)."""

    def __init__(self, *, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refusal: ASGIApp = overloaded_response(
            retry_after_s, "the server is at capacity; retry later"
        )

    def admit(self, path: str) -> bool | None:
        if path in _UNCOUNTED:
            return None
        if self.in_flight >= self.limit:
            SHED.inc()
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
