"""Undeclared query parameters are refused with 422 naming them (api/strict_query.py)."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Query

from api.errors import install_error_handlers
from api.strict_query import reject_unknown_query


async def test_unknown_filter_on_robots_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/robots", params={"state": "offline"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_query"
    assert body["parameter"] == "state"
    assert "'state'" in body["detail"] and "connection" in body["detail"]


async def test_typo_in_a_reads_filter_is_422_not_other_robots_data(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/sensors", params={"robot": "r2", "limt": "5"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["parameter"] == "limt"
    assert "'limt', 'robot'" in body["detail"]


async def test_declared_parameters_still_pass(client: httpx.AsyncClient) -> None:
    assert (
        await client.get("/api/sensors", params={"robot_id": "r1", "limit": 5})
    ).status_code == 200
    assert (await client.get("/api/robots", params={"status": "active"})).status_code == 200
    assert (await client.get("/api/robots/r1")).status_code == 200
    # A route that declares no query parameter refuses every one.
    assert (await client.get("/api/robots/r1", params={"x": "1"})).status_code == 422


async def test_allowed_names_come_from_each_routes_own_parameters() -> None:
    """A parameter added to a route (or to one of its dependencies) is accepted without any
    list to update: the names are the route's declared ones, aliases included."""
    app = FastAPI(dependencies=[Depends(reject_unknown_query)])
    install_error_handlers(app)

    def paging(page: int = 1, page_size: Annotated[int, Query(alias="page-size")] = 10) -> int:
        return page * page_size

    @app.get("/items")
    async def items(start_time: str | None = None, n: int = Depends(paging)) -> dict[str, int]:
        return {"n": n}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ok = await c.get("/items", params={"start_time": "x", "page": 2, "page-size": 3})
        assert ok.status_code == 200 and ok.json() == {"n": 6}
        bad = await c.get("/items", params={"page_size": 3})
        assert bad.status_code == 422 and bad.json()["parameter"] == "page_size"


async def test_the_lean_ingest_route_still_refuses_unknown_query(
    client: httpx.AsyncClient,
) -> None:
    """POST /api/sensors skips FastAPI's dependency solving (api/lean_route.py) and runs the
    app-wide query check itself."""
    response = await client.post("/api/sensors", params={"dry_run": "1"}, json={})
    assert response.status_code == 422, response.text
    assert response.json()["parameter"] == "dry_run"
