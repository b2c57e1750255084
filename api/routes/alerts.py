"""/api/alerts: the alerts the live service raised and cleared (live/alerts.py), newest first."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth import ReadRes
from api.cursor import query_scope
from api.http_errors import InvalidCursorError
from api.lean_route import LeanRoute
from api.responses import JSONBytes
from api.schemas import AlertPage, ErrorOut
from db.alerts import AlertRow, list_alerts
from telemetry.live import AlertKind
from telemetry.topics import ROBOT_ID_PATTERN

router = APIRouter(prefix="/api/alerts", tags=["alerts"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 422, 503)
}


def _doc(row: AlertRow) -> dict[str, Any]:
    # The same document as on `fleet/alerts` (telemetry/live.py, Alert).
    return dataclasses.asdict(row)


@router.get("", response_model=AlertPage, responses=_ERRORS)
async def get_alerts(
    res: ReadRes,
    *,
    active: Annotated[
        bool | None, Query(description="true: open alerts only; false: cleared ones only")
    ] = None,
    robot_id: Annotated[str | None, Query(pattern=ROBOT_ID_PATTERN)] = None,
    kind: AlertKind | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Alerts newest first, filtered by state, robot and kind; `next_cursor` continues the
    list. Times are epoch milliseconds (`cleared_at` null while open)."""
    scope = query_scope("alerts", active, robot_id, kind)
    before: int | None = None
    if cursor:
        position = res.cursors.decode(cursor, scope)
        if len(position) != 1 or not isinstance(position[0], int):
            raise InvalidCursorError("malformed")
        before = position[0]
    rows = await list_alerts(
        res.read_pool,
        active=active,
        robot_id=robot_id,
        kind=kind.value if kind else None,
        before_id=before,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = res.cursors.encode(scope, [rows[-1].id]) if more else None
    return JSONBytes({"items": [_doc(r) for r in rows], "next_cursor": next_cursor})
