"""/api/sensors: HTTP ingest, keyset pages of readings, latest readings, aggregates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api.auth import IngestRes, ReadRes
from api.compat import older_ingest_fields, older_paging
from api.cursor import query_scope
from api.http_errors import InvalidCursorError, InvalidQueryError, ReadingsRejectedError
from api.resources import Resources
from api.responses import JSONBytes
from api.routes.robots import latest_docs
from api.schemas import (
    AggregateOut,
    ErrorOut,
    IngestResult,
    LatestPage,
    MovingAverageOut,
    SensorPage,
)
from api.sensor_bodies import parse_ingest_body
from db.sensor_aggregates import AggregateFn, bucket_aggregate, moving_average
from db.sensor_reads import ReadingFilter, ReadingKey, read_page
from telemetry.errors import ContractError, UnknownRobotError
from telemetry.payload import DEAD_LETTER_PAYLOAD_CAP, EPOCH, MAX_READINGS_PER_MESSAGE, Rejection
from telemetry.sensors import NUMERIC_FIELDS, SENSOR_SCHEMAS, normalize_sensor_type
from telemetry.topics import ROBOT_ID_PATTERN, is_valid_robot_id

router = APIRouter(prefix="/api/sensors", tags=["sensors"])

# Each (robot, sensor type) pair is one arm of the merged scan, and planning time grows
# faster than the arm count (about 40 ms for 40 arms on 12 daily partitions): ten robots
# keep the worst case bounded.
MAX_ROBOTS_PER_QUERY = 10
MAX_BUCKETS = 10_000
# Readings live in daily partitions kept for a retention period; an aggregate reads every row
# of its range, so the range is bounded too.
MAX_AGGREGATE_RANGE = timedelta(days=31)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

RobotIds = Annotated[
    list[Annotated[str, Query(max_length=64 * MAX_ROBOTS_PER_QUERY + MAX_ROBOTS_PER_QUERY)]],
    Query(description="One or several (repeat it, or separate ids with commas)."),
]
SensorTypes = Annotated[
    list[Annotated[str, Query(max_length=32)]],
    Query(description="imu, gps, lidar, battery (any case); one or several."),
]


def parse_duration(text: str, parameter: str, *, least: int, most: int) -> int:
    """Seconds of `30s`, `5m`, `1h`, `1d`, within [least, most]."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidQueryError(parameter, "a number and a unit among s, m, h, d (e.g. 5m)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if not least <= seconds <= most:
        raise InvalidQueryError(parameter, f"must be between {least}s and {most}s")
    return seconds


def _robot_ids(values: list[str]) -> tuple[str, ...]:
    ids = {part for value in values for part in value.split(",") if part}
    for robot_id in ids:
        if not is_valid_robot_id(robot_id):
            raise InvalidQueryError(
                "robot_id", f"not a robot id (1-64 of [A-Za-z0-9_-]): {robot_id!r}"
            )
    if len(ids) > MAX_ROBOTS_PER_QUERY:
        raise InvalidQueryError("robot_id", f"at most {MAX_ROBOTS_PER_QUERY} robots per query")
    return tuple(sorted(ids))


def _sensor_types(values: list[str]) -> tuple[str, ...]:
    types = set()
    for value in values:
        for part in value.split(","):
            name = normalize_sensor_type(part)
            if name is None:
                raise InvalidQueryError(
                    "sensor_type", f"unknown sensor type {part!r}; one of {sorted(SENSOR_SCHEMAS)}"
                )
            types.add(name)
    return tuple(sorted(types))


_FIRST = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(9000, 1, 1, tzinfo=UTC)


def _aware(value: datetime | None, parameter: str) -> datetime | None:
    if value is None:
        return None
    # A time without a zone is taken as UTC rather than as the server's local time.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidQueryError(parameter, "out of range") from exc
    if not _FIRST <= value < _LAST:
        raise InvalidQueryError(parameter, f"must be within [{_FIRST:%Y}, {_LAST:%Y})")
    return value


