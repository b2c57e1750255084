"""The request metrics: each request counted by method, route and status, and timed."""

from __future__ import annotations

from api import metrics
from api.metrics import LATENCY, REQUESTS, RequestMetrics

ROUTE = "/metrics-test/{id}"


def _count(method: str, status: str) -> float:
    value: float = REQUESTS.labels(method, ROUTE, status)._value.get()
    return value


def _timed(method: str) -> float:
    value: float = LATENCY.labels(method, ROUTE)._sum.get()
    return value


def test_each_status_is_counted_and_each_request_timed() -> None:
    noted = RequestMetrics()
    before = (_count("GET", "200"), _count("GET", "404"), _timed("GET"))
    for _ in range(3):
        noted.note("GET", ROUTE, 200, 0.25)
    noted.note("GET", ROUTE, 404, 0.5)
    after = (_count("GET", "200"), _count("GET", "404"), _timed("GET"))
    assert after == (before[0] + 3, before[1] + 1, before[2] + 1.25)


def test_a_flood_of_method_names_is_still_counted_without_being_kept() -> None:
    noted = RequestMetrics()
    methods = [f"M{i}" for i in range(metrics._MAX_CHILDREN + 5)]
    for method in methods:
        noted.note(method, ROUTE, 200, 0.001)
    noted.note(methods[-1], ROUTE, 200, 0.001)
    assert len(noted._timers) == len(noted._counts) == metrics._MAX_CHILDREN
    assert _count(methods[-1], "200") == 2
