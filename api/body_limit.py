"""Refuses request bodies over the size limit before anything parses them.

A declared Content-Length over the limit is answered at once; a chunked body is read up to
the limit and replayed to the app (the server enforces a declared length). The app's request
gate (api/request_gate.py) applies it to every method that may carry a body."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Message, Receive

from api.errors import robosense_error_response
from api.http_errors import PayloadTooLargeError

NO_BODY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "DELETE"))


def refuse_declared(declared: bytes, limit: int) -> Response | None:
    """413 for a declared Content-Length over the limit (or not a number); None to go on."""
    try:
        size = int(declared)
    except ValueError:
        size = limit + 1
    if size > limit:
        return robosense_error_response(PayloadTooLargeError(size, limit))
    return None


async def read_undeclared(receive: Receive, limit: int) -> Response | Receive:
    """A body without a declared length, read up to the limit: 413 past it, or a `receive`
    that hands the app the whole body in one message, then whatever follows."""
    chunks: list[bytes] = []
    total = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return robosense_error_response(PayloadTooLargeError(total, limit))
        chunks.append(chunk)
        more = message.get("more_body", False)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    return replay
