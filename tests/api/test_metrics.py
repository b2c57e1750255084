"""The request metrics: each request counted by method, route and status, and timed."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.types import Message, Receive, Scope, Send

from api import metrics
from api.metrics import LATENCY, REQUESTS, MetricsMiddleware


def _app(status: int):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = SimpleNamespace(path="/metrics-test/{id}")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def _request(middleware: MetricsMiddleware, method: str) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    await middleware({"type": "http", "method": method, "path": "/x"}, receive, send)


def _count(method: str, status: str) -> float:
    value: float = REQUESTS.labels(method, "/metrics-test/{id}", status)._value.get()
    return value


def _timed(method: str) -> float:
    value: float = LATENCY.labels(method, "/metrics-test/{id}")._sum.get()
    return value


async def test_each_status_is_counted_and_each_request_timed() -> None:
    ok, missing = MetricsMiddleware(_app(200)), MetricsMiddleware(_app(404))
    before = (_count("GET", "200"), _count("GET", "404"), _timed("GET"))
    for _ in range(3):
        await _request(ok, "GET")
    await _request(missing, "GET")
    after = (_count("GET", "200"), _count("GET", "404"), _timed("GET"))
    assert after[:2] == (before[0] + 3, before[1] + 1)
    assert after[2] > before[2]


async def test_a_flood_of_method_names_is_still_counted_without_being_kept() -> None:
    middleware = MetricsMiddleware(_app(200))
    methods = [f"M{i}" for i in range(metrics._MAX_CHILDREN + 5)]
    for method in methods:
        await _request(middleware, method)
    await _request(middleware, methods[-1])
    assert len(middleware._timers) == len(middleware._counts) == metrics._MAX_CHILDREN
    assert _count(methods[-1], "200") == 2
