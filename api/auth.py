"""Route guards. A guarded route takes its resources through its scope's guard,
`res: ReadRes` (or `IngestRes`, `RegistryRes`, `AdminRes`) instead of `res: ResourcesDep`; a route
that needs no resources uses `dependencies=[require_scope(Scope.X)]`. Either answers 401
without a valid key and 403 when the key lacks the scope (admin allows everything).

The key comes as `X-API-Key` (what the older service's clients send) or
`Authorization: Bearer`. The guard is one FastAPI security dependency (an `APIKeyHeader`, so
the OpenAPI schema declares the scheme and /docs can authorise) that reads both headers and
hands back the resources: each dependency FastAPI solves costs tens of µs, and a guard made of
a dependency plus the two stock security classes cost 5x the CPU of this one
(`python -m loadtest.auth_cost`, BENCHMARKS.md). `document_bearer` adds the Bearer
alternative to the schema. Routes without a guard (health, metrics, docs) are open;
tests/api/test_auth.py lists every route with its scope, so a new route must pick one.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.datastructures import Headers

from api.http_errors import NotAuthenticatedError
from api.keys import Principal, Scope
from api.resources import Resources

_KEY_FORMAT = "`rsk_<id>_<secret>`, from `python -m api keys create` or `POST /api/keys`"
_API_KEY_SCHEME = "ApiKey"
_BEARER_SCHEME = "Bearer"
_BEARER = HTTPBearer(
    scheme_name=_BEARER_SCHEME,
    description=f"The same API key as a bearer token, {_KEY_FORMAT}.",
)


def presented_key(headers: Headers) -> str | None:
    """The key from `X-API-Key` or `Authorization: Bearer`; both must agree when both come."""
    key = headers.get("x-api-key")
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            # Two different keys in one request: refuse rather than guess which one counts.
            if key is not None and key != credentials:
                raise NotAuthenticatedError("ambiguous")
            return credentials
    return key


class KeyGuard(APIKeyHeader):
    """Checks the request's key against one scope and returns the process's resources."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(
            name="X-API-Key",
            scheme_name=_API_KEY_SCHEME,
            description=f"An API key, {_KEY_FORMAT}. Also accepted as `Authorization: Bearer`.",
            auto_error=False,
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Resources:  # type: ignore[override]
        resources: Resources = request.app.state.resources
        await resources.keys.verify(presented_key(request.headers), self.scope)
        return resources


class PrincipalGuard(KeyGuard):
    """The same check, for a route that needs to know which key called it."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        resources: Resources = request.app.state.resources
        return await resources.keys.verify(presented_key(request.headers), self.scope)


@cache
def require_scope(scope: Scope | str) -> Any:
    """The guard of `scope` as a dependency, for `dependencies=[...]` or `Annotated`. One
    object per scope, so a route that names it twice has it run once."""
    return Security(KeyGuard(Scope(scope)))


ReadRes = Annotated[Resources, require_scope(Scope.READ)]
IngestRes = Annotated[Resources, require_scope(Scope.INGEST)]
RegistryRes = Annotated[Resources, require_scope(Scope.REGISTRY)]
AdminRes = Annotated[Resources, require_scope(Scope.ADMIN)]
ReadPrincipal = Annotated[Principal, Security(PrincipalGuard(Scope.READ))]


def document_bearer(schema: dict[str, Any]) -> None:
    """Adds `Authorization: Bearer` as an alternative wherever the schema asks for the API
    key (the guard accepts both; FastAPI declares only the guard's own scheme)."""
    schemes = schema.get("components", {}).get("securitySchemes", {})
    if _API_KEY_SCHEME not in schemes:
        return
    schemes[_BEARER_SCHEME] = jsonable_encoder(_BEARER.model, by_alias=True, exclude_none=True)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security") if isinstance(operation, dict) else None
            if security and {_API_KEY_SCHEME: []} in security:
                security.append({_BEARER_SCHEME: []})
