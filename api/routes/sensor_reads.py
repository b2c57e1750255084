"""GET /api/sensors: keyset pages of stored readings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth import ReadRes
from api.compat import older_paging
from api.cursor import query_scope
from api.documents import reading_doc
from api.http_errors import InvalidCursorError
from api.lean_route import LeanRoute
from api.query_params import (
    RobotIds,
    SensorTypes,
    parse_robot_ids,
    parse_sensor_types,
    parse_time_range,
)
from api.responses import JSONBytes
from api.schemas import ErrorOut, SensorPage
from db.sensor_reads import ReadingFilter, ReadingKey, read_page
from telemetry.payload import EPOCH

router = APIRouter(prefix="/api/sensors", tags=["sensors"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}


def _us(ts: datetime) -> int:
    delta = ts - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _key(position: list[Any]) -> ReadingKey:
    if (
        len(position) != 3
        or not isinstance(position[0], int)
        or not all(isinstance(p, str) for p in position[1:])
    ):
        raise InvalidCursorError("malformed")
    try:
        ts = EPOCH + timedelta(microseconds=position[0])
    except OverflowError as exc:
        raise InvalidCursorError("malformed") from exc
    return ReadingKey(ts, position[1], position[2])


@router.get("", response_model=SensorPage, responses=_ERRORS)
async def list_readings(
    res: ReadRes,
    *,
    robot_id: RobotIds = [],  # noqa: B006 - FastAPI copies defaults
    sensor_type: SensorTypes = [],  # noqa: B006
    since: datetime | None = None,
    until: datetime | None = None,
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    start_time: Annotated[datetime | None, Query(description="Older name of since")] = None,
    end_time: Annotated[datetime | None, Query(description="Older name of until")] = None,
    page: Annotated[int | None, Query(ge=1, description="Older clients': only 1")] = None,
    page_size: Annotated[int | None, Query(ge=1, le=1000, description="Older limit")] = None,
) -> Response:
    """Readings newest first (or `order=asc`), `since` inclusive, `until` exclusive.

    The older clients' names map onto these (docs/migrating.md); with any of them the page
    also carries its readings as `data`."""
    older = older_paging(
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        start_time=start_time,
        end_time=end_time,
        page=page,
        page_size=page_size,
    )
    since, until = parse_time_range(older.since, older.until)
    limit = older.limit
    reading_filter = ReadingFilter(
        robot_ids=parse_robot_ids(robot_id),
        sensor_types=parse_sensor_types(sensor_type),
        since=since,
        until=until,
        descending=order == "desc",
    )
    scope = query_scope(
        "sensors",
        reading_filter.robot_ids,
        reading_filter.sensor_types,
        since and _us(since),
        until and _us(until),
        order,
    )
    after = _key(res.cursors.decode(cursor, scope)) if cursor else None
    rows = await read_page(res.read_pool, reading_filter, after=after, limit=limit + 1)
    shown = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = shown[-1]
        next_cursor = res.cursors.encode(
            scope, [_us(last["ts"]), last["robot_id"], last["sensor_type"]]
        )
    items = [reading_doc(r) for r in shown]
    if older.older:
        return JSONBytes({"items": items, "next_cursor": next_cursor, "data": items})
    return JSONBytes({"items": items, "next_cursor": next_cursor})