def _window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = _aware(since, "since"), _aware(until, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidQueryError("since", "must be before until")
    return since, until


def _reading_doc(row: Any) -> dict[str, Any]:
    return {
        "robot_id": row["robot_id"],
        "sensor_type": row["sensor_type"],
        "ts": row["ts"],
        "received_at": row["received_at"],
        "seq": row["seq"],
        "data": orjson.Fragment(row["data"]),
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


def _ingest_schema() -> dict[str, Any]:
    """The request body's JSON schema, with each sensor type's data schema from its Struct."""
    data = {
        "oneOf": [{"$ref": f"#/components/schemas/{t.__name__}"} for t in SENSOR_SCHEMAS.values()]
    }
    ts = {
        "oneOf": [
            {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
            {"type": "string", "format": "date-time"},
        ]
    }
    robot_id = {"type": "string", "pattern": ROBOT_ID_PATTERN}
    sensor_type = {"type": "string", "description": "imu, gps, lidar, battery; any case"}
    reading_properties = {"ts": ts, "seq": {"type": "integer", "minimum": 0}, "data": data}
    reading = {
        "type": "object",
        "properties": reading_properties,
        "required": ["ts", "data"],
        "additionalProperties": False,
    }
    return {
        "oneOf": [
            {
                "title": "One reading",
                "type": "object",
                "properties": {
                    "robot_id": robot_id,
                    "sensor_type": sensor_type,
                    **reading_properties,
                },
                "required": ["robot_id", "sensor_type", "ts", "data"],
                "additionalProperties": False,
            },
            {
                "title": "A batch of readings",
                "type": "object",
                "properties": {
                    "robot_id": robot_id,
                    "sensor_type": sensor_type,
                    "readings": {
                        "type": "array",
                        "items": reading,
                        "minItems": 1,
                        "maxItems": MAX_READINGS_PER_MESSAGE,
                    },
                },
                "required": ["robot_id", "sensor_type", "readings"],
                "additionalProperties": False,
            },
            {
                "title": "Older clients' shape",
                "description": "docs/migrating.md: integer robot ids, `timestamp` without a "
                "zone (NAIVE_TIMESTAMP_TZ), older data field names.",
                "type": "object",
                "properties": {
                    "robot_id": {"anyOf": [robot_id, {"type": "integer", "minimum": 0}]},
                    "timestamp": ts,
                    "sensors": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_READINGS_PER_MESSAGE,
                        "items": {
                            "type": "object",
                            "properties": {
                                "sensor_type": sensor_type,
                                "data": {
                                    "anyOf": [
                                        *data["oneOf"],
                                        {"type": "object", "title": "older field names"},
                                        {"type": "null"},
                                    ]
                                },
                            },
                            "required": ["sensor_type", "data"],
                            "additionalProperties": False,
                        },
                    },
                },
                "required": ["robot_id", "timestamp", "sensors"],
                "additionalProperties": False,
            },
        ]
    }


def sensor_data_components() -> dict[str, Any]:
    """OpenAPI components for the sensor data schemas the ingest body refers to."""
    _, components = msgspec.json.schema_components(
        list(SENSOR_SCHEMAS.values()), ref_template="#/components/schemas/{name}"
    )
    return components


@router.post(
    "",
    status_code=201,
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ingest_schema()}},
        }
    },
)
async def ingest(request: Request, res: IngestRes) -> Response:
    """Stores readings, answering once they are committed (shared with concurrent requests).

    A refused reading (e.g. `data: null`) is listed in `rejected` without refusing its
    siblings; 422 when none is left. Readings already stored count as accepted (idempotent).
    """
    body = await request.body()
    received_at = datetime.now(UTC)
    try:
        parsed = parse_ingest_body(
            body,
            decoder=res.decoder,
            received_at=received_at,
            naive_tz=res.settings.naive_tz,
        )
    except ContractError as exc:
        res.committer.count_rejections(
            [
                Rejection(
                    received_at,
                    "http",
                    exc.reason,
                    exc.detail,
                    body[:DEAD_LETTER_PAYLOAD_CAP],
                    len(body),
                )
            ]
        )
        raise
    if not parsed.readings:
        res.committer.count_rejections(parsed.rejections)
        raise ReadingsRejectedError(parsed.refused)
    unknown = await res.committer.commit(parsed.readings, parsed.rejections)
    if parsed.robot_id in unknown:
        raise UnknownRobotError(parsed.robot_id)
    return JSONBytes(
        {
            "accepted": len(parsed.readings),
            "rejected": parsed.refused,
            **older_ingest_fields(parsed.robot_id, len(parsed.readings)),
        },
        status_code=201,
    )


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
    since, until = _window(older.since, older.until)
    limit = older.limit
    filt = ReadingFilter(
        robot_ids=_robot_ids(robot_id),
        sensor_types=_sensor_types(sensor_type),
        since=since,
        until=until,
        descending=order == "desc",
    )
    scope = query_scope(
        "sensors",
        filt.robot_ids,
        filt.sensor_types,
        since and _us(since),
        until and _us(until),
        order,
    )
    after = _key(res.cursors.decode(cursor, scope)) if cursor else None
    rows = await read_page(res.read_pool, filt, after=after, limit=limit + 1)
    shown = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = shown[-1]
        next_cursor = res.cursors.encode(
            scope, [_us(last["ts"]), last["robot_id"], last["sensor_type"]]
        )
    items = [_reading_doc(r) for r in shown]
    if older.older:
        return JSONBytes({"items": items, "next_cursor": next_cursor, "data": items})
    return JSONBytes({"items": items, "next_cursor": next_cursor})


