"""api/lean_route.py: a LeanRoute runs only the query check and its guard, so it refuses, at
start-up, an endpoint whose other parameters FastAPI would have had to solve; LeanDispatch
sends its later requests past the router, answered as through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

from api import lean_route
from api.app import create_app
from api.auth import IngestRes, ReadRes
from api.lean_route import LeanDispatch, LeanRoute
from api.metrics import REQUESTS
from api.routes import compat, robots, sensor_aggregates, sensor_reads, stats
from api.settings import ApiSettings
from tests.api.conftest import IMU, now_ms


class _Body(BaseModel):
    x: int


async def _body(res: IngestRes, body: _Body) -> Response:
    return Response()


async def _header(res: IngestRes, x_trace: Annotated[str, Header()]) -> Response:
    return Response()


async def _unguarded(request: Request, other: str) -> Response:
    return Response()


async def _two_guards(res: IngestRes, also: ReadRes) -> Response:
    return Response()


def _sync(res: IngestRes) -> Response:
    return Response()


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        (_body, "body"),
        (_header, "header"),
        (_unguarded, "guard"),
        (_two_guards, "guard"),
        (_sync, "async"),
    ],
)
def test_an_endpoint_it_cannot_serve_is_refused_at_start_up(
    endpoint: Callable[..., Any], why: str
) -> None:
    """What the handler does not solve itself would be silently skipped: refused instead."""
    router = APIRouter(route_class=LeanRoute)
    with pytest.raises(TypeError, match=f"LeanRoute.*{why}"):
        router.add_api_route("/x/{robot_id}", endpoint, methods=["POST"])


def test_request_guard_query_and_path_parameters_are_accepted() -> None:
    router = APIRouter(route_class=LeanRoute)

    async def endpoint(request: Request, robot_id: str, res: IngestRes, limit: int = 5) -> Response:
        return Response()

    router.add_api_route("/x/{robot_id}", endpoint, methods=["POST"])
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


# Requests to the app's read routes (LeanRoutes) and what they exercise: every kind of
# parameter validation FastAPI does, plus the guard and the query check.
_READS: list[tuple[str, dict[str, Any]]] = [
    ("/api/sensors", {}),
    ("/api/sensors", {"robot_id": ["r1", "r2,r3"], "sensor_type": "IMU", "limit": "2"}),
    ("/api/sensors", {"limit": "0"}),  # below ge
    ("/api/sensors", {"limit": "x", "order": "sideways"}),  # two errors, one answer
    ("/api/sensors", {"since": "yesterday"}),
    ("/api/sensors", {"since": "2026-01-01T00:00:00", "page": "1", "page_size": "5"}),
    ("/api/sensors", {"cursor": "x" * 600}),  # over max_length
    ("/api/sensors", {"robot": "r1"}),  # undeclared
    ("/api/robots", {"connection": "online", "limit": "1001"}),
    ("/api/robots/r1", {}),
    ("/api/robots/nobody", {}),  # the endpoint's 404
    ("/api/robots/bad%20id", {}),  # the path parameter's pattern
    ("/api/sensors/filtered", {}),  # three required parameters missing
    (
        "/api/sensors/filtered",
        {"robot_id": "r1", "sensor_type": "imu", "field": "accel.x", "window_size": "2"},
    ),
    # Only refusals of /api/stats: its answer names the current minute, which may turn
    # between the two requests.
    ("/api/stats", {"top": "101"}),
    ("/api/stats", {"window": "5x"}),
    ("/api/sensors/aggregate", {"sensor_type": "imu", "field": "accel.x", "bucket": "0s"}),
    ("/api/sensors/aggregate", {"sensor_type": "imu", "field": "accel.x", "fn": "median"}),
    (
        "/api/sensors/aggregate",
        {"sensor_type": "imu", "field": "accel.x", "since": "{since}", "until": "{until}"},
    ),
]


@pytest.fixture
async def reference(
    api_settings: ApiSettings, client: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A second app whose read routes are FastAPI's own APIRoutes (same endpoints, same
    middleware, handlers and database): what a LeanRoute must answer like."""
    app = create_app(api_settings)

    def plain(router: APIRouter) -> None:
        for route in list(router.routes):
            if isinstance(route, LeanRoute) and "GET" in (route.methods or ()):
                router.routes.remove(route)
                router.add_api_route(
                    route.path_format.removeprefix(router.prefix),
                    route.endpoint,
                    methods=["GET"],
                    route_class_override=APIRoute,
                )

    for module in (robots, sensor_reads, compat, stats, sensor_aggregates):
        for router in (getattr(module, "reads", None), module.router):
            if router is not None:
                copy = APIRouter(prefix=router.prefix, routes=list(router.routes))
                plain(copy)
                app.include_router(copy, prefix="/reference")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers=dict(client.headers),
        ) as c,
    ):
        yield c


async def test_parameters_are_validated_as_fastapi_validates_them(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, reference: httpx.AsyncClient
) -> None:
    """The same read requests to the app's LeanRoutes and to FastAPI's own routes for the
    same endpoints get the same answers: values, defaults, 422s with their locations, the
    guard's 401, the query check's refusal."""
    ts = now_ms() - 60_000
    stored = await client.post(
        "/api/sensors",
        json={
            "robot_id": "r1",
            "sensor_type": "imu",
            "readings": [{"ts": ts + k, "data": IMU} for k in range(5)],
        },
    )
    assert stored.status_code == 201, stored.text
    since = datetime.fromtimestamp((ts - 120_000) / 1000, UTC).isoformat()
    until = datetime.fromtimestamp((ts + 60_000) / 1000, UTC).isoformat()
    statuses = set()
    for path, template in _READS:
        params = {
            k: v.format(since=since, until=until) if isinstance(v, str) else v
            for k, v in template.items()
        }
        for who, headers in (("key", {}), ("no key", {"X-API-Key": ""})):
            lean = await client.get(path, params=params, headers=headers)
            plain = await reference.get(f"/reference{path}", params=params, headers=headers)
            assert (lean.status_code, lean.json()) == (plain.status_code, plain.json()), (
                path,
                params,
                who,
            )
            statuses.add(lean.status_code)
    assert statuses == {200, 401, 404, 422}


async def test_paths_with_parameters_are_learned_each_with_its_own_up_to_a_bound(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A robot's detail is learned per path, with the parameters the router found in it: the
    second robot's path answers for the second robot, not for the first one learned. Past the
    bound, paths keep going through the router and are answered the same."""
    await anonymous.get("/healthz")  # Starlette builds the middleware stack on a first request
    dispatch = _dispatch(app)
    dispatch._learned.clear()
    dispatch._with_params = 0
    monkeypatch.setattr(lean_route, "_MAX_LEARNED_WITH_PARAMS", 2)
    first: dict[str, Any] = {}
    for _ in range(2):  # the first round goes through the router, the second must not
        for robot in ("r1", "r2", "r3", "nobody"):
            answer = await client.get(f"/api/robots/{robot}")
            seen = (answer.status_code, answer.json().get("id", answer.json().get("error")))
            assert first.setdefault(robot, seen) == seen, robot
    assert first == {
        "r1": (200, "r1"),
        "r2": (200, "r2"),
        "r3": (200, "r3"),
        "nobody": (404, "not_found"),
    }
    learned = {key[2]: params for key, (_, params, _) in dispatch._learned.items()}
    assert learned == {"/api/robots/r1": {"robot_id": "r1"}, "/api/robots/r2": {"robot_id": "r2"}}
    assert REQUESTS.labels("GET", "/api/robots/{robot_id}", "200")._value.get() >= 6
