"""The one place where errors become HTTP responses: every one JSON with a reason.

Body: {"error": <machine-readable code>, "detail": <for people>, ...data of the error}.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.http_errors import (
    ForbiddenError,
    InvalidCursorError,
    InvalidQueryError,
    LiveStreamFullError,
    LiveTokenError,
    NotAuthenticatedError,
    NotConfiguredError,
    NotFoundError,
    PayloadTooLargeError,
    ReadingsRejectedError,
    StorageUnavailableError,
)
from api.responses import JSONBytes
from db.errors import DATABASE_AWAY_ERRORS
from telemetry.errors import ConflictError, ContractError, RoboSenseError

log = logging.getLogger(__name__)


# RFC 9110: a 401 names the scheme to use; X-API-Key is accepted as well (docs/api.md).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="robosense"'}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(status: int, error: str, detail: Any, **extra: Any) -> JSONBytes:
    return JSONBytes({"error": error, "detail": detail, **extra}, status_code=status)


def overloaded_response(retry_after_s: int, detail: str, *, close: bool = False) -> JSONBytes:
    """503 telling the client when to retry; `close` also ends its connection."""
    response = error_body(503, "overloaded", detail)
    response.headers["Retry-After"] = str(retry_after_s)
    if close:
        response.headers["Connection"] = "close"
    return response


def robosense_error_response(exc: RoboSenseError) -> JSONBytes:
    match exc:
        case ReadingsRejectedError():
            return error_body(
                422, "readings_rejected", str(exc), rejected=exc.rejections, accepted=0
            )
        case ContractError():
            return error_body(422, str(exc.reason), exc.detail)
        case NotFoundError():
            return error_body(404, "not_found", str(exc), kind=exc.kind, key=exc.key)
        case ConflictError():
            return error_body(409, "conflict", str(exc), kind=exc.kind, key=exc.key)
        case InvalidCursorError():
            return error_body(400, "invalid_cursor", str(exc))
        case InvalidQueryError():
            return error_body(422, "invalid_query", exc.detail, parameter=exc.parameter)
        case PayloadTooLargeError():
            return error_body(413, "payload_too_large", str(exc), limit=exc.limit)
        case NotAuthenticatedError(reason="missing"):
            return JSONBytes(
                {
                    "error": "unauthorized",
                    "detail": "an API key is required: send X-API-Key or Authorization: Bearer",
                },
                status_code=401,
                headers=_CHALLENGE,
            )
        case NotAuthenticatedError(reason="ambiguous"):
            return JSONBytes(
                {"error": "unauthorized", "detail": "X-API-Key and Bearer hold different keys"},
                status_code=401,
                headers=_CHALLENGE,
            )
        case NotAuthenticatedError():
            return JSONBytes(
                {"error": "unauthorized", "detail": "invalid or revoked API key"},
                status_code=401,
                headers=_CHALLENGE,
            )
        case LiveTokenError():
            return JSONBytes(
                {
                    "error": "unauthorized",
                    "detail": f"{exc}: get a new one from POST /api/live/token",
                },
                status_code=401,
                headers=_CHALLENGE,
            )
        case LiveStreamFullError():
            return overloaded_response(exc.retry_after_s, str(exc))
        case ForbiddenError():
            return error_body(403, "forbidden", str(exc), required_scope=exc.scope)
        case StorageUnavailableError():
            return error_body(503, "unavailable", str(exc), service=exc.service)
        case NotConfiguredError():
            return error_body(409, "not_configured", str(exc), setting=exc.setting)
    log.error("unmapped error", exc_info=exc)
    return error_body(500, "internal", "internal error")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The raw input and pydantic's context can hold anything (bytes, exceptions, a whole
    # body): send where and what, nothing the client sent back.
    return [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


async def _on_robosense(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RoboSenseError)
    return robosense_error_response(exc)


async def _on_validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_body(422, "invalid_request", _validation_errors(exc))


async def _on_http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONBytes(
        {"error": code, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _on_postgres_down(_: Request, exc: Exception) -> Response:
    log.warning("postgresql unavailable: %s", exc)
    return robosense_error_response(StorageUnavailableError("postgresql"))


async def _on_redis_down(_: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", exc)
    return robosense_error_response(StorageUnavailableError("redis"))


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_body(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RoboSenseError, _on_robosense)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    for database_away in DATABASE_AWAY_ERRORS:
        app.add_exception_handler(database_away, _on_postgres_down)
    # Not OSError, which COUNTERS_AWAY_ERRORS also lists: redis-py wraps its socket errors,
    # and any other OSError is no sign of Redis.
    for redis_away in (RedisError, RedisClusterException):
        app.add_exception_handler(redis_away, _on_redis_down)
    app.add_exception_handler(Exception, _on_unexpected)
