"""Refuses request bodies that do not say they are JSON, before any route reads them.

A web page can make its visitor's browser POST `text/plain`, form and multipart bodies (and
untyped Blobs) to any host without a CORS preflight; requiring `application/json` (which
needs a preflight, which this API never grants) keeps such pages from sending readings."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_body

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


def is_json_media_type(value: str) -> bool:
    """`application/json` or `application/<anything>+json`, with any parameters."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequireJsonMiddleware:
    """415 for a request with a body whose Content-Type is missing or not JSON. A request
    without a body (no Content-Length, or 0, and not chunked) goes on to its route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        content_type = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                has_body = value.strip() not in (b"0", b"")
            elif name == b"transfer-encoding":
                has_body = True
        if has_body and (content_type is None or not is_json_media_type(content_type)):
            response = error_body(
                415,
                "unsupported_media_type",
                f"the body must be application/json, not {content_type or 'untyped'}",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
