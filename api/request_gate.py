"""The app's own middleware, in one layer: what every HTTP request passes before its route.

In order: load shedding (api/load_shed.py; a shed request costs as little as possible and is
not timed), then the request metrics (api/metrics.py) time the rest, which is the refusal of
a body that is not JSON (api/content_type.py, 415) and of one over the size limit
(api/body_limit.py, 413), then the app. These were four middlewares whose order was only
implied by the order they were added in; as one, the order is written down here, and a request
pays one frame and one walk over its headers instead of four and two (a saving too small to
measure here: BENCHMARKS.md, round 13)."""

from __future__ import annotations

import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.body_limit import NO_BODY_METHODS, read_undeclared, refuse_declared
from api.content_type import JSON_BODY_METHODS, refuse_non_json
from api.load_shed import LoadShed
from api.metrics import RequestMetrics


class RequestGate:
    def __init__(
        self, app: ASGIApp, *, shed: LoadShed, metrics: RequestMetrics, max_body_bytes: int
    ) -> None:
        self.app = app
        self.shed = shed
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted = self.shed.admit(scope["path"])
        if counted is False:
            await self.shed.refusal(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        try:
            if method in NO_BODY_METHODS:
                await self.app(scope, receive, send_and_note)
                return
            refusal, receive = await self._admit_body(scope, receive, method)
            if refusal is not None:
                await refusal(scope, receive, send_and_note)
                return
            await self.app(scope, receive, send_and_note)
        finally:
            if counted:
                self.shed.leave()
            route = scope.get("route")
            self.metrics.note(
                method,
                getattr(route, "path", "unmatched"),
                status,
                time.perf_counter() - start,
            )

    async def _admit_body(
        self, scope: Scope, receive: Receive, method: str
    ) -> tuple[Response | None, Receive]:
        """The 415 or 413 refusal of this request's body, or None; and the `receive` the app
        reads the body from (a body of undeclared length is read here and replayed)."""
        content_type = declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                if declared is None:
                    declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if method in JSON_BODY_METHODS:
            refusal = refuse_non_json(content_type, declared, chunked=chunked)
            if refusal is not None:
                return refusal, receive
        if declared is not None:
            return refuse_declared(declared, self.max_body_bytes), receive
        read = await read_undeclared(receive, self.max_body_bytes)
        if isinstance(read, Response):
            return read, receive
        return None, read
