"""Opaque, signed keyset cursors.

A cursor is base64url(JSON [scope, *position]) + "." + base64url(HMAC-SHA256[:16]). The scope is
a digest of the query the cursor continues (endpoint, filters, order), so a cursor replayed
with other filters is refused rather than silently starting in the wrong place, and an edited
cursor fails the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

from api.http_errors import InvalidCursorError

MAX_CURSOR_CHARS = 512


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def query_scope(*parts: object) -> str:
    """A short digest naming one query (its endpoint, filters and order)."""
    return hashlib.blake2s(orjson.dumps(parts), digest_size=8).hexdigest()


class CursorCodec:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, position: Sequence[Any]) -> str:
        body = orjson.dumps([scope, *position])
        return f"{_b64encode(body)}.{_b64encode(self._sign(body))}"

    def decode(self, cursor: str, scope: str) -> list[Any]:
        """The position the cursor holds; InvalidCursorError unless it is intact and ours."""
        if len(cursor) > MAX_CURSOR_CHARS:
            raise InvalidCursorError("too long")
        body_text, dot, sig_text = cursor.partition(".")
        if not dot:
            raise InvalidCursorError("malformed")
        try:
            body, sig = _b64decode(body_text), _b64decode(sig_text)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError("not base64url") from exc
        if not hmac.compare_digest(sig, self._sign(body)):
            raise InvalidCursorError("signature mismatch (edited, or from another deployment)")
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
