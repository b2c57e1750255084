"""The HTTP edge of a real `python -m api` (uvicorn, httptools and our limits): header size and
time limits, the connection cap and load shedding. Loopback only, every loop bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from api.keys import generate_key
from harness.services import ROOT, free_port, wait_for_port
from tests.conftest import HARNESS

pytestmark = pytest.mark.slow

MAX_HEADER_BYTES = 8192
HEADER_TIMEOUT_S = 3
MAX_CONNECTIONS = 16
MAX_CONCURRENT = 4
ADMIN_KEY = generate_key().token  # the API's bootstrap admin key; get() sends it


@pytest.fixture(scope="module")
def api_port(database_url: str, redis_prefix: str) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": f"{redis_prefix}edge:",
        "API_PORT": str(port),
        "MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
        "RETRY_AFTER_S": "2",
        "API_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env)
    try:
        wait_for_port(port, timeout=30)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict[str, object]:
        parsed: dict[str, object] = orjson.loads(self.body)
        return parsed


async def read_response(reader: asyncio.StreamReader, timeout: float = 15.0) -> Response:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(int(lines[0].split()[1]), headers, body)


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def get(port: int, path: str) -> Response:
    async with connection(port) as (reader, writer):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: api\r\nX-API-Key: {ADMIN_KEY}\r\n\r\n".encode())
        return await read_response(reader)


async def send_huge_header(port: int, total: int) -> str:
    """Sends a request whose header is `total` bytes, in 64 KiB writes, then ends it: what
    the server did. A server without a limit would read it all and answer 200."""
    async with connection(port) as (reader, writer):
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Flood: ")
            chunk = b"a" * 65536
            for _ in range(total // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()
            response = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return "closed"
        return str(response.status)


async def test_header_flood_is_refused_and_others_are_served(api_port: int) -> None:
    outcomes = await asyncio.gather(*(send_huge_header(api_port, 4 << 20) for _ in range(20)))
    assert set(outcomes) <= {"431", "closed"}, outcomes
    # The API still answers, on fresh connections and through its database.
    assert (await get(api_port, "/api/robots")).status == 200


async def test_complete_headers_over_the_limit_get_431(api_port: int) -> None:
    async with connection(api_port) as (reader, writer):
        big = b"b" * (MAX_HEADER_BYTES + 1)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Big: " + big + b"\r\n\r\n")
        response = await read_response(reader)
    assert response.status == 431
    assert response.json()["error"] == "headers_too_large"
    assert response.headers["connection"] == "close"
    # Just under the limit is served.
    async with connection(api_port) as (reader, writer):
        fits = b"c" * (MAX_HEADER_BYTES - 200)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Fits: " + fits + b"\r\n\r\n")
        assert (await read_response(reader)).status == 200


async def test_slow_headers_are_cut_after_the_timeout(api_port: int) -> None:
    async with connection(api_port) as (reader, writer):
        writer.write(b"GET /api/robots HTTP/1.1\r\nHost: api\r\n")

        async def trickle() -> None:
            # A byte every half second would keep a per-read timeout from ever firing.
            for _ in range(HEADER_TIMEOUT_S * 2 * 10):
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.5)

        trickling = asyncio.create_task(trickle())
        try:
            response = await read_response(reader, timeout=HEADER_TIMEOUT_S * 5)
        finally:
            trickling.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await trickling
    assert response.status == 408
    assert response.json()["error"] == "request_timeout"
    assert await reader.read() == b""  # and the connection is closed


async def test_a_keep_alive_connection_is_not_cut_between_requests(api_port: int) -> None:
    async with connection(api_port) as (reader, writer):
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
            assert (await read_response(reader)).status == 200
            # Less than the keep-alive timeout between requests; the header timer runs only
            # while a request's headers are arriving.
            await asyncio.sleep(1)


class HeldRequests:
    """POSTs whose bodies stop half way: each holds a request slot until released."""

    BODY = b'{"robot_id": "nobody", "sensor_type": "gps", "ts": 1, "data": {}}'

    def __init__(self, stack: contextlib.AsyncExitStack, port: int) -> None:
        self.stack, self.port = stack, port
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def hold(self, n: int) -> None:
        for _ in range(n):
            reader, writer = await self.stack.enter_async_context(connection(self.port))
            writer.write(
                b"POST /api/sensors HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                b"X-API-Key: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (ADMIN_KEY.encode(), len(self.BODY), self.BODY[:10])
            )
            await writer.drain()
            self.streams.append((reader, writer))

    async def release(self) -> list[Response]:
        for _, writer in self.streams:
            writer.write(self.BODY[10:])
            await writer.drain()
        return [await read_response(reader) for reader, _ in self.streams]


async def wait_until_shed(port: int, timeout: float = 15.0) -> Response:
    """Polls until a request is shed (the held requests reached the app); raises on timeout."""
    async with asyncio.timeout(timeout):
        while True:
            response = await get(port, "/api/robots")
            if response.status == 503:
                return response
            await asyncio.sleep(0.05)


async def test_concurrency_flood_is_shed_with_retry_after(api_port: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        held = HeldRequests(stack, api_port)
        await held.hold(MAX_CONCURRENT)
        shed = await wait_until_shed(api_port)
        assert shed.headers["retry-after"] == "2"
        assert shed.json()["error"] == "overloaded"
        flood = await asyncio.gather(*(get(api_port, "/api/robots") for _ in range(8)))
        assert [r.status for r in flood] == [503] * 8
        assert all(r.headers["retry-after"] == "2" for r in flood)
        # Probes are not shed: the process is alive and says so.
        assert (await get(api_port, "/healthz")).status == 200
        # The requests within the limit were served, none of them shed.
        answers = await held.release()
    assert [r.status for r in answers] == [422] * MAX_CONCURRENT
    assert {r.json()["error"] for r in answers} == {"readings_rejected"}  # ts 1 is too old
    # With the slots free again, requests up to the limit at once all succeed.
    within = await asyncio.gather(*(get(api_port, "/api/robots") for _ in range(MAX_CONCURRENT)))
    assert [r.status for r in within] == [200] * MAX_CONCURRENT


async def test_connections_over_the_cap_get_503_and_are_closed(api_port: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            _, writer = await stack.enter_async_context(connection(api_port))
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # open, headers unfinished
            await writer.drain()
        async with connection(api_port) as (reader, writer):
            writer.write(b"GET /api/robots HTTP/1.1\r\nHost: api\r\n\r\n")
            response = await read_response(reader)
            assert response.status == 503
            assert response.headers["retry-after"] == "2"
            assert response.headers["connection"] == "close"
            assert await reader.read() == b""
    assert (await get(api_port, "/api/robots")).status == 200
