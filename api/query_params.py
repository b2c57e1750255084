"""Request parsing shared by the routes: robot ids, sensor types, time ranges, durations,
numeric fields. Raises InvalidQueryError naming the parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from api.http_errors import InvalidQueryError
from telemetry.sensors import NUMERIC_FIELDS, SENSOR_SCHEMAS, normalize_sensor_type
from telemetry.topics import is_valid_robot_id

# Each (robot, sensor type) pair is one arm of the merged scan, and planning time grows
# faster than the arm count (BENCHMARKS.md, "Measurements behind design choices"): ten
# robots keep the worst case bounded.
MAX_ROBOTS_PER_QUERY = 10

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


def parse_robot_ids(values: list[str], *, most: int = MAX_ROBOTS_PER_QUERY) -> tuple[str, ...]:
    ids = {part for value in values for part in value.split(",") if part}
    for robot_id in ids:
        if not is_valid_robot_id(robot_id):
            raise InvalidQueryError(
                "robot_id", f"not a robot id (1-64 of [A-Za-z0-9_-]): {robot_id!r}"
            )
    if len(ids) > most:
        raise InvalidQueryError("robot_id", f"at most {most} robots per query")
    return tuple(sorted(ids))


def parse_sensor_types(values: list[str]) -> tuple[str, ...]:
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


def parse_time_range(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = _aware(since, "since"), _aware(until, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidQueryError("since", "must be before until")
    return since, until


def one_sensor_type(text: str) -> str:
    types = parse_sensor_types([text])
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
