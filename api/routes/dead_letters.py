"""/api/dead-letters: what the pipeline refused and why, newest first."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth import ReadRes
from api.cursor import query_scope
from api.http_errors import InvalidCursorError
from api.lean_route import LeanRoute
from api.query_params import parse_time_range
from api.responses import JSONBytes
from api.schemas import DeadLetterPage, ErrorOut, PayloadEncoding
from db.dead_letters import DeadLetterFilter, DeadLetterKey, list_dead_letters
from telemetry.errors import RejectReason
from telemetry.payload import EPOCH
from telemetry.topics import ROBOT_ID_PATTERN

router = APIRouter(prefix="/api/dead-letters", tags=["dead letters"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 422, 503)
}


def _us(ts: datetime) -> int:
    delta = ts - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _key(position: list[Any]) -> DeadLetterKey:
    if len(position) != 2 or not all(type(p) is int for p in position):
        raise InvalidCursorError("malformed")
    try:
        return DeadLetterKey(EPOCH + timedelta(microseconds=position[0]), position[1])
    except OverflowError as exc:
        raise InvalidCursorError("malformed") from exc


def _payload(raw: bytes) -> tuple[str, PayloadEncoding]:
    """The payload as text when it is UTF-8 (JSON escapes whatever it holds), else base64:
    a client never has to guess which bytes it got."""
    try:
        return raw.decode(), PayloadEncoding.UTF8
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), PayloadEncoding.BASE64


def _doc(row: asyncpg.Record) -> dict[str, Any]:
    topic: str = row["topic"]
    prefix, _, rest = topic.partition("/")
    robot = rest.partition("/")[0] if prefix == "robots" and rest else None
    raw: bytes = row["payload"]
    payload, encoding = _payload(raw)
    return {
        "id": row["id"],
        "received_at": row["received_at"],
        "topic": topic,
        "robot_id": robot or None,
        "reason": row["reason"],
        "detail": row["detail"],
        "payload": payload,
        "payload_encoding": encoding,
        "payload_size": row["payload_size"],
        "payload_truncated": row["payload_size"] > len(raw),
    }


@router.get("", response_model=DeadLetterPage, responses=_ERRORS)
async def get_dead_letters(
    res: ReadRes,
    *,
    robot_id: Annotated[str | None, Query(pattern=ROBOT_ID_PATTERN)] = None,
    reason: RejectReason | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Refused messages and readings, newest first (by when they were received), filtered by
    robot, reason and time (`since` inclusive, `until` exclusive); `next_cursor` continues."""
    since, until = parse_time_range(since, until)
    where = DeadLetterFilter(
        robot_id=robot_id,
        reason=reason.value if reason else None,
        since=since,
        until=until,
    )
    scope = query_scope(
        "dead-letters", robot_id, where.reason, since and _us(since), until and _us(until)
    )
    after = _key(res.cursors.decode(cursor, scope)) if cursor else None
    rows = await list_dead_letters(res.read_pool, where, after=after, limit=limit + 1)
    shown = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = shown[-1]
        next_cursor = res.cursors.encode(scope, [_us(last["received_at"]), last["id"]])
    return JSONBytes({"items": [_doc(r) for r in shown], "next_cursor": next_cursor})
