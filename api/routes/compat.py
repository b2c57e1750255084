"""Routes only the older FastAPI service had, served by our own code (docs/migrating.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.routing import APIRoute
from starlette.responses import Response

from api.aggregates import moving_average_of_robot
from api.auth import ReadRes
from api.compat import contract_field
from api.lean_route import LeanRoute
from api.query_params import numeric_path, one_sensor_type
from api.readiness import readiness
from api.responses import JSONBytes
from api.schemas import ErrorOut, FilteredOut, Readiness
from telemetry.topics import ROBOT_ID_PATTERN

router = APIRouter(tags=["older clients"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 422, 503)
}


@router.get("/api/sensors/filtered", response_model=FilteredOut, responses=_ERRORS)
async def filtered(
    res: ReadRes,
    *,
    robot_id: Annotated[str, Query(pattern=ROBOT_ID_PATTERN)],
    sensor_type: Annotated[str, Query(max_length=32)],
    field: Annotated[
        str, Query(max_length=64, description="e.g. acceleration.x, gyroscope.z, latitude")
    ],
    window_size: Annotated[int, Query(ge=1, le=1000)] = 5,
    limit: Annotated[int, Query(ge=1, le=1000, description="Newest samples")] = 100,
) -> Response:
    """The robot's newest samples of one field, oldest first, and their moving average over
    `window_size` samples: `GET /api/sensors/aggregate?window=` in the older names."""
    stype = one_sensor_type(sensor_type)
    series = await moving_average_of_robot(
        res,
        sensor_type=stype,
        path=numeric_path(stype, contract_field(stype, field)),
        window=window_size,
        limit=limit,
        robot_id=robot_id,
    )
    return JSONBytes(
        {
            "robot_id": robot_id,
            "sensor_type": sensor_type,
            "field": field,
            "original_data": series.samples,
            "filtered_data": series.means,
            "window_size": window_size,
        }
    )


router.add_api_route(
    "/health_check",
    readiness,
    name="readyz",  # keeps its operationId
    methods=["GET"],
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="The older service's health route: /readyz",
    tags=["health"],
    # Unguarded, so FastAPI solves its one dependency (the resources) as usual.
    route_class_override=APIRoute,
)
