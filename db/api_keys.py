"""REST API keys: insert, look up by id (the primary key), list with a keyset on id, revoke."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from db.executor import Executor, Reader

# Everything but the hash: what listing and creating answer with.
_PUBLIC = "id, name, scopes, created_at, revoked_at"

_INSERT = f"""
INSERT INTO api_keys (id, name, scopes, secret_hash) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING
RETURNING {_PUBLIC}
"""

_FIND = f"SELECT {_PUBLIC}, secret_hash FROM api_keys WHERE id = $1"

_LIST = f"SELECT {_PUBLIC} FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"

# coalesce: revoking twice keeps the first revocation time.
_REVOKE = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
RETURNING {_PUBLIC}
"""


async def insert_api_key(
    db: Executor, *, key_id: str, name: str, scopes: Sequence[str], secret_hash: bytes
) -> asyncpg.Record | None:
    """The new key's public columns, or None when the id is taken (nothing changes then)."""
    row: asyncpg.Record | None = await db.fetchrow(_INSERT, key_id, name, list(scopes), secret_hash)
    return row


async def find_api_key(db: Reader, key_id: str) -> asyncpg.Record | None:
    """The key with its secret hash, revoked or not."""
    row: asyncpg.Record | None = await db.fetchrow(_FIND, key_id)
    return row


async def list_api_keys(db: Executor, *, after_id: str, limit: int) -> list[asyncpg.Record]:
    """Keys in id order after `after_id` ('' for the first page), without their hashes."""
    return await db.fetch(_LIST, after_id, limit)


async def revoke_api_key(db: Executor, key_id: str) -> asyncpg.Record | None:
    """Marks the key revoked; None when there is no such key."""
    row: asyncpg.Record | None = await db.fetchrow(_REVOKE, key_id)
    return row
