"""uvicorn's httptools protocol with the limits it lacks: header size, header time, and a cap
on connections.

httptools (llhttp) accepts headers of any size and uvicorn sets no deadline on them: one
client could hold a worker's memory with a 200 MB header (httptools grows a header value by
concatenation, so it also costs quadratic CPU) or keep thousands of connections open by
sending a byte now and then. uvicorn's own `limit_concurrency` answers 503 without
`Retry-After` and counts idle keep-alive connections as busy. Each refusal here is the API's
JSON error body with `Connection: close`.

Each request's responses are written through `OneWritePerTurn`: uvicorn writes a response's
head and its body with two `transport.write` calls, i.e. two `send(2)`s and two TCP segments
per response, and the client wakes for each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from api.errors import error_body, overloaded_response

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_s: float
    max_connections: int
    retry_after_s: int


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Per connection: the request line and headers of each request must fit in
    `max_header_bytes` (431) and arrive within `header_timeout_s` of the connection's opening
    or of the request's first byte (408); a request on a connection beyond `max_connections`
    open in this worker gets 503 with Retry-After. Then the connection is closed."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._served_app = self.app
        self._in_headers = True
        # Exact: the request line and the complete headers. Streamed: what arrived while the
        # headers were incomplete, which bounds a header that never completes.
        self._exact_bytes = 0
        self._streamed_bytes = 0
        self._count_this_chunk = True
        self._header_timer: asyncio.TimerHandle | None = None
        # Once refused, the rest of what the parser is fed is ignored (it was answered).
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._count_this_chunk = True
        super().data_received(data)
        if not self._in_headers or self._refused or self.transport.is_closing():
            return
        if self._count_this_chunk:
            self._streamed_bytes += len(data)
        if self._streamed_bytes > self.limits.max_header_bytes:
            self._refuse(431, "request line and headers over the size limit")

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        # A later request may begin mid-chunk, after the previous one's body: the rest of
        # this chunk is not counted as streamed (its complete headers are counted exactly).
        self._count_this_chunk = self.cycle is None
        self._in_headers = True
        self._exact_bytes = self._streamed_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._exact_bytes += len(url)
        if self._exact_bytes <= self.limits.max_header_bytes:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._exact_bytes += len(name) + len(value) + 4
        if self._exact_bytes <= self.limits.max_header_bytes:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_headers = False
        self._cancel_header_timer()
        if self._exact_bytes > self.limits.max_header_bytes:
            self._refuse(431, "request line and headers over the size limit")
            return
        if len(self.connections) > self.limits.max_connections:
            self.app = overloaded_response(
                self.limits.retry_after_s,
                "too many connections to this worker; retry later",
                close=True,
            )
        else:
            self.app = self._served_app
        before = self.cycle
        super().on_headers_complete()
        # uvicorn made a cycle for this request (not for an upgrade) whose task has not run yet.
        if self.cycle is not None and self.cycle is not before:
            self.cycle.transport = OneWritePerTurn(self.transport, self.loop)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._on_header_timeout
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(408, "request headers not received in time")

    def _refuse(self, status: int, detail: str) -> None:
        """Answers before any app runs and closes: what follows on the connection is not
        read, so it cannot be a request of its own."""
        self._refused = True
        self._cancel_header_timer()
        body = error_body(
            status, "request_timeout" if status == 408 else "headers_too_large", detail
        )
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body.body)
        )
        self.transport.write(b"".join(head) + body.body)
        self.transport.close()


class OneWritePerTurn:
    """The transport a request's RequestResponseCycle sees: what it writes during one turn of
    the loop (a response's head and body) goes out in one write at the end of that turn.
    Closing writes what is pending first."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()
