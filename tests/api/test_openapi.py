"""Schemathesis against the OpenAPI schema of a real `python -m api` process: no input gets
a 500, and every response matches the schema's status codes, content type and shape."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import API_PROCESS_ADMIN_KEY as ADMIN_KEY

pytestmark = pytest.mark.slow


@pytest.fixture
def seeded_api_url(api_url: str, database_url: str) -> str:
    """The API process with robots whose ids the generated requests are likely to use."""

    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO robots (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                ["robot-1", "r1", "a", "0"],
            )
        finally:
            await conn.close()

    asyncio.run(seed())
    return api_url


def _operations(api_url: str) -> list[Any]:
    spec = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    return [result.ok() for result in spec.get_all_operations()]  # type: ignore[union-attr]


# Hypothesis drives each operation directly: schemathesis' lazy pytest fixture does not run
# under this pytest version.
def test_no_server_error_and_conforming_responses(seeded_api_url: str) -> None:
    api_url = seeded_api_url
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = _operations(api_url)
    assert len(operations) >= 12
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation, mode in itertools.product(operations, modes):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            response = case.call(base_url=api_url, headers={"X-API-Key": ADMIN_KEY})
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}: "
                f"{response.text[:500]}"
            )
            if response.status_code == 400 and response.text == "Invalid HTTP request received.":
                # The request never reached the app: uvicorn's HTTP parser refused it (a
                # negative case with bytes HTTP does not allow), in plain text.
                return
            if response.status_code == 431:
                # Nor did this one: its request line and headers (a generated query string of
                # tens of KiB) are over MAX_HEADER_BYTES, refused before any route.
                assert response.json()["error"] == "headers_too_large"
                assert len(response.request.url) > 8 * 1024
                return
            case.validate_response(response, checks=checks, transport_kwargs={"base_url": api_url})

        try:
            run()
        except Unsatisfiable:
            # No parameters and no body: nothing to make invalid.
            assert mode is schemathesis.GenerationMode.NEGATIVE


def test_openapi_is_served(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json").json()
    assert "/api/sensors" in spec["paths"]
    assert "ImuData" in spec["components"]["schemas"]
    assert httpx.get(f"{api_url}/docs").status_code == 200
