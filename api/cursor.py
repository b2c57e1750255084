"""Opaque, signed keyset cursors.

A cursor is JSON [scope, *position], signed (api/signing.py). The scope is
a digest of the query the cursor continues (endpoint, filters, order), so a cursor replayed
with other filters is refused rather than silently starting in the wrong place, and an edited
cursor fails the signature.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from api.http_errors import InvalidCursorError
from api.signing import BadSignatureError, Signer

MAX_CURSOR_CHARS = 512


def query_scope(*parts: object) -> str:
    """A short digest naming one query (its endpoint, filters and order)."""
    return hashlib.blake2s(orjson.dumps(parts), digest_size=8).hexdigest()


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._signer = Signer(secret, "cursor")

    def encode(self, scope: str, position: Sequence[Any]) -> str:
        return self._signer.sign(orjson.dumps([scope, *position]))

    def decode(self, cursor: str, scope: str) -> list[Any]:
        """The position the cursor holds; InvalidCursorError unless it is intact and ours."""
        try:
            body = self._signer.verify(cursor, max_chars=MAX_CURSOR_CHARS)
        except BadSignatureError as exc:
            raise InvalidCursorError(str(exc)) from exc
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidCursorError("malformed") from exc
        if not isinstance(decoded, list) or not decoded:
            raise InvalidCursorError("malformed")
        if decoded[0] != scope:
            raise InvalidCursorError("it belongs to a query with other filters or order")
        return decoded[1:]

    def decode_after_id(self, cursor: str | None, scope: str) -> str:
        """For lists in id order: the id to continue after ("" for the first page)."""
        if not cursor:
            return ""
        position = self.decode(cursor, scope)
        if len(position) != 1 or not isinstance(position[0], str):
            raise InvalidCursorError("malformed")
        return position[0]
