"""CPU cost of the API-key check per request, in process (no sockets, no database):

    python -m loadtest.auth_cost [--requests 5000] [--rounds 7]

Two routes of one FastAPI app with our error handlers, called straight through ASGI in turn:
`res: ResourcesDep` (how every route took its resources before keys) and `res: ReadRes` (the guard,
which checks the key and returns the same resources). The difference of their CPU time per
request is what the guard adds (header reads, key parsing, cache lookup, HMAC and comparison)
when the key is in the worker's cache, as it is for all but one request per key per
`API_KEY_CACHE_TTL_S`; the miss adds one primary-key lookup. `loadtest/rest.py` measures the
whole request mix.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from api.auth import ReadRes
from api.errors import install_error_handlers
from api.keys import KeyStore, generate_key
from api.resources import ResourcesDep


class _OneKey:
    """Stands in for the database: answers the lookup of the one key (only cache misses ask)."""

    def __init__(self, key_id: str, secret_hash: bytes) -> None:
        self.row: dict[str, Any] = {
            "id": key_id,
            "scopes": ["read"],
            "secret_hash": secret_hash,
            "revoked_at": None,
        }

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:
        return self.row if args[0] == self.row["id"] else None


def _app(store: KeyStore) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.resources = SimpleNamespace(keys=store)

    @app.get("/open")
    async def open_route(res: ResourcesDep) -> Response:
        return Response(b"{}", media_type="application/json")

    @app.get("/guarded")
    async def guarded_route(res: ReadRes) -> Response:
        return Response(b"{}", media_type="application/json")

    return app


async def _cpu_per_request(app: FastAPI, path: str, key: str, n: int) -> float:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api"), (b"x-api-key", key.encode())],
        "client": ("127.0.0.1", 1),
        "server": ("api", 80),
    }
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    t0 = time.process_time()
    for _ in range(n):
        await app(dict(scope, state={}), receive, send)
    cpu = (time.process_time() - t0) / n
    if statuses != {200}:
        raise RuntimeError(f"{path}: statuses {statuses}")
    return cpu


async def main_async(requests: int, rounds: int) -> None:
    new = generate_key()
    store = KeyStore(_OneKey(new.key_id, new.secret_hash), ttl_s=0.5)  # type: ignore[arg-type]
    app = _app(store)
    for path in ("/open", "/guarded"):  # warm up
        await _cpu_per_request(app, path, new.token, 500)
    opened, guarded = [], []
    for _ in range(rounds):  # interleaved, so machine load hits both alike
        opened.append(await _cpu_per_request(app, "/open", new.token, requests))
        guarded.append(await _cpu_per_request(app, "/guarded", new.token, requests))
    o, g = statistics.median(opened), statistics.median(guarded)
    print(
        f"CPU per request, median of {rounds} rounds of {requests} (in process, ASGI): "
        f"res: ResourcesDep {o * 1e6:.1f} µs, res: ReadRes {g * 1e6:.1f} µs, "
        f"the guard {(g - o) * 1e6:.1f} µs"
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.auth_cost", description=__doc__)
    p.add_argument("--requests", type=int, default=5_000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    asyncio.run(main_async(args.requests, args.rounds))


if __name__ == "__main__":
    main()
