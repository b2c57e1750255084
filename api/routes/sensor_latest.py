"""GET /api/sensors/latest: the newest reading per robot and sensor type, from Redis."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.auth import ReadRes
from api.documents import latest_docs
from api.lean_route import LeanRoute
from api.query_params import RobotIds, SensorTypes, parse_robot_ids, parse_sensor_types
from api.responses import JSONBytes
from api.schemas import ErrorOut, LatestPage

router = APIRouter(prefix="/api/sensors", tags=["sensors"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}


@router.get("/latest", response_model=LatestPage, responses=_ERRORS)
async def latest(
    res: ReadRes,
    robot_id: RobotIds = [],  # noqa: B006
    sensor_type: SensorTypes = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000, description="Robots, when no robot_id")] = 100,
) -> Response:
    """The newest reading per robot and sensor type, from Redis. Without robot_id: the
    `limit` robots seen most recently."""
    robots = parse_robot_ids(robot_id)
    types = frozenset(parse_sensor_types(sensor_type)) or None
    ids = list(robots) if robots else await res.counters.recently_seen(limit)
    hashes = await res.counters.latest(ids)
    items = [
        {"robot_id": r, "sensors": latest_docs(h, types)} for r, h in zip(ids, hashes, strict=True)
    ]
    return JSONBytes({"items": items})
