"""A bare HTTP/1.1 responder: loadtest.http_wrk's probe of how fast the machine serves.

    python -m loadtest.probe_server --port 18300

The same tree's REST rate moved by a third between sittings and within one (BENCHMARKS.md,
round 12), while a pure-Python loop ran at one speed: what moved is what every request pays
below the application (loopback TCP, waking the process on the other core, the event loop).
This server pays only that: one uvloop process on an SO_REUSEPORT port (start one per API
worker), answering each request with a fixed 200 and no application behind it. wrk's rate
against it beside each run tells a slow stretch of the machine from a slower tree.

Requests without a body only (GET, as wrk sends it): it answers each end of headers it reads.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_END_OF_HEADERS = b"\r\n\r\n"


class _Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._tail = b""  # the end of the last chunk, in case a request's end straddles two

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport instances, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        seen = self._tail + data
        answers = seen.count(_END_OF_HEADERS)
        # Kept: up to 3 bytes after the last end counted, never a counted byte again.
        after = seen.rfind(_END_OF_HEADERS) + len(_END_OF_HEADERS) if answers else 0
        self._tail = seen[max(after, len(seen) - 3) :]
        if answers:
            self._transport.write(_RESPONSE * answers)


async def serve(port: int, *, host: str = "127.0.0.1") -> None:
    """Serves until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, host, port, reuse_port=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.probe_server", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    uvloop.run(serve(args.port, host=args.host))


if __name__ == "__main__":
    main()
