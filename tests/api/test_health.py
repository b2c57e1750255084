"""/healthz, /readyz, /metrics, and errors for routes that do not exist."""

from __future__ import annotations

from typing import Any
from unittest import mock

import httpx
from fastapi import FastAPI


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "postgresql": "ok", "redis": "ok"}


async def test_readyz_reports_what_is_down(client: httpx.AsyncClient, app: FastAPI) -> None:
    # Stopping the shared Redis is not ours to do: fake its failure.
    async def refuse(*_: Any) -> None:
        raise ConnectionRefusedError("refused")

    with mock.patch.object(app.state.resources.redis, "ping", refuse):
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "postgresql": "ok", "redis": "unavailable"}


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    await client.get("/api/robots")
    body = (await client.get("/metrics")).text
    assert 'robosense_api_requests_total{method="GET",route="/api/robots",status="200"}' in body
    assert "robosense_api_commit_seconds_bucket" in body


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await client.post("/api/stats")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"
