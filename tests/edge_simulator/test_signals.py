"""Signals stay within the contract over hours, and the config refuses what the bridge would."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import orjson
import pytest

from edge_simulator.config import SimulationConfig
from edge_simulator.faults import MALFORMED_REASONS, FaultConfig, build_malformed
from edge_simulator.signals import make_signal
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import Decoded, PayloadDecoder, TimeWindow
from telemetry.sensors import SENSOR_TYPES
from telemetry.topics import parse_sensor_topic

NOW_MS = int(time.time() * 1000)


@pytest.mark.parametrize("sensor_type", sorted(SENSOR_TYPES))
def test_hours_of_readings_are_valid(sensor_type: str) -> None:
    signal = make_signal(sensor_type, seed=1, robot_id="sim-0001")
    # Four hours at 1 Hz: long enough for a battery to drain and recharge.
    readings = [signal.reading(i, NOW_MS - 4 * 3600_000 + i * 1000, float(i)) for i in range(14400)]
    out = Decoded()
    for start in range(0, len(readings), 1000):
        payload = ('{"readings":[' + ",".join(readings[start : start + 1000]) + "]}").encode()
        PayloadDecoder(window=TimeWindow()).decode(
            robot_id="sim-0001",
            sensor_type=sensor_type,
            topic=f"robots/sim-0001/sensors/{sensor_type}",
            payload=payload,
            received_at=datetime.now(UTC),
            into=out,
        )
    assert out.rejections == []
    assert len(out.readings) == 14400
    if sensor_type == "battery":
        charging = [orjson.loads(r.data)["charging"] for r in out.readings]
        assert True in charging and False in charging
    if sensor_type == "gps":
        first, last = orjson.loads(out.readings[0].data), orjson.loads(out.readings[-1].data)
        assert (first["lat"], first["lon"]) != (last["lat"], last["lon"])


def test_same_seed_same_signal_other_seed_another() -> None:
    def sample(seed: int) -> list[str]:
        s = make_signal("imu", seed=seed, robot_id="r")
        return [s.reading(i, i, i / 100) for i in range(50)]

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


@pytest.mark.parametrize("reason", MALFORMED_REASONS)
def test_each_malformed_message_is_refused_for_its_reason(reason: RejectReason) -> None:
    for sensor_type in sorted(SENSOR_TYPES):
        bad = build_malformed(
            reason,
            robot_id="sim-0001",
            sensor_type=sensor_type,
            ts_ms=NOW_MS,
            rng=random.Random(0),
        )
        try:
            topic = parse_sensor_topic(bad.topic)
        except ContractError as exc:
            assert exc.reason == reason
            continue
        out = Decoded()
        PayloadDecoder(window=TimeWindow()).decode(
            robot_id=topic.robot_id,
            sensor_type=topic.sensor_type,
            topic=bad.topic,
            payload=bad.payload,
            received_at=datetime.now(UTC),
            into=out,
        )
        if reason == "unknown_robot":  # the payload is fine; the registry refuses it
            assert out.rejections == [] and topic.robot_id.startswith("ghost-")
        else:
            assert [r.reason for r in out.rejections] == [reason], sensor_type


@pytest.mark.parametrize(
    ("offset_ms", "flat_out", "message"),
    [
        (10 * 60_000, False, "ahead of now"),
        (-60_000, True, None),
        (0, True, "ahead of now"),  # flat out, the whole hour would be published at once
        (-8 * 86_400_000, False, "days old"),
    ],
)
def test_start_times_the_bridge_would_refuse_are_refused(
    offset_ms: int, flat_out: bool, message: str | None
) -> None:
    cfg = SimulationConfig(
        robots=1,
        duration_s=3600.0 if flat_out and offset_ms == 0 else 30.0,
        start_ts_ms=NOW_MS + offset_ms,
        flat_out=flat_out,
        faults=FaultConfig(skew=0.5, skew_max_s=30.0),
    )
    if message is None:
        cfg.check_time_window(now_ms=NOW_MS)
    else:
        with pytest.raises(ValueError, match=message):
            cfg.check_time_window(now_ms=NOW_MS)
