"""api/lean_route.py: a LeanRoute runs only the query check and its guard, so it refuses, at
start-up, an endpoint whose other parameters FastAPI would have had to solve."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth import IngestRes
from api.lean_route import LeanRoute


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
