"""api.http_server.OneWritePerTurn on a real event loop: what a response writes in one turn of
the loop leaves in one write. (The real server with it: tests/api/test_http_edge.py.)"""

from __future__ import annotations

import asyncio

from api.http_server import OneWritePerTurn


class RecordingTransport(asyncio.Transport):
    """Records what reaches the socket; the wrapper under test sees only write/close/is_closing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_head_and_body_written_in_one_turn_leave_in_one_write() -> None:
    transport = RecordingTransport()
    out = OneWritePerTurn(transport, asyncio.get_running_loop())
    out.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    out.write(b"{}")
    assert transport.writes == []  # nothing before the turn ends
    await next_turn()
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_in_later_turns_follow_in_order() -> None:
    transport = RecordingTransport()
    out = OneWritePerTurn(transport, asyncio.get_running_loop())
    out.write(b"head")
    await next_turn()
    out.write(b"chunk 1")
    await next_turn()
    out.write(b"chunk 2")
    out.write(b"end")
    await next_turn()
    assert transport.writes == [b"head", b"chunk 1", b"chunk 2end"]


async def test_close_writes_what_is_pending_first() -> None:
    transport = RecordingTransport()
    out = OneWritePerTurn(transport, asyncio.get_running_loop())
    out.write(b"HTTP/1.1 503 \r\n\r\n")
    out.close()
    assert transport.writes == [b"HTTP/1.1 503 \r\n\r\n"]
    assert transport.closed and out.is_closing()
    await next_turn()  # the scheduled flush finds nothing left and does not write again
    assert transport.writes == [b"HTTP/1.1 503 \r\n\r\n"]


async def test_nothing_is_written_to_a_transport_that_closed_meanwhile() -> None:
    transport = RecordingTransport()
    out = OneWritePerTurn(transport, asyncio.get_running_loop())
    out.write(b"late")
    transport.close()  # the client went away before the turn ended
    await next_turn()
    assert transport.writes == []
