"""Aggregates shared by the routes: the moving average (`/api/sensors/aggregate` and the older
clients' `/api/sensors/filtered`)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from api.query_params import parse_time_range
from api.resources import Resources
from db.sensor_aggregates import moving_average


async def moving_average_points(
    res: Resources,
    *,
    sensor_type: str,
    path: list[str],
    window: int,
    limit: int,
    since: datetime | None,
    until: datetime | None,
    robot_id: str | None,
) -> list[asyncpg.Record]:
    """The newest `limit` samples, oldest first (`ts`, `robot_id`, `value`), each with its
    moving average over `window` (`moving_avg`); also the older clients'
    /api/sensors/filtered, which answers two of those columns: records, not dicts, since
    making a dict of each of ~100 rows was ~2 % of a worker's CPU under that mix."""
    since, until = parse_time_range(since, until)
    return await moving_average(
        res.read_pool,
        sensor_type=sensor_type,
        path=path,
        window=window,
        limit=limit,
        since=since,
        until=until or datetime.now(UTC),
        robot_id=robot_id,
    )
