"""Passwords in Mosquitto's own format, as `mosquitto_passwd` (2.0) writes them.

`$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 over a 12-byte salt.
Mosquitto verifies one hash per CONNECT; 101 iterations is `mosquitto_passwd`'s own default.
The passwords this module makes are 192 random bits, which no iteration count needs to stretch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_HASH_TYPE = 7  # Mosquitto's pw_sha512_pbkdf2
_SALT_BYTES = 12
DEFAULT_ITERATIONS = 101


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    salt64, hash64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"${_HASH_TYPE}${iterations}${salt64}${hash64}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt64, hash64 = encoded.split("$")
        if int(kind) != _HASH_TYPE:
            return False
        salt, expected = base64.b64decode(salt64), base64.b64decode(hash64)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def derive_password(secret: str, username: str) -> str:
    """A fleet's passwords from one secret: whoever holds it (a simulator, a factory line)
    can compute any identity's password without a copy of each."""
    mac = hmac.new(secret.encode(), b"mqtt-password:" + username.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()
