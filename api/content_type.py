"""Refuses request bodies that do not say they are JSON, before any route reads them.

A web page can make its visitor's browser POST `text/plain`, form and multipart bodies (and
untyped Blobs) to any host without a CORS preflight; requiring `application/json` (which
needs a preflight, which this API never grants) keeps such pages from sending readings.
The app's request gate (api/request_gate.py) applies it to POST, PUT and PATCH requests."""

from __future__ import annotations

from starlette.responses import Response

from api.errors import error_body

JSON_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


def is_json_media_type(value: str) -> bool:
    """`application/json` or `application/<anything>+json`, with any parameters."""
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def refuse_non_json(
    content_type: bytes | None, content_length: bytes | None, *, chunked: bool
) -> Response | None:
    """415 for a body whose Content-Type is missing or not JSON; None to go on. A request
    without a body (no Content-Length, or 0, and not chunked) goes on to its route."""
    has_body = chunked or (content_length is not None and content_length.strip() not in (b"0", b""))
    if not has_body:
        return None
    shown = None if content_type is None else content_type.decode("latin-1")
    if shown is not None and is_json_media_type(shown):
        return None
    return error_body(
        415,
        "unsupported_media_type",
        f"the body must be application/json, not {shown or 'untyped'}",
    )
