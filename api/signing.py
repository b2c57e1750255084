"""The one owner of the API's signed strings: keyset cursors and live-stream tokens.

A signed string is base64url(body) + "." + base64url(HMAC-SHA256[:16]). Each use signs with
its own key derived from the one secret (CURSOR_SECRET, shared by every worker) and its
purpose, so a cursor can never pass for a token nor a token for a cursor, and a deployment
has one secret to keep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


class BadSignatureError(ValueError):
    """The string is malformed, edited, or signed by another deployment or for another use."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes, purpose: str) -> None:
        self._key = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:16]

    def sign(self, body: bytes) -> str:
        return f"{_b64encode(body)}.{_b64encode(self._mac(body))}"

    def verify(self, signed: str, *, max_chars: int) -> bytes:
        """The body of an intact string of ours; BadSignatureError (naming why) otherwise."""
        if len(signed) > max_chars:
            raise BadSignatureError("too long")
        body_text, dot, sig_text = signed.partition(".")
        if not dot:
            raise BadSignatureError("malformed")
        try:
            body, sig = _b64decode(body_text), _b64decode(sig_text)
        except (binascii.Error, ValueError) as exc:
            raise BadSignatureError("not base64url") from exc
        if not hmac.compare_digest(sig, self._mac(body)):
            raise BadSignatureError("signature mismatch (edited, or from another deployment)")
        return body
