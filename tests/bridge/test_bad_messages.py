"""Bad messages are dead-lettered with their reason and never harm the good ones around them."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson
import pytest

from harness.bridge import BridgeProcess
from harness.publisher import Publisher
from harness.waiting import eventually

# Each test runs the bridge as a process: `-m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def good(robot: str, ts: int, level: float = 50.0) -> tuple[str, bytes]:
    return f"robots/{robot}/sensors/battery", orjson.dumps({"ts": ts, "data": {"level": level}})


async def test_malformed_messages_between_good_ones(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    now = int(time.time() * 1000)
    imu = {"accel": {"x": 0, "y": 0, "z": 9.8}, "gyro": {"x": 0, "y": 0, "z": 0}}
    bad: list[tuple[str, bytes, str]] = [
        (
            "robots/bad robot!/sensors/battery",
            orjson.dumps({"ts": now, "data": {"level": 1}}),
            "bad_topic",
        ),
        ("robots/r1/sensors/IMU", orjson.dumps({"ts": now, "data": imu}), "unknown_sensor_type"),
        ("robots/r1/sensors/sonar", b'{"ts": 1, "data": {}}', "unknown_sensor_type"),
        ("robots/r1/sensors/battery", b"\x00\xff not json", "invalid_json"),
        (
            "robots/r1/sensors/battery",
            b'{"ts": %d, "data": {"voltage": 3}}' % now,
            "invalid_schema",
        ),
        ("robots/r1/sensors/battery", b'{"ts": %d, "data": {"level": 250}}' % now, "out_of_range"),
        (
            "robots/r1/sensors/gps",
            b'{"ts": %d, "data": {"lat": 95, "lon": 0}}' % now,
            "out_of_range",
        ),
        (
            "robots/r1/sensors/battery",
            b'{"ts": %d, "data": {"level": 5}}' % (now + 3_600_000),
            "ts_in_future",
        ),
        (
            "robots/r1/sensors/battery",
            b'{"ts": "2001-01-01T00:00:00Z", "data": {"level": 5}}',
            "ts_too_old",
        ),
        ("robots/r1/sensors/battery", b"x" * (300 * 1024), "payload_too_large"),
        (
            "robots/ghost/sensors/battery",
            orjson.dumps({"ts": now, "data": {"level": 1}}),
            "unknown_robot",
        ),
    ]
    messages: list[tuple[str, bytes]] = []
    for i, (topic, payload, _) in enumerate(bad):
        messages.append(good("r1", now - 1000 + i))
        messages.append((topic, payload))
    # A batch with one bad reading in the middle: its good readings still land.
    messages.append(
        (
            "robots/r2/sensors/battery",
            orjson.dumps(
                {
                    "readings": [
                        {"ts": now - 5, "data": {"level": 1}},
                        {"ts": now - 4, "data": {"level": -3}},
                        {"ts": now - 3, "data": {"level": 2}},
                    ]
                }
            ),
        )
    )
    publisher.publish_all(messages)

    expected_good = len(bad) + 2

    async def rows() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    async def reasons() -> list[str]:
        rows = await registered.fetch("SELECT reason FROM dead_letters ORDER BY reason")
        return [r["reason"] for r in rows]

    expected_reasons = sorted([reason for _, _, reason in bad] + ["out_of_range"])
    assert await eventually(rows, expected_good) == expected_good
    assert await eventually(reasons, expected_reasons) == expected_reasons

    oversize = await registered.fetchrow(
        "SELECT length(payload) AS kept, payload_size FROM dead_letters "
        "WHERE reason = 'payload_too_large'"
    )
    assert oversize is not None
    assert (oversize["kept"], oversize["payload_size"]) == (4096, 300 * 1024)
    detail = await registered.fetchval(
        "SELECT detail FROM dead_letters WHERE topic = 'robots/r2/sensors/battery'"
    )
    assert detail.startswith("readings[1]")
    assert bridge.running
    assert bridge.metric('bridge_rejected_total{reason="out_of_range"}') == 3.0
