"""HTTP ingest bodies, turned into readings by the same decoder the bridge uses.

Two shapes are accepted:
- the contract's, with the topic's fields in the body: `{"robot_id", "sensor_type", "ts",
  "seq"?, "data"}`, or `{"robot_id", "sensor_type", "readings": [...]}`;
- the older clients' `{"robot_id", "timestamp", "sensors": [{"sensor_type", "data"}, ...]}`,
  translated onto the contract by api.compat (integer ids, naive timestamps, older names).

Only the envelope is parsed here; each sensor's part is handed as JSON bytes to
telemetry.payload.PayloadDecoder, so validation, limits and reasons are the bridge's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Annotated, Any, Union

import msgspec

from api.compat import OlderRobotId, SensorPart, sensor_parts
from api.compat import robot_id as older_robot_id
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import (
    MAX_READINGS_PER_MESSAGE,
    Decoded,
    PayloadDecoder,
    Reading,
    Rejection,
    Seq,
    Timestamp,
    check_nesting,
)
from telemetry.sensors import SENSOR_SCHEMAS, normalize_sensor_type
from telemetry.topics import ROBOT_ID_PATTERN, sensor_topic

_EMPTY = msgspec.Raw()


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    robot_id: Annotated[str, msgspec.Meta(pattern=ROBOT_ID_PATTERN)] | OlderRobotId
    sensor_type: str | None = None
    ts: msgspec.Raw = _EMPTY
    seq: msgspec.Raw = _EMPTY
    data: msgspec.Raw = _EMPTY
    readings: msgspec.Raw = _EMPTY
    timestamp: msgspec.Raw = _EMPTY
    sensors: msgspec.Raw = _EMPTY


_BODY = msgspec.json.Decoder(_Body)


@dataclass(slots=True)
class IngestBody:
    """A body's readings, and the refusals with where each sat in the body."""

    robot_id: str
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


def _join(**parts: msgspec.Raw | bytes) -> bytes:
    """A JSON object from already-encoded members, skipping absent ones."""
    members = [b'"%s":%s' % (k.encode(), bytes(v)) for k, v in parts.items() if len(v)]
    return b"{" + b",".join(members) + b"}"


def _shape_error(detail: str) -> ContractError:
    return ContractError(RejectReason.INVALID_SCHEMA, detail)


