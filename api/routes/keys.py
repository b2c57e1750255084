"""/api/keys: API key management, admin scope only (docs/security.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from api.auth import AdminRes
from api.cursor import query_scope
from api.http_errors import NotFoundError
from api.keys import KEY_ID_PATTERN, generate_key, normalize_scopes
from api.responses import JSONBytes
from api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyPage, ErrorOut
from db.api_keys import insert_api_key, list_api_keys, revoke_api_key
from telemetry.errors import ConflictError

router = APIRouter(prefix="/api/keys", tags=["keys"])

KeyIdPath = Annotated[str, Path(pattern=KEY_ID_PATTERN, description="12 hex digits")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 422, 503)
}


def _key_doc(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "scopes": row["scopes"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=_ERRORS)
async def create_key(body: ApiKeyIn, res: AdminRes) -> Response:
    """A new key with these scopes; the answer holds the whole key, which is never shown again."""
    new = generate_key()
    row = await insert_api_key(
        res.pool,
        key_id=new.key_id,
        name=body.name,
        scopes=normalize_scopes(body.scopes),
        secret_hash=new.secret_hash,
    )
    if row is None:  # 48 random bits met an existing id: vanishingly rare, and retryable
        raise ConflictError("api key", new.key_id)
    return JSONBytes({**_key_doc(row), "key": new.token}, status_code=201)


@router.get("", response_model=ApiKeyPage, responses=_ERRORS)
async def get_keys(
    res: AdminRes,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Every key, revoked ones included, in id order; never a secret or its hash."""
    scope = query_scope("keys")
    after = res.cursors.decode_after_id(cursor, scope)
    rows = await list_api_keys(res.pool, after_id=after, limit=limit + 1)
    page = rows[:limit]
    next_cursor = res.cursors.encode(scope, [page[-1]["id"]]) if len(rows) > limit else None
    return JSONBytes({"items": [_key_doc(r) for r in page], "next_cursor": next_cursor})


@router.delete("/{key_id}", status_code=204, response_class=Response, responses=_ERRORS)
async def revoke_key(key_id: KeyIdPath, res: AdminRes) -> Response:
    """Revokes the key: this worker refuses it at once, every other worker within
    `API_KEY_CACHE_TTL_S`. Revoking a revoked key is a no-op (204)."""
    if await revoke_api_key(res.pool, key_id) is None:
        raise NotFoundError("api key", key_id)
    res.keys.forget(key_id)
    return Response(status_code=204)
