"""The live view's contract: what operators and browsers receive, on MQTT and on `/api/live`.

Raw readings arrive at the robots' rate (a 1,000-robot fleet publishes ~13k msg/s), far more
than a person or a browser can use. The `live` service publishes a decimated summary per robot
(at most `LIVE_SUMMARY_HZ`, retained, so a new subscriber sees the whole fleet at once), a fleet
roll-up and the alerts it raises and clears. Times are epoch milliseconds, like readings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

FLEET_SUMMARY_TOPIC = "fleet/summary"
FLEET_ALERTS_TOPIC = "fleet/alerts"
ROBOT_SUMMARIES_FILTER = "fleet/+/summary"
# Everything an operator's live view needs, in one subscription.
FLEET_FILTER = "fleet/#"


def robot_summary_topic(robot_id: str) -> str:
    return f"fleet/{robot_id}/summary"


def parse_robot_summary_topic(topic: str) -> str | None:
    """The robot id of a per-robot summary topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "fleet" and parts[2] == "summary":
        return parts[1]
    return None


class RobotState(StrEnum):
    """Sparkplug-like: the robot's own birth/death (status topic, Last Will) plus silence."""

    ONLINE = "online"
    # Says it is online but no reading arrived for `LIVE_STALE_AFTER_S`.
    STALE = "stale"
    OFFLINE = "offline"
    # Registered, never said anything.
    UNKNOWN = "unknown"
    # Its site's broker cannot reach the cloud (`sites/{site}/status` is "0", docs/edge.md):
    # what the cloud last heard of it may be out of date, whatever it said. Wins over the others.
    SITE_UNREACHABLE = "site_unreachable"


class AlertKind(StrEnum):
    OFFLINE = "offline"
    SILENT = "silent"
    BATTERY_LOW = "battery_low"
    SEQUENCE_GAPS = "sequence_gaps"
    DEAD_LETTER_SPIKE = "dead_letter_spike"
    RATE_DROP = "rate_drop"
    SITE_UNREACHABLE = "site_unreachable"


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class SensorLatest(msgspec.Struct, frozen=True):
    ts: int
    data: dict[str, Any]
    # When the bridge received it (None: unknown); minus `ts`, its delay.
    received_at: int | None = None


class RobotSummary(msgspec.Struct, frozen=True):
    """`fleet/{robot_id}/summary`, retained."""

    robot_id: str
    at: int
    state: RobotState
    last_seen: int | None
    # Readings per second stored for this robot over the last full minute.
    rate_hz: float
    # The newest reading of each sensor type.
    sensors: dict[str, SensorLatest]
    battery_percent: float | None
    # Sequence gaps (missing `seq` numbers) per sensor type, in all and since the last summary.
    gaps_total: dict[str, int]
    gaps_new: int
    # Messages of this robot refused (dead-lettered) since the last summary.
    rejected_new: int
    active_alerts: list[AlertKind]
    # The site whose broker forwards its readings (the site identity at the cloud lists it,
    # docs/edge.md); None: it publishes to the cloud broker directly, or no site is known.
    site: str | None = None
    # `received_at - ts` of its newest reading: how late its data arrives (a site's backlog
    # draining after an outage shows here). None: no reading yet.
    delay_ms: int | None = None


class FleetSummary(msgspec.Struct, frozen=True):
    """`fleet/summary`, retained."""

    at: int
    robots: int
    states: dict[RobotState, int]
    rate_hz: float
    gaps_new: int
    rejected_new: int
    active_alerts: int
    # Sites whose broker cannot reach the cloud (their status says "0"), sorted.
    sites_unreachable: list[str] = []
    # Robots whose newest reading arrived at least LIVE_DRAINING_AFTER_S late, recently: a
    # site's backlog draining.
    draining: int = 0


class Alert(msgspec.Struct, frozen=True):
    """`fleet/alerts` (not retained) and one row of `GET /api/alerts`. An alert is published
    once when raised (`cleared_at` null) and once when cleared."""

    id: int
    kind: AlertKind
    severity: Severity
    robot_id: str | None
    raised_at: int
    cleared_at: int | None
    message: str
    detail: dict[str, Any] = {}
    # The site a `site_unreachable` alert is about (its `robot_id` is null).
    site_id: str | None = None


_encoder = msgspec.json.Encoder()


def encode(message: RobotSummary | FleetSummary | Alert) -> bytes:
    return _encoder.encode(message)


def decode_robot_summary(payload: bytes) -> RobotSummary:
    return msgspec.json.decode(payload, type=RobotSummary)


def decode_fleet_summary(payload: bytes) -> FleetSummary:
    return msgspec.json.decode(payload, type=FleetSummary)


def decode_alert(payload: bytes) -> Alert:
    return msgspec.json.decode(payload, type=Alert)
