"""api/lean_route.py: a LeanRoute runs only the query check and its guard, so it refuses, at
start-up, an endpoint whose other parameters FastAPI would have had to solve; LeanDispatch
sends its later requests past the router, answered as through it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from api.auth import IngestRes
from api.lean_route import LeanDispatch, LeanRoute
from api.metrics import REQUESTS
from tests.api.conftest import IMU, now_ms


def test_an_endpoint_with_a_query_parameter_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(request: Request, res: IngestRes, limit: int = 5) -> Response:
        return Response()

    with pytest.raises(TypeError, match="LeanRoute"):
        router.add_api_route("/x", endpoint, methods=["POST"])


def test_an_endpoint_without_a_guard_is_refused() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(request: Request, other: str) -> Response:
        return Response()

    with pytest.raises(TypeError, match="LeanRoute"):
        router.add_api_route("/x", endpoint, methods=["POST"])


def test_request_and_guard_are_accepted() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(request: Request, res: IngestRes) -> Response:
        return Response()

    router.add_api_route("/x", endpoint, methods=["POST"])
    assert isinstance(router.routes[0], LeanRoute)


def _dispatch(app: FastAPI) -> LeanDispatch:
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, LeanDispatch):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, LeanDispatch), "LeanDispatch is not in the app's middleware"
    return layer


async def test_requests_past_the_router_are_answered_as_through_it(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    """The first POST /api/sensors goes through the router; LeanDispatch then sends the same
    method and path straight to the LeanRoute. Every kind of answer, the metrics label and
    the error handlers must stay what the router's way gives."""

    def imu(ts: int) -> dict[str, object]:
        return {"robot_id": "r1", "sensor_type": "imu", "readings": [{"ts": ts, "data": IMU}]}

    def cases(ts: int) -> list[tuple[httpx.AsyncClient, dict[str, Any], dict[str, Any]]]:
        return [
            (client, {"json": imu(ts)}, {}),
            (anonymous, {"json": imu(ts + 1)}, {}),  # 401, through the app's handler
            (client, {"json": imu(ts + 2), "params": {"dry_run": "1"}}, {}),  # 422 query
            (client, {"content": b"{not json"}, {"Content-Type": "application/json"}),
            (client, {"json": {**imu(ts + 3), "robot_id": "nobody"}}, {}),  # unknown_robot
        ]

    def seen(response: httpx.Response) -> tuple[int, Any, str | None]:
        return response.status_code, response.json(), response.headers.get("www-authenticate")

    await anonymous.get("/healthz")  # Starlette builds the middleware stack on a first request
    _dispatch(app)._learned.clear()
    before = REQUESTS.labels("POST", "/api/sensors", "201")._value.get()
    answers = []
    for k in range(3):  # the first round may go through the router, the others must not
        ts = now_ms() - 60_000 + 10 * k
        answers.append(
            [seen(await c.post("/api/sensors", headers=h, **kw)) for c, kw, h in cases(ts)]
        )
        if k == 0:
            assert ("POST", "", "/api/sensors") in _dispatch(app)._learned
    assert [status for status, _, _ in answers[0]] == [201, 401, 422, 422, 422], answers[0]
    assert answers[1] == answers[2] == answers[0]
    assert REQUESTS.labels("POST", "/api/sensors", "201")._value.get() == before + 3
