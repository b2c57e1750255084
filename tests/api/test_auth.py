"""API keys: every route against no key, malformed, unknown, wrong and revoked keys, a key
without the route's scope and one with it; both header styles; key management; bootstrap."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError

from api.app import create_app
from api.keys import Scope, generate_key
from api.settings import ApiSettings
from tests.api.conftest import create_key, now_ms
from tests.conftest import HARNESS

# Every route of the app and the scope it requires (None: open). A route missing here fails
# test_route_access: a new route must choose its scope (api/auth.py) and be listed.
SCOPES: dict[tuple[str, str], Scope | None] = {
    ("POST", "/api/robots"): Scope.REGISTRY,
    ("GET", "/api/robots"): Scope.READ,
    ("GET", "/api/robots/{robot_id}"): Scope.READ,
    ("PATCH", "/api/robots/{robot_id}"): Scope.REGISTRY,
    ("PUT", "/api/robots/{robot_id}"): Scope.REGISTRY,
    ("DELETE", "/api/robots/{robot_id}"): Scope.REGISTRY,
    ("POST", "/api/robots/{robot_id}/mqtt-credentials"): Scope.REGISTRY,
    ("POST", "/api/sensors"): Scope.INGEST,
    ("GET", "/api/sensors"): Scope.READ,
    ("GET", "/api/sensors/latest"): Scope.READ,
    ("GET", "/api/sensors/aggregate"): Scope.READ,
    ("GET", "/api/sensors/filtered"): Scope.READ,
    ("GET", "/api/stats"): Scope.READ,
    ("GET", "/api/alerts"): Scope.READ,
    ("POST", "/api/keys"): Scope.ADMIN,
    ("GET", "/api/keys"): Scope.ADMIN,
    ("DELETE", "/api/keys/{key_id}"): Scope.ADMIN,
    ("GET", "/api/dead-letters"): Scope.READ,
    ("POST", "/api/live/token"): Scope.READ,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("GET", "/health_check"): None,
    ("GET", "/openapi.json"): None,
    ("GET", "/docs"): None,
    ("GET", "/docs/oauth2-redirect"): None,
    ("GET", "/redoc"): None,
    ("GET", "/"): None,
}
# Routes that take a signed token instead of a key (browsers cannot set headers on an
# EventSource); tests/api/test_live.py checks their tokens.
TOKEN_ROUTES = {("GET", "/api/live")}


def _app_routes() -> list[tuple[str, str]]:
    app = create_app(ApiSettings())
    return sorted(
        (method, route.path)
        # Included routers are lazy (FastAPI >= 0.16x): this walks into them.
        for route in iter_route_contexts(app.routes)
        if route.path is not None
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET
    )


def _wrong_scope(scope: Scope) -> tuple[Scope, ...]:
    """Every scope but the one needed (and admin, which implies it)."""
    return tuple(s for s in (Scope.READ, Scope.INGEST, Scope.REGISTRY) if s is not scope)


async def _revoke(client: httpx.AsyncClient, admin: str, token: str) -> None:
    key_id = token.split("_")[1]
    response = await client.delete(f"/api/keys/{key_id}", headers={"X-API-Key": admin})
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(("method", "path"), _app_routes())
async def test_route_access(
    method: str,
    path: str,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    pool: asyncpg.Pool[Any],
    api_keys: dict[Scope, str],
) -> None:
    url = path.format(robot_id="r1", key_id="0" * 12)
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None

    async def status(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        response = await anonymous.request(method, url, headers=headers, json=body)
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return response.status_code, response.json() if is_json and response.content else {}

    if (method, path) in TOKEN_ROUTES:
        # No key opens it, not even an admin's.
        for headers in ({}, {"X-API-Key": api_keys[Scope.ADMIN]}):
            code, doc = await status(headers)
            assert (code, doc.get("error")) == (401, "unauthorized"), f"{headers}: {code} {doc}"
        return
    assert (method, path) in SCOPES, (
        f"{method} {path} has no entry in SCOPES: guard it with require_scope (api/auth.py), "
        "or list it as open, and document it"
    )
    scope = SCOPES[method, path]

    if scope is None:
        code, _ = await status({})
        assert code not in (401, 403), f"{method} {path} must stay open"
        return

    unknown = generate_key().token
    stored = api_keys[Scope.READ]
    wrong_secret = stored[:-43] + "A" * 43
    refused = {
        "no key": {},
        "empty key": {"X-API-Key": ""},
        "malformed key": {"X-API-Key": "let-me-in"},
        "unknown key": {"X-API-Key": unknown},
        "unknown bearer": {"Authorization": f"Bearer {unknown}"},
        "wrong secret": {"X-API-Key": wrong_secret},
        "basic auth": {"Authorization": "Basic dXNlcjpwYXNz"},
    }
    for case, headers in refused.items():
        code, doc = await status(headers)
        assert (code, doc.get("error")) == (401, "unauthorized"), f"{case}: {code} {doc}"

    lacking = await create_key(pool, *_wrong_scope(scope))
    code, doc = await status({"X-API-Key": lacking})
    assert (code, doc.get("error"), doc.get("required_scope")) == (403, "forbidden", scope.value)

    # The right scope passes (whatever the route then answers), then the same key, revoked,
    # is refused. The admin key passes everywhere.
    for header in ("X-API-Key", "Authorization"):
        holder = await create_key(pool, scope)
        value = holder if header == "X-API-Key" else f"Bearer {holder}"
        code, doc = await status({header: value})
        assert code not in (401, 403), f"{scope} key in {header}: {code} {doc}"
        await _revoke(anonymous, api_keys[Scope.ADMIN], holder)
        code, doc = await status({header: value})
        assert (code, doc.get("error")) == (401, "unauthorized"), f"revoked: {code} {doc}"
    code, doc = await status({"X-API-Key": api_keys[Scope.ADMIN]})
    assert code not in (401, 403), f"admin key: {code} {doc}"


async def test_every_listed_route_exists() -> None:
    """The table holds no stale route (one that was renamed keeps its scope under its new name)."""
    assert set(SCOPES) | TOKEN_ROUTES == set(_app_routes())


async def test_401_is_json_with_a_challenge(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/api/robots")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {
        "error": "unauthorized",
        "detail": "an API key is required: send X-API-Key or Authorization: Bearer",
    }
    response = await anonymous.get("/api/robots", headers={"X-API-Key": generate_key().token})
    assert response.json() == {"error": "unauthorized", "detail": "invalid or revoked API key"}


async def test_bearer_and_x_api_key(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    key = api_keys[Scope.READ]
    for headers in (
        {"X-API-Key": key},
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer {key}"},
        {"X-API-Key": key, "Authorization": f"Bearer {key}"},
    ):
        response = await anonymous.get("/api/robots", headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert [r["id"] for r in response.json()["items"]] == ["r1", "r2", "r3"]
    # Two different keys: refused rather than guessing which one counts.
    both = {"X-API-Key": key, "Authorization": f"Bearer {api_keys[Scope.ADMIN]}"}
    response = await anonymous.get("/api/robots", headers=both)
    assert (response.status_code, response.json()["detail"]) == (
        401,
        "X-API-Key and Bearer hold different keys",
    )


async def test_a_cached_key_still_needs_its_secret(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    key = api_keys[Scope.READ]
    assert (await anonymous.get("/api/stats", headers={"X-API-Key": key})).status_code == 200
    forged = key[:-1] + ("B" if key[-1] != "B" else "C")
    # The cache remembers the key that passed the hash check; neither a forged key after it
    # nor the genuine one after a forged one may be answered from what it remembers.
    for presented, status in ((forged, 401), (key, 200), (forged, 401), (key, 200)):
        answer = await anonymous.get("/api/stats", headers={"X-API-Key": presented})
        assert answer.status_code == status, presented


async def test_admin_implies_every_scope(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    admin = {"X-API-Key": api_keys[Scope.ADMIN]}
    created = await anonymous.post("/api/robots", json={"id": "adm"}, headers=admin)
    assert created.status_code == 201
    ingest: dict[str, Any] = {"robot_id": "adm", "sensor_type": "battery"}
    ingest |= {"ts": now_ms(), "data": {"level": 50}}
    response = await anonymous.post("/api/sensors", json=ingest, headers=admin)
    assert response.status_code == 201, response.text


async def test_key_management(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    created = await client.post(
        "/api/keys", json={"name": "ops", "scopes": ["read", "ingest", "read"]}
    )
    assert created.status_code == 201, created.text
    doc = created.json()
    assert set(doc) == {"id", "name", "scopes", "created_at", "revoked_at", "key"}
    assert (doc["name"], doc["scopes"], doc["revoked_at"]) == ("ops", ["ingest", "read"], None)
    key = doc["key"]
    assert key.startswith(f"rsk_{doc['id']}_")
    headers = {"X-API-Key": key}
    assert (await anonymous.get("/api/robots", headers=headers)).status_code == 200
    denied = await anonymous.post("/api/robots", json={}, headers=headers)
    assert (denied.status_code, denied.json()["required_scope"]) == (403, "registry")
    assert (await anonymous.get("/api/keys", headers=headers)).status_code == 403

    listed = (await client.get("/api/keys", params={"limit": 1000})).json()["items"]
    mine = [k for k in listed if k["id"] == doc["id"]]
    assert mine == [{k: doc[k] for k in ("id", "name", "scopes", "created_at", "revoked_at")}]
    assert all(set(k) == {"id", "name", "scopes", "created_at", "revoked_at"} for k in listed)
    assert key not in (await client.get("/api/keys")).text

    assert (await client.delete(f"/api/keys/{doc['id']}")).status_code == 204
    assert (await anonymous.get("/api/robots", headers=headers)).status_code == 401
    listed = (await client.get("/api/keys", params={"limit": 1000})).json()["items"]
    (revoked,) = [k for k in listed if k["id"] == doc["id"]]
    assert revoked["revoked_at"] is not None
    assert (await client.delete(f"/api/keys/{doc['id']}")).status_code == 204  # idempotent
    missing = await client.delete("/api/keys/abcdefabcdef")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [{}, {"scopes": []}, {"scopes": ["root"]}, {"scopes": "read"}, {"scopes": ["read"], "x": 1}],
)
async def test_create_key_refuses_bad_bodies(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/api/keys", json=body)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_request")


async def test_key_list_pages_by_cursor(client: httpx.AsyncClient) -> None:
    ids = {(await client.post("/api/keys", json={"scopes": ["read"]})).json()["id"] for _ in "abc"}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/keys", params=params)).json()
        seen += [k["id"] for k in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert ids <= set(seen)


async def test_bootstrap_admin_key(
    api_settings: ApiSettings, clean_db: asyncpg.Pool[Any], api_keys: dict[Scope, str]
) -> None:
    token = generate_key().token
    settings = ApiSettings.model_validate(
        api_settings.model_dump() | {"api_bootstrap_admin_key": token}
    )

    async def status_with(app: FastAPI) -> int:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://api",
                headers={"X-API-Key": token},
            ) as c,
        ):
            return (await c.get("/api/keys")).status_code

    assert await status_with(create_app(settings)) == 200
    assert await status_with(create_app(settings)) == 200  # a restart keeps it
    key_id = token.split("_")[1]
    assert await clean_db.fetchval("SELECT name FROM api_keys WHERE id = $1", key_id) == "bootstrap"
    await clean_db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
    assert await status_with(create_app(settings)) == 401  # a restart does not revive it


@pytest.mark.parametrize("value", ["admin", "rsk_short_secret", "x" * 64])
def test_malformed_bootstrap_key_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValidationError, match="not a RoboSense API key"):
        ApiSettings(api_bootstrap_admin_key=value, redis_url=HARNESS.redis_url)


async def test_openapi_declares_both_schemes(anonymous: httpx.AsyncClient) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert (schemes["Bearer"]["type"], schemes["Bearer"]["scheme"]) == ("http", "bearer")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (method.upper(), path) in TOKEN_ROUTES:
                assert "security" not in operation, (method, path)
                assert "401" in operation["responses"], (method, path)
            elif path.startswith("/api/"):
                assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
            else:
                assert "security" not in operation, (method, path)
