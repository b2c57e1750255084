"""The older FastAPI service's dialect, mapped onto our contract in one place.

Teams moving from that service keep their clients unchanged (docs/migrating.md). What differs:
integer robot ids, ISO timestamps without a zone, the older data field names (`acceleration`,
`gyroscope`, `latitude`, `longitude`, `altitude`), and query names (`start_time`, `end_time`,
`page`, `page_size`, `window_size`). Everything here only renames: the translated reading goes
through telemetry.payload.PayloadDecoder like any other, so schemas, ranges, time limits and
refusal reasons are the contract's own, and stored rows have the contract's field names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Annotated

import msgspec

from api.http_errors import InvalidQueryError
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import MAX_READINGS_PER_MESSAGE
from telemetry.sensors import normalize_sensor_type

# Older name -> contract name, per sensor type, for the top-level members of `data`. The
# filtered endpoint's field paths use the same table (`acceleration.x` -> `accel.x`).
OLDER_FIELD_NAMES: dict[str, dict[str, str]] = {
    "imu": {"acceleration": "accel", "gyroscope": "gyro"},
    "gps": {"latitude": "lat", "longitude": "lon", "altitude": "alt"},
    "lidar": {},
    "battery": {},
}

# The older service numbered its robots; ours are strings, and `1` is robot "1".
OlderRobotId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

_ABSENT = msgspec.Raw()


class OlderSensor(msgspec.Struct, forbid_unknown_fields=True):
    sensor_type: str
    data: msgspec.Raw = _ABSENT


_SENSORS = msgspec.json.Decoder(
    Annotated[list[OlderSensor], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]
)
# A naive datetime is kept naive here; the zone is the deployment's choice (settings).
_TIMESTAMP = msgspec.json.Decoder(int | datetime)
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ENCODE = msgspec.json.encode


def robot_id(value: str | int) -> str:
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class SensorPart:
    """One entry of `sensors`: its place, the name the client gave, the contract's sensor type
    (None: unknown), and the reading as contract JSON (`{"ts", "data"}`) or why it is refused."""

    index: int
    given_type: str
    sensor_type: str | None
    payload: bytes
    refusal: str | None = None


def _shape_error(detail: str) -> ContractError:
    return ContractError(RejectReason.INVALID_SCHEMA, detail)


def contract_timestamp(raw: msgspec.Raw, naive_tz: tzinfo | None) -> bytes:
    """The body's `timestamp` as the contract's `ts` (epoch ms, or RFC 3339 with a zone)."""
    try:
        ts = _TIMESTAMP.decode(raw)
    except msgspec.ValidationError as exc:
        raise _shape_error(f"timestamp: {exc}") from exc
    if isinstance(ts, datetime) and ts.tzinfo is None:
        if naive_tz is None:
            raise _shape_error("timestamp needs a time zone (`Z` or an offset) on this server")
        ts = ts.replace(tzinfo=naive_tz)
    return _ENCODE(ts)


def _contract_data(sensor_type: str, raw: msgspec.Raw) -> tuple[bytes, str | None]:
    """`data` with the older top-level names renamed; anything not an object passes unchanged
    so that the contract's decoder refuses it with its own reason (e.g. `null`)."""
    renames = OLDER_FIELD_NAMES[sensor_type]
    if not renames:
        return bytes(raw), None
    try:
        members = _MEMBERS.decode(raw)
    except msgspec.ValidationError:
        return bytes(raw), None
    out: dict[str, msgspec.Raw] = {}
    for name, value in members.items():
        canonical = renames.get(name, name)
        if canonical in out:
            return bytes(raw), f"`{canonical}` given twice (once as an older name)"
        out[canonical] = value
    return _ENCODE(out), None


def sensor_parts(
    timestamp: msgspec.Raw, sensors: msgspec.Raw, *, naive_tz: tzinfo | None
) -> Iterator[SensorPart]:
    """The older body's `sensors`, each as a contract reading stamped with the body's time."""
    if not len(timestamp):
        raise _shape_error("Object missing required field `timestamp`")
    try:
        parts = _SENSORS.decode(sensors)
    except msgspec.ValidationError as exc:
        raise _shape_error(f"sensors: {exc}") from exc
    ts = contract_timestamp(timestamp, naive_tz)
    for index, part in enumerate(parts):
        sensor_type = normalize_sensor_type(part.sensor_type)
        if sensor_type is None:
            yield SensorPart(index, part.sensor_type, None, b"")
            continue
        if not len(part.data):
            yield SensorPart(index, part.sensor_type, sensor_type, b"", "`data` is missing")
            continue
        data, refusal = _contract_data(sensor_type, part.data)
        yield SensorPart(
            index, part.sensor_type, sensor_type, b'{"ts":%s,"data":%s}' % (ts, data), refusal
        )


def contract_field(sensor_type: str, path: str) -> str:
    """A field path in older names (`acceleration.x`, `latitude`) in the contract's names;
    a path already in the contract's names is returned unchanged."""
    head, dot, rest = path.partition(".")
    return OLDER_FIELD_NAMES[sensor_type].get(head, head) + dot + rest


@dataclass(frozen=True, slots=True)
class OlderPaging:
    """GET /api/sensors with the older query names mapped onto ours."""

    since: datetime | None
    until: datetime | None
    limit: int
    older: bool  # the request used an older name: answer with the older `data` list too


def older_paging(
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    start_time: datetime | None,
    end_time: datetime | None,
    page: int | None,
    page_size: int | None,
) -> OlderPaging:
    """Pages are keyset cursors here: page 1 is the first page, and a later page number is
    refused, naming the cursor to pass instead (counting rows to skip would slow with depth)."""
    if since is not None and start_time is not None:
        raise InvalidQueryError("start_time", "give `since` or `start_time`, not both")
    if until is not None and end_time is not None:
        raise InvalidQueryError("end_time", "give `until` or `end_time`, not both")
    if page is not None and page > 1:
        raise InvalidQueryError(
            "page",
            "page numbers are not served: pass `cursor` = `next_cursor` of the previous page "
            "(keyset pagination; page 1 is the request without a cursor)",
        )
    if page is not None and cursor is not None:
        raise InvalidQueryError("page", "give `cursor` or `page`, not both")
    return OlderPaging(
        since=since if start_time is None else start_time,
        until=until if end_time is None else end_time,
        limit=limit if page_size is None else page_size,
        older=any(v is not None for v in (start_time, end_time, page, page_size)),
    )


def older_ingest_fields(robot_id: str, committed: int) -> dict[str, object]:
    """What the older service answered to an ingest, beside our own fields."""
    return {"status": "success", "inserted_count": committed, "robot_id": robot_id}
