"""The ingest body's documented shapes (generated from msgspec structs) and its parser agree."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from api.sensor_bodies import documented_shapes, ingest_body_schema, parse_ingest_body
from telemetry.errors import ContractError
from telemetry.payload import PayloadDecoder, TimeWindow

NOW_MS = int(datetime.now(UTC).timestamp() * 1000)
BATTERY = {"level": 50.0, "voltage": 12.1}
IMU = {"accel": {"x": 0.1, "y": 0.0, "z": 9.8}, "gyro": {"x": 0.0, "y": 0.0, "z": 0.1}}

BODIES = {
    "BatteryReadingBody": {
        "robot_id": "r1",
        "sensor_type": "battery",
        "ts": NOW_MS,
        "seq": 1,
        "data": BATTERY,
    },
    "ImuBatchBody": {
        "robot_id": "r1",
        "sensor_type": "IMU",
        "readings": [{"ts": NOW_MS, "data": IMU}, {"ts": NOW_MS + 10, "seq": 2, "data": IMU}],
    },
    "OlderClientsBody": {
        "robot_id": 1,
        "timestamp": NOW_MS,
        "sensors": [
            {"sensor_type": "battery", "data": BATTERY},
            {"sensor_type": "imu", "data": IMU},
        ],
    },
}


def _shapes_accepting(body: bytes) -> list[str]:
    accepted = []
    for shape in documented_shapes():
        try:
            msgspec.json.decode(body, type=shape)
        except msgspec.ValidationError:
            continue
        accepted.append(shape.__name__)
    return accepted


@pytest.mark.parametrize("shape", list(BODIES))
def test_a_documented_body_matches_one_shape_and_is_accepted(shape: str) -> None:
    body = orjson.dumps(BODIES[shape])
    assert _shapes_accepting(body) == [shape]
    parsed = parse_ingest_body(
        body,
        decoder=PayloadDecoder(window=TimeWindow()),
        received_at=datetime.now(UTC),
        naive_tz=UTC,
    )
    assert parsed.readings and not parsed.rejections


@pytest.mark.parametrize(
    "body",
    [
        {"robot_id": "r1", "sensor_type": "battery", "ts": NOW_MS, "data": BATTERY, "extra": 1},
        {"robot_id": "r1", "sensor_type": "battery", "ts": NOW_MS, "readings": [], "data": BATTERY},
        {"robot_id": "no spaces", "sensor_type": "battery", "ts": NOW_MS, "data": BATTERY},
    ],
)
def test_a_body_no_shape_documents_is_refused(body: dict[str, object]) -> None:
    raw = orjson.dumps(body)
    assert _shapes_accepting(raw) == []
    with pytest.raises(ContractError):
        parse_ingest_body(
            raw,
            decoder=PayloadDecoder(window=TimeWindow()),
            received_at=datetime.now(UTC),
            naive_tz=UTC,
        )


def test_the_schema_refers_only_to_components_it_provides() -> None:
    schema, components = ingest_body_schema()
    refs = {ref["$ref"].rsplit("/", 1)[1] for ref in schema["oneOf"]}
    assert refs <= components.keys()
    assert {"BatteryData", "ImuData", "OlderClientsBody"} <= components.keys()
