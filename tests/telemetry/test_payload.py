"""Decoding and validation of payloads (the contract in docs/protocol.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telemetry.errors import ContractError, RejectReason
from telemetry.payload import (
    MAX_NESTING_DEPTH,
    MAX_PAYLOAD_BYTES,
    Decoded,
    PayloadDecoder,
    TimeWindow,
    check_nesting,
    storable_text,
)
from telemetry.topics import parse_sensor_topic

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def decode(payload: bytes, sensor_type: str = "battery") -> Decoded:
    out = Decoded()
    PayloadDecoder(window=TimeWindow()).decode(
        robot_id="r1",
        sensor_type=sensor_type,
        topic="t",
        payload=payload,
        received_at=NOW,
        into=out,
    )
    return out


def reasons(out: Decoded) -> list[str]:
    return [str(r.reason) for r in out.rejections]


def test_single_reading_with_rfc3339_and_epoch_ms() -> None:
    a = decode(b'{"ts": "2026-11-27T11:59:00.5+01:00", "data": {"level": 3}}')
    b = decode(b'{"ts": %d, "seq": 7, "data": {"level": 3, "voltage": 24.5}}' % NOW_MS)
    assert a.readings[0].ts == datetime(2026, 11, 27, 10, 59, 0, 500000, tzinfo=UTC)
    assert b.readings[0].ts == NOW
    assert b.readings[0].seq == 7
    assert b.readings[0].data == '{"level":3.0,"voltage":24.5}'


def test_batch_keeps_good_readings_and_refuses_each_bad_one() -> None:
    out = decode(
        b'{"readings": [{"ts": %d, "data": {"level": 1}}, {"ts": %d, "data": {"level": 101}},'
        b' {"ts": %d, "data": {"lvl": 1}}, {"ts": %d, "data": {"level": 4}}]}'
        % (NOW_MS, NOW_MS + 1, NOW_MS + 2, NOW_MS + 3)
    )
    assert [r.data for r in out.readings] == ['{"level":1.0}', '{"level":4.0}']
    assert reasons(out) == ["out_of_range", "invalid_schema"]
    assert out.rejections[0].detail.startswith("readings[1]")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"data": {"level": 1}}', "invalid_schema"),
        (b'{"ts": "yesterday", "data": {"level": 1}}', "invalid_schema"),
        (b'{"ts": "2026-11-27T12:00:00", "data": {"level": 1}}', "invalid_schema"),
        (b'{"ts": %d, "data": {"level": -1}}' % NOW_MS, "out_of_range"),
        (b'{"ts": %d, "data": {"level": 1e999}}' % NOW_MS, "out_of_range"),
        (b'{"ts": %d, "data": {"level": 1}}' % (NOW_MS + 3_600_000), "ts_in_future"),
        (b'{"ts": "2020-01-01T00:00:00Z", "data": {"level": 1}}', "ts_too_old"),
        (b'{"ts": -5, "data": {"level": 1}}', "out_of_range"),
        (b'{"readings": []}', "invalid_schema"),
        (
            b'{"readings": [%s]}' % b",".join([b'{"ts":%d,"data":{"level":1}}' % NOW_MS] * 1001),
            "too_many_readings",
        ),
        (b'{"ts": %d, "data": {"level": 1}, "readings": []}' % NOW_MS, "invalid_schema"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
    ],
)
def test_bad_payloads_are_refused_with_their_reason(payload: bytes, reason: str) -> None:
    out = decode(payload)
    assert out.readings == []
    assert reasons(out) == [reason]
    assert len(out.rejections[0].payload) <= 4096


@pytest.mark.parametrize(
    ("sensor_type", "data", "ok"),
    [
        ("imu", '{"accel":{"x":0,"y":0,"z":9.8},"gyro":{"x":0,"y":0,"z":0}}', True),
        ("imu", '{"accel":{"x":0,"y":0,"z":9.8}}', False),
        ("gps", '{"lat":48.1,"lon":11.5,"alt":520}', True),
        ("gps", '{"lat":91,"lon":11.5}', False),
        ("lidar", '{"distance":3.2,"angle":45}', True),
        ("lidar", '{"points":360,"min_distance":0.2,"max_distance":12}', True),
        ("lidar", '{"points":360,"min_distance":5,"max_distance":1}', False),
        ("lidar", '{"distance":3.2}', False),
        ("battery", '{"level":50,"charging":true}', True),
    ],
)
def test_sensor_schemas(sensor_type: str, data: str, ok: bool) -> None:
    out = decode(b'{"ts": %d, "data": %s}' % (NOW_MS, data.encode()), sensor_type)
    assert (len(out.readings), len(out.rejections)) == ((1, 0) if ok else (0, 1))


def test_time_window_is_configurable() -> None:
    out = Decoded()
    old = NOW - timedelta(days=2)
    PayloadDecoder(window=TimeWindow(max_age=timedelta(days=1))).decode(
        robot_id="r1",
        sensor_type="battery",
        topic="t",
        payload=b'{"ts": "%s", "data": {"level": 1}}' % old.isoformat().encode(),
        received_at=NOW,
        into=out,
    )
    assert reasons(out) == ["ts_too_old"]


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("robots/r1/sensors/IMU", RejectReason.UNKNOWN_SENSOR_TYPE),
        ("robots/r1/sensors/sonar", RejectReason.UNKNOWN_SENSOR_TYPE),
        ("robots/bad id/sensors/imu", RejectReason.BAD_TOPIC),
        ("robots/" + "x" * 65 + "/sensors/imu", RejectReason.BAD_TOPIC),
        ("robots/r1/sensor/imu", RejectReason.BAD_TOPIC),
    ],
)
def test_bad_topics(topic: str, reason: RejectReason) -> None:
    with pytest.raises(ContractError) as info:
        parse_sensor_topic(topic)
    assert info.value.reason == reason


def test_good_topic() -> None:
    parsed = parse_sensor_topic("robots/AMR-7_b/sensors/lidar")
    assert (parsed.robot_id, parsed.sensor_type) == ("AMR-7_b", "lidar")


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [
        (5 * 60_000, None),
        (5 * 60_000 + 1, "ts_in_future"),
        (-7 * 86_400_000, None),
        (-7 * 86_400_000 - 1, "ts_too_old"),
    ],
)
def test_time_window_edges_to_the_millisecond(offset_ms: int, reason: str | None) -> None:
    ms = NOW_MS + offset_ms
    as_int = decode(b'{"ts": %d, "data": {"level": 1}}' % ms)
    as_text = decode(b'{"ts": "%s", "data": {"level": 1}}' % to_iso(ms).encode())
    for out in (as_int, as_text):
        assert reasons(out) == ([reason] if reason else [])
        if reason is None:
            assert out.readings[0].ts == NOW + timedelta(milliseconds=offset_ms)


def to_iso(ms: int) -> str:
    return (NOW + timedelta(milliseconds=ms - NOW_MS)).isoformat()


def _depth_ok(payload: bytes, limit: int = MAX_NESTING_DEPTH) -> bool:
    try:
        check_nesting(payload, limit)
    except ContractError as exc:
        assert exc.reason is RejectReason.NESTING_TOO_DEEP
        return False
    return True


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        (b'{"a":' * MAX_NESTING_DEPTH + b"1" + b"}" * MAX_NESTING_DEPTH, True),
        (b'{"a":' * (MAX_NESTING_DEPTH + 1) + b"1" + b"}" * (MAX_NESTING_DEPTH + 1), False),
        (b"[" * MAX_NESTING_DEPTH + b"]" * MAX_NESTING_DEPTH, True),
        (b"[" * (MAX_NESTING_DEPTH + 1) + b"]" * (MAX_NESTING_DEPTH + 1), False),
        (b"[" * 100_000, False),  # unclosed
        (b"[[" * 20 + b"]]" * 19, False),  # one left open, 39 deep
        (b"[[1]," * 10 + b"1" + b"]" * 10, True),  # many brackets, shallow
        # Brackets inside strings are not structure, escaped quotes included.
        (b'{"a":"' + b"[" * 100 + b'"}', True),
        (b'{"a":"\\"' + b"{" * 100 + b'\\""}', True),
        # Strings that would hide real depth if brackets in strings were counted.
        (b'["]",' * 20 + b"1" + b',"["]' * 20, False),
        # Truncated but shallow: left for the decoder to call invalid JSON.
        (b'{"readings":[' + b'{"ts":1,"data":{"level":1}},' * 10 + b'{"ts"', True),
    ],
)
def test_nesting_depth_is_checked_on_the_bytes(payload: bytes, ok: bool) -> None:
    assert _depth_ok(payload) is ok


def test_deep_nesting_is_refused_before_decoding() -> None:
    out = decode(b'{"readings":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert [r.reason for r in out.rejections] == [RejectReason.NESTING_TOO_DEEP]


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\\u0000b"),
        ("é\x00", "é\\u0000"),
        ("x\ud800y", "x\\ud800y"),
    ],
)
def test_storable_text_escapes_nul_and_lone_surrogates(text: str, stored: str) -> None:
    assert storable_text(text) == stored
    storable_text(text).encode()
