"""GET /api/sensors/aggregate: time buckets or a moving average of one numeric field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from api.aggregates import bucket_points, moving_average_points
from api.auth import ReadRes
from api.http_errors import InvalidQueryError
from api.lean_route import LeanRoute
from api.query_params import numeric_path, one_sensor_type, parse_duration, parse_time_range
from api.responses import JSONBytes
from api.schemas import AggregateOut, ErrorOut, MovingAverageOut
from db.sensor_aggregates import AggregateFn
from telemetry.topics import ROBOT_ID_PATTERN

router = APIRouter(prefix="/api/sensors", tags=["sensors"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}

MAX_BUCKETS = 10_000

# Readings live in daily partitions kept for a retention period; an aggregate reads every row
# of its range, so the range is bounded too.
MAX_AGGREGATE_RANGE = timedelta(days=31)


@router.get("/aggregate", response_model=AggregateOut | MovingAverageOut, responses=_ERRORS)
async def aggregate(
    res: ReadRes,
    *,
    sensor_type: Annotated[str, Query(max_length=32)],
    field: Annotated[str, Query(max_length=64, description="e.g. accel.x, lat, level")],
    robot_id: Annotated[str | None, Query(pattern=ROBOT_ID_PATTERN)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    bucket: Annotated[str, Query(max_length=16, description="e.g. 10s, 1m, 1h")] = "1m",
    fn: AggregateFn = AggregateFn.AVG,
    window: Annotated[
        int | None, Query(ge=1, le=1000, description="Moving average over N samples instead")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Points, with window")] = 100,
) -> Response:
    """Time buckets of one numeric field (fn over each bucket; boundaries at multiples of the
    bucket size from the epoch; default the last hour), or with `window=N` a moving average
    over the newest samples."""
    stype = one_sensor_type(sensor_type)
    path = numeric_path(stype, field)
    if window is not None:
        points = await moving_average_points(
            res,
            sensor_type=stype,
            path=path,
            window=window,
            limit=limit,
            since=since,
            until=until,
            robot_id=robot_id,
        )
        return JSONBytes(
            {
                "sensor_type": stype,
                "field": field,
                "window": window,
                "points": [dict(p) for p in points],
            }
        )
    since, until = parse_time_range(since, until)
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=1)
    if since >= until:
        raise InvalidQueryError("since", "must be before until")
    seconds = parse_duration(bucket, "bucket", least=1, most=86400)
    if until - since > MAX_AGGREGATE_RANGE:
        raise InvalidQueryError("since", f"at most {MAX_AGGREGATE_RANGE.days} days before until")
    if (until - since).total_seconds() / seconds > MAX_BUCKETS:
        raise InvalidQueryError(
            "bucket", f"more than {MAX_BUCKETS} buckets: widen it or narrow since/until"
        )
    buckets = await bucket_points(
        res,
        sensor_type=stype,
        path=path,
        fn=fn,
        bucket=timedelta(seconds=seconds),
        since=since,
        until=until,
        robot_id=robot_id,
    )
    return JSONBytes(
        {
            "sensor_type": stype,
            "field": field,
            "fn": fn.value,
            "bucket_seconds": seconds,
            "since": since,
            "until": until,
            "buckets": [
                {"start": b.start, "value": b.value, "samples": b.samples} for b in buckets
            ],
        }
    )
