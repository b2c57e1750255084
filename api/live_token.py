"""Tokens that open the live stream: `GET /api/live?token=...`.

Browsers cannot set headers on an EventSource, and an API key in a URL ends up in logs and
browser history. A page trades its read key for a token (`POST /api/live/token`) that names
the key and expires soon (`LIVE_TOKEN_TTL_S`); it only opens a stream, and the stream checks
the key again when it opens and while it runs, so a revoked key's streams end.
"""

from __future__ import annotations

import orjson

from api.http_errors import LiveTokenError
from api.signing import BadSignatureError, Signer

# A key id and an expiry, signed: ~100 characters.
_MAX_TOKEN_CHARS = 256


class LiveTokens:
    def __init__(self, secret: bytes, *, ttl_s: float) -> None:
        self._signer = Signer(secret, "live-token")
        self.ttl_s = ttl_s

    def issue(self, key_id: str, *, now_s: float) -> tuple[str, float]:
        """A token for this key and when it expires (epoch seconds)."""
        expires_ms = int((now_s + self.ttl_s) * 1000)
        return self._signer.sign(
            orjson.dumps({"key": key_id, "exp": expires_ms})
        ), expires_ms / 1000

    def key_id(self, token: str | None, *, now_s: float) -> str:
        """The id of the key a valid, unexpired token was issued to; LiveTokenError if none."""
        if not token:
            raise LiveTokenError("missing")
        try:
            body = orjson.loads(self._signer.verify(token, max_chars=_MAX_TOKEN_CHARS))
        except (BadSignatureError, orjson.JSONDecodeError) as exc:
            raise LiveTokenError("invalid") from exc
        if not (
            isinstance(body, dict)
            and isinstance(body.get("key"), str)
            and isinstance(body.get("exp"), int)
        ):
            raise LiveTokenError("invalid")
        if body["exp"] <= now_s * 1000:
            raise LiveTokenError("expired")
        key_id: str = body["key"]
        return key_id
