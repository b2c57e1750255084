"""REST API keys: the one owner of their format, their hashing and their verification.

A key reads `rsk_<id>_<secret>`: `id` is 12 hex digits, public (listed, logged, used to
revoke) and the table's primary key, so verifying a key is one index lookup; `secret` is 32
random bytes (43 URL-safe base64 characters) of which only a hash is stored.

Why HMAC-SHA256 and not bcrypt/scrypt/Argon2: slow password hashes exist to make guessing a
*low-entropy* password expensive. A 256-bit random secret cannot be guessed, however fast the
hash; a deliberately slow hash would only cost every cache miss tens of milliseconds of CPU.
The key id is the HMAC key, which salts each hash: equal secrets hash differently, and no
precomputed table applies across keys.

Each worker caches a verified key for `API_KEY_CACHE_TTL_S` (under a second): a revoked key is
refused by every worker once its entry expires, with no message between workers to lose. The
cache entry also keeps the whole key that passed the hash check, and a request presenting that
very key is accepted by a constant-time comparison with it instead of a second HMAC (1.6 % of
a worker's CPU in a REST mix, BENCHMARKS.md "Issue 15, round 7"); any other secret for the same
id is hashed and compared, so the cache never accepts a wrong secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from api.http_errors import ForbiddenError, NotAuthenticatedError
from db.api_keys import find_api_key
from db.executor import Reader

KEY_PREFIX = "rsk_"
KEY_ID_PATTERN = "^[0-9a-f]{12}$"
_KEY = re.compile(r"^rsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# An unbounded cache would grow with every key ever used; a fleet has far fewer keys than this.
_CACHE_MAX = 10_000


class Scope(StrEnum):
    READ = "read"  # robots, readings, aggregates, stats
    INGEST = "ingest"  # POST /api/sensors
    REGISTRY = "registry"  # create, change, delete robots
    ADMIN = "admin"  # manage keys; implies every other scope


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_hash: bytes
    token: str  # the whole key, shown once


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified key."""

    key_id: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


def parse_key(token: str) -> ParsedKey | None:
    match = _KEY.match(token)
    return ParsedKey(match.group(1), match.group(2)) if match else None


def hash_secret(key_id: str, secret: str) -> bytes:
    return hmac.new(key_id.encode(), secret.encode(), hashlib.sha256).digest()


def generate_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return NewKey(key_id, hash_secret(key_id, secret), f"{KEY_PREFIX}{key_id}_{secret}")


def key_hash(token: str) -> tuple[str, bytes]:
    """(id, hash) of a whole key, e.g. API_BOOTSTRAP_ADMIN_KEY; ValueError if malformed."""
    parsed = parse_key(token)
    if parsed is None:
        raise ValueError("not a RoboSense API key (rsk_<12 hex>_<43 base64url>)")
    return parsed.key_id, hash_secret(parsed.key_id, parsed.secret)


def normalize_scopes(scopes: list[str] | list[Scope]) -> list[str]:
    """Sorted and without repeats, as stored; ValueError for an unknown scope."""
    return sorted({Scope(s).value for s in scopes})


@dataclass(slots=True)
class _Entry:
    expires: float
    secret_hash: bytes
    principal: Principal
    verified: str | None = None  # the whole key that last matched secret_hash


class KeyStore:
    """Verifies presented keys against the api_keys table, with a short per-process cache."""

    def __init__(self, db: Reader, *, ttl_s: float) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._cache: dict[str, _Entry] = {}

    async def verify(self, token: str | None, scope: Scope) -> Principal:
        """The key's principal if it is valid and allows `scope`; NotAuthenticatedError (401)
        for a missing, malformed, unknown, wrong or revoked key, ForbiddenError (403) when it
        lacks the scope."""
        if not token:
            raise NotAuthenticatedError("missing")
        parsed = parse_key(token)
        if parsed is None:
            raise NotAuthenticatedError("malformed")
        entry = await self._entry(parsed.key_id)
        # The token matched the regex, so it is ASCII, as compare_digest needs for str.
        if entry.verified is None or not hmac.compare_digest(entry.verified, token):
            if not hmac.compare_digest(
                entry.secret_hash, hash_secret(parsed.key_id, parsed.secret)
            ):
                raise NotAuthenticatedError("invalid")
            entry.verified = token
        if not entry.principal.allows(scope):
            raise ForbiddenError(scope.value)
        return entry.principal

    async def still_allows(self, key_id: str, scope: Scope) -> bool:
        """Whether a key verified earlier (its id carried in a signed live-stream token) is
        still unrevoked and allows `scope`."""
        try:
            entry = await self._entry(key_id)
        except NotAuthenticatedError:
            return False
        return entry.principal.allows(scope)

    async def _entry(self, key_id: str) -> _Entry:
        now = time.monotonic()
        entry = self._cache.get(key_id)
        if entry is None or entry.expires <= now:
            entry = await self._load(key_id, now)
        return entry

    async def _load(self, key_id: str, now: float) -> _Entry:
        # No single-flight: when an entry expires under load, the few requests that miss at
        # the same moment each run this primary-key lookup, which is cheaper than coordinating.
        row = await find_api_key(self._db, key_id)
        if row is None or row["revoked_at"] is not None:
            self._cache.pop(key_id, None)
            raise NotAuthenticatedError("invalid")
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        entry = _Entry(
            expires=now + self._ttl_s,
            secret_hash=bytes(row["secret_hash"]),
            principal=Principal(key_id, frozenset(Scope(s) for s in row["scopes"])),
        )
        self._cache[key_id] = entry
        return entry

    def forget(self, key_id: str) -> None:
        """Drops a key from this worker's cache (after revoking it here); the other workers
        drop it when their entry expires."""
        self._cache.pop(key_id, None)