@router.get("/latest", response_model=LatestPage, responses=_ERRORS)
async def latest(
    res: ReadRes,
    robot_id: RobotIds = [],  # noqa: B006
    sensor_type: SensorTypes = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000, description="Robots, when no robot_id")] = 100,
) -> Response:
    """The newest reading per robot and sensor type, from Redis. Without robot_id: the
    `limit` robots seen most recently."""
    robots = _robot_ids(robot_id)
    types = frozenset(_sensor_types(sensor_type)) or None
    ids = list(robots) if robots else await res.reads.recently_seen(limit)
    hashes = await res.reads.latest_raw(ids)
    items = [
        {"robot_id": r, "sensors": latest_docs(h, types)} for r, h in zip(ids, hashes, strict=True)
    ]
    return JSONBytes({"items": items})


def one_sensor_type(text: str) -> str:
    types = _sensor_types([text])
    if len(types) != 1:
        raise InvalidQueryError("sensor_type", "exactly one sensor type")
    return types[0]


def numeric_path(sensor_type: str, field: str) -> list[str]:
    """The field's path, checked against the sensor type's schema."""
    if field not in NUMERIC_FIELDS[sensor_type]:
        raise InvalidQueryError(
            "field",
            f"{sensor_type} has no numeric field {field!r}; "
            f"one of {sorted(NUMERIC_FIELDS[sensor_type])}",
        )
    return field.split(".")


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
) -> list[dict[str, Any]]:
    """The newest `limit` samples, oldest first, each with its moving average over `window`
    (also the older clients' /api/sensors/filtered)."""
    since, until = _window(since, until)
    rows = await moving_average(
        res.read_pool,
        sensor_type=sensor_type,
        path=path,
        window=window,
        limit=limit,
        since=since,
        until=until or datetime.now(UTC),
        robot_id=robot_id,
    )
    return [dict(r) for r in rows]


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
        return JSONBytes({"sensor_type": stype, "field": field, "window": window, "points": points})
    since, until = _window(since, until)
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
    rows = await bucket_aggregate(
        res.read_pool,
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
                {"start": r["bucket"], "value": r["value"], "samples": r["samples"]} for r in rows
            ],
        }
    )