def parse_ingest_body(
    body: bytes,
    *,
    decoder: PayloadDecoder,
    received_at: datetime,
    naive_tz: tzinfo | None,
) -> IngestBody:
    """Readings and per-reading refusals; ContractError when the body as a whole is unusable.

    `naive_tz`: the zone of an older body's `timestamp` without one (None: refuse it)."""
    check_nesting(body)
    try:
        try:
            envelope = _BODY.decode(body)
        except msgspec.ValidationError as exc:
            raise _shape_error(str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise ContractError(RejectReason.INVALID_JSON, str(exc)) from exc
        out = IngestBody(older_robot_id(envelope.robot_id))
        if len(envelope.sensors):
            _older(envelope, out, decoder, received_at, naive_tz)
        else:
            _contract(envelope, out, decoder, received_at)
    except UnicodeDecodeError as exc:
        # msgspec raises this, not DecodeError, when a key or a string it decodes (here or in
        # api/compat.py) is not UTF-8: such a body is not JSON at all.
        raise ContractError(RejectReason.INVALID_JSON, f"not UTF-8: {exc}") from exc
    return out


def _contract(
    envelope: _Body, out: IngestBody, decoder: PayloadDecoder, received_at: datetime
) -> None:
    if len(envelope.timestamp):
        raise _shape_error("`timestamp` belongs to the `sensors` shape; readings use `ts`")
    if envelope.sensor_type is None:
        raise _shape_error("Object missing required field `sensor_type` (or `sensors`)")
    sensor_type = normalize_sensor_type(envelope.sensor_type)
    if sensor_type is None:
        raise ContractError(
            RejectReason.UNKNOWN_SENSOR_TYPE,
            f"unknown sensor type {envelope.sensor_type!r}; one of {sorted(SENSOR_SCHEMAS)}",
        )
    if len(envelope.readings):
        if len(envelope.ts) or len(envelope.data) or len(envelope.seq):
            raise _shape_error("send either `readings` or one reading's `ts`/`seq`/`data`")
        payload = _join(readings=envelope.readings)
    else:
        payload = _join(ts=envelope.ts, seq=envelope.seq, data=envelope.data)
    _decode(
        out,
        decoder=decoder,
        sensor_type=sensor_type,
        index=None,
        payload=payload,
        received_at=received_at,
    )


def _older(
    envelope: _Body,
    out: IngestBody,
    decoder: PayloadDecoder,
    received_at: datetime,
    naive_tz: tzinfo | None,
) -> None:
    if envelope.sensor_type is not None or any(
        len(raw) for raw in (envelope.ts, envelope.seq, envelope.data, envelope.readings)
    ):
        raise _shape_error("with `sensors`, send only `robot_id` and `timestamp`")
    for part in sensor_parts(envelope.timestamp, envelope.sensors, naive_tz=naive_tz):
        if part.sensor_type is None:
            detail = f"unknown sensor type {part.given_type!r}; one of {sorted(SENSOR_SCHEMAS)}"
            _refuse(out, part, RejectReason.UNKNOWN_SENSOR_TYPE, detail, received_at)
        elif part.refusal is not None:
            _refuse(out, part, RejectReason.INVALID_SCHEMA, part.refusal, received_at)
        else:
            _decode(
                out,
                decoder=decoder,
                sensor_type=part.sensor_type,
                index=part.index,
                payload=part.payload,
                received_at=received_at,
            )


def _refuse(
    out: IngestBody, part: SensorPart, reason: RejectReason, detail: str, received_at: datetime
) -> None:
    raw = part.payload or msgspec.json.encode(part.given_type)
    out.rejections.append(Rejection.of(received_at, "http", reason, detail, raw))
    out.refused.append(
        {
            "sensor_type": part.sensor_type or part.given_type,
            "index": part.index,
            "reason": str(reason),
            "detail": detail,
        }
    )


def _decode(
    out: IngestBody,
    *,
    decoder: PayloadDecoder,
    sensor_type: str,
    index: int | None,
    payload: bytes,
    received_at: datetime,
) -> None:
    decoded = Decoded()
    decoder.decode(
        robot_id=out.robot_id,
        sensor_type=sensor_type,
        topic=sensor_topic(out.robot_id, sensor_type),
        payload=payload,
        received_at=received_at,
        into=decoded,
    )
    out.readings.extend(decoded.readings)
    out.rejections.extend(decoded.rejections)
    out.refused.extend(
        {"sensor_type": sensor_type, "index": index, "reason": str(r.reason), "detail": r.detail}
        for r in decoded.rejections
    )


# The body's documented shapes (OpenAPI), generated from the types the decoder validates with:
# per sensor type, one reading and a batch of readings, and the older clients' shape.

_RobotId = Annotated[str, msgspec.Meta(pattern=ROBOT_ID_PATTERN)]
_SensorType = Annotated[str, msgspec.Meta(description="imu, gps, lidar, battery; any case")]
_OLDER_NAMES = "or with the older field names (docs/migrating.md)"


def _up_to_max(item: Any) -> Any:
    return Annotated[list[item], msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]


def documented_shapes() -> list[type[msgspec.Struct]]:
    """Per sensor type a one-reading and a batch body, then the older clients' body."""
    shapes: list[type[msgspec.Struct]] = []
    legacy_sensors: list[type[msgspec.Struct]] = []
    for sensor_type, data in SENSOR_SCHEMAS.items():
        name = data.__name__.removesuffix("Data")
        reading: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("ts", Timestamp),
            ("data", data),
            ("seq", Seq | None, None),
        ]
        reading_type = msgspec.defstruct(f"{name}Reading", reading, forbid_unknown_fields=True)
        topic: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            ("robot_id", _RobotId),
            ("sensor_type", _SensorType),
        ]
        shapes.append(
            msgspec.defstruct(f"{name}ReadingBody", topic + reading, forbid_unknown_fields=True)
        )
        shapes.append(
            msgspec.defstruct(
                f"{name}BatchBody",
                [*topic, ("readings", _up_to_max(reading_type))],
                forbid_unknown_fields=True,
            )
        )
        # Tagged by sensor_type, which also lets msgspec document a union of them. `data` may
        # also use the older field names (api/compat.py): documented in words, since a union
        # may hold only one object type.
        legacy_sensors.append(
            msgspec.defstruct(
                f"Older{name}",
                [("data", Annotated[data | None, msgspec.Meta(description=_OLDER_NAMES)])],
                tag_field="sensor_type",
                tag=sensor_type,
                forbid_unknown_fields=True,
            )
        )
    shapes.append(
        msgspec.defstruct(
            "OlderClientsBody",
            [
                ("robot_id", _RobotId | OlderRobotId),
                ("timestamp", Timestamp),
                ("sensors", _up_to_max(Union[tuple(legacy_sensors)])),  # noqa: UP007
            ],
            forbid_unknown_fields=True,
        )
    )
    return shapes


def ingest_body_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ingest body's JSON schema (one of its shapes) and the OpenAPI components it uses."""
    refs, components = msgspec.json.schema_components(
        documented_shapes(), ref_template="#/components/schemas/{name}"
    )
    return {"oneOf": list(refs)}, components
