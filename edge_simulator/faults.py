"""Fault modes: what goes wrong, how often, and the malformed messages of each refusal reason.

Every malformed message is built to be refused for exactly one reason of the protocol's
refusal table, so a test can compare the dead letters with the summary reason by reason.
Timestamps pushed out of the window move by 30 days: far beyond the bridge's limits (5 minutes
ahead, 7 days behind) from any start time the simulator accepts, so the verdict does not
depend on when the bridge happens to receive the message.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from telemetry.errors import RejectReason
from telemetry.payload import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_MESSAGE
from telemetry.topics import sensor_topic

OUT_OF_WINDOW_MS = 30 * 24 * 3600 * 1000

# The reasons a publisher can provoke. `rejected_by_database` needs a reading that passes
# validation and still breaks PostgreSQL, which the contract is designed to make impossible.
MALFORMED_REASONS: tuple[RejectReason, ...] = (
    RejectReason.BAD_TOPIC,
    RejectReason.UNKNOWN_SENSOR_TYPE,
    RejectReason.PAYLOAD_TOO_LARGE,
    RejectReason.INVALID_JSON,
    RejectReason.INVALID_SCHEMA,
    RejectReason.OUT_OF_RANGE,
    RejectReason.TOO_MANY_READINGS,
    RejectReason.TS_IN_FUTURE,
    RejectReason.TS_TOO_OLD,
    RejectReason.UNKNOWN_ROBOT,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultConfig:
    """Ratios are probabilities per message (per robot for skew, per connection for drops)."""

    duplicate: float = 0.0
    out_of_order: float = 0.0
    late: float = 0.0
    late_max_s: float = 30.0
    malformed: float = 0.0
    malformed_reasons: tuple[RejectReason, ...] = MALFORMED_REASONS
    skew: float = 0.0
    skew_max_s: float = 30.0
    skew_out: float = 0.0
    drop: float = 0.0
    drop_down_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("duplicate", "out_of_order", "late", "malformed", "skew", "skew_out", "drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault ratio {name} must be within 0..1, not {value}")
        if self.skew + self.skew_out > 1.0:
            raise ValueError(
                "skew and skew_out are fractions of the same robots: at most 1 together"
            )
        if self.malformed > 0 and not self.malformed_reasons:
            raise ValueError("malformed messages need at least one reason")


# One reading that is valid for each sensor type, to corrupt in one precise way.
_VALID_DATA = {
    "imu": '{"accel":{"x":0.1,"y":0.2,"z":9.8},"gyro":{"x":0.0,"y":0.0,"z":0.1}}',
    "gps": '{"lat":52.52,"lon":13.405}',
    "lidar": '{"points":1000,"min_distance":0.5,"max_distance":20.0}',
    "battery": '{"level":50.0}',
}
_OUT_OF_RANGE_DATA = {
    "imu": '{"accel":{"x":5000.0,"y":0.2,"z":9.8},"gyro":{"x":0.0,"y":0.0,"z":0.1}}',
    "gps": '{"lat":95.0,"lon":13.405}',
    "lidar": '{"points":1000,"min_distance":0.5,"max_distance":5000.0}',
    "battery": '{"level":150.0}',
}
_SCHEMA_VARIANTS = (
    '{{"ts":{ts},"seq":{seq}}}',  # no data
    '{{"ts":{ts},"data":{data},"colour":"red"}}',  # unknown field
    '{{"ts":"yesterday","data":{data}}}',  # wrong type
)


@dataclass(frozen=True, slots=True)
class Malformed:
    topic: str
    payload: bytes
    reason: RejectReason


def ghost_robot_id(robot_id: str) -> str:
    """A well-formed id nobody registered."""
    return f"ghost-{robot_id}"[:64]


def bad_topic_robot_id(robot_id: str) -> str:
    """Not a valid robot id (a `.`): the topic is refused as `bad_topic`."""
    return f"{robot_id}.bad"


def malformed_robot_ids(robot_id: str, faults: FaultConfig) -> list[str]:
    """The other robot ids a robot's malformed messages are published under."""
    if not faults.malformed:
        return []
    ids = []
    if RejectReason.BAD_TOPIC in faults.malformed_reasons:
        ids.append(bad_topic_robot_id(robot_id))
    if RejectReason.UNKNOWN_ROBOT in faults.malformed_reasons:
        ids.append(ghost_robot_id(robot_id))
    return ids


def build_malformed(
    reason: RejectReason, *, robot_id: str, sensor_type: str, ts_ms: int, rng: random.Random
) -> Malformed:
    topic = sensor_topic(robot_id, sensor_type)
    data = _VALID_DATA[sensor_type]
    good = f'{{"ts":{ts_ms},"data":{data}}}'
    if reason is RejectReason.BAD_TOPIC:
        return Malformed(
            sensor_topic(bad_topic_robot_id(robot_id), sensor_type), good.encode(), reason
        )
    if reason is RejectReason.UNKNOWN_SENSOR_TYPE:
        other = sensor_type.upper() if rng.random() < 0.5 else "sonar"
        return Malformed(sensor_topic(robot_id, other), good.encode(), reason)
    if reason is RejectReason.UNKNOWN_ROBOT:
        return Malformed(sensor_topic(ghost_robot_id(robot_id), sensor_type), good.encode(), reason)
    if reason is RejectReason.PAYLOAD_TOO_LARGE:
        padding = "x" * (MAX_PAYLOAD_BYTES + 1024)
        return Malformed(
            topic, f'{{"ts":{ts_ms},"data":{data},"pad":"{padding}"}}'.encode(), reason
        )
    if reason is RejectReason.INVALID_JSON:
        return Malformed(topic, good[: len(good) // 2].encode(), reason)
    if reason is RejectReason.INVALID_SCHEMA:
        variant = _SCHEMA_VARIANTS[rng.randrange(len(_SCHEMA_VARIANTS))]
        return Malformed(topic, variant.format(ts=ts_ms, seq=0, data=data).encode(), reason)
    if reason is RejectReason.OUT_OF_RANGE:
        bad = _OUT_OF_RANGE_DATA[sensor_type]
        return Malformed(topic, f'{{"ts":{ts_ms},"data":{bad}}}'.encode(), reason)
    if reason is RejectReason.TOO_MANY_READINGS:
        n = MAX_READINGS_PER_MESSAGE + 1
        items = ",".join(f'{{"ts":{ts_ms + i},"data":{data}}}' for i in range(n))
        return Malformed(topic, f'{{"readings":[{items}]}}'.encode(), reason)
    if reason is RejectReason.TS_IN_FUTURE:
        return Malformed(
            topic, f'{{"ts":{ts_ms + OUT_OF_WINDOW_MS},"data":{data}}}'.encode(), reason
        )
    if reason is RejectReason.TS_TOO_OLD:
        return Malformed(
            topic, f'{{"ts":{ts_ms - OUT_OF_WINDOW_MS},"data":{data}}}'.encode(), reason
        )
    raise ValueError(f"the simulator cannot provoke {reason}")
