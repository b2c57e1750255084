"""MQTT topic names: the only place that knows their shape."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telemetry.errors import ContractError, RejectReason
from telemetry.sensors import SENSOR_TYPES

ROBOT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ROBOT_ID = re.compile(ROBOT_ID_PATTERN)

READINGS_FILTER = "robots/+/sensors/+"
STATUS_FILTER = "robots/+/status"
# Each bridge keeps a retained `online` here while it is connected (its Last Will and its
# clean stop set `offline`), so a publisher can tell whether anything will store its readings.
BRIDGE_PRESENCE_FILTER = "robosense/bridges/+"
BRIDGE_ONLINE = b"online"
BRIDGE_OFFLINE = b"offline"
# A site broker's bridge to the cloud broker (edge/mosquitto.conf, docs/edge.md) keeps a
# retained status here: Mosquitto's bridge notifications publish "1" when the connection is
# up and leave "0" as the connection's Last Will, so the cloud sees a site go unreachable.
SITE_STATUS_FILTER = "sites/+/status"
# Everything of the sites: their status and their brokers' forwarded $SYS counters
# (sites/<site>/broker/publish/messages/dropped, sites/<site>/broker/store/messages/count).
SITES_FILTER = "sites/#"
SITE_REACHABLE = b"1"
SITE_UNREACHABLE = b"0"

# The same topics as NATS subjects: NATS's MQTT listener maps `robots/r1/sensors/imu` to
# `robots.r1.sensors.imu` (levels become tokens, `+` becomes `*`), so a JetStream stream bound
# to these captures what robots publish over MQTT to any node of a cluster (docs/nats.md).
NATS_READINGS_SUBJECT = "robots.*.sensors.*"
NATS_STATUS_SUBJECT = "robots.*.status"
# NATS's MQTT listener stores each QoS 1 PUBLISH as `$MQTT.msgs.<subject>` in its own stream
# `$MQTT_msgs` and sends the PUBACK only once that store succeeded (docs/nats.md): the bridges'
# consumer reads there.
NATS_MQTT_STREAM = "$MQTT_msgs"
NATS_MQTT_PREFIX = "$MQTT.msgs."

# Our broker (mosquitto.conf) listens here, not on MQTT's usual 1883: a machine's own broker
# there keeps its distribution's defaults, which drop messages at our rates.
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1884"


@dataclass(frozen=True, slots=True)
class SensorTopic:
    robot_id: str
    sensor_type: str


def is_valid_robot_id(robot_id: str) -> bool:
    return _ROBOT_ID.fullmatch(robot_id) is not None


def sensor_topic(robot_id: str, sensor_type: str) -> str:
    return f"robots/{robot_id}/sensors/{sensor_type}"


def status_topic(robot_id: str) -> str:
    return f"robots/{robot_id}/status"


def bridge_presence_topic(client_id: str) -> str:
    return f"robosense/bridges/{client_id}"


def site_status_topic(site_id: str) -> str:
    return f"sites/{site_id}/status"


def site_topics(site_id: str) -> str:
    """What a site's bridge may publish at the cloud broker besides its robots' topics."""
    return f"sites/{site_id}/#"


def site_dropped_topic(site_id: str) -> str:
    """The site broker's count of messages it dropped (its queue was full), forwarded."""
    return f"sites/{site_id}/broker/publish/messages/dropped"


def parse_site_status_topic(topic: str) -> str | None:
    """The site id of a site status topic, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "sites" and parts[2] == "status":
        return parts[1] if is_valid_site_id(parts[1]) else None
    return None


def is_valid_site_id(site_id: str) -> bool:
    # One topic level and one MQTT username (the site's identity at the cloud broker).
    return _ROBOT_ID.fullmatch(site_id) is not None


def topic_of_subject(subject: str) -> str:
    """The MQTT topic a NATS subject carries. Our topics have no `.` (robot ids and sensor
    types cannot hold one); NATS would have sent a `.` in a topic level as `//`.
    A subject of `$MQTT_msgs` comes with its `$MQTT.msgs.` prefix, dropped here."""
    subject = subject.removeprefix(NATS_MQTT_PREFIX)
    return subject.replace("//", "\x00").replace(".", "/").replace("\x00", ".")


def readings_filter(share_group: str) -> str:
    """The bridges' subscription: shared by a group, or plain when the group is empty."""
    return f"$share/{share_group}/{READINGS_FILTER}" if share_group else READINGS_FILTER


def parse_sensor_topic(topic: str) -> SensorTopic:
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "robots" or parts[2] != "sensors":
        raise ContractError(
            RejectReason.BAD_TOPIC, f"expected robots/<id>/sensors/<type>: {topic!r}"
        )
    robot_id, sensor_type = parts[1], parts[3]
    if not is_valid_robot_id(robot_id):
        raise ContractError(
            RejectReason.BAD_TOPIC, f"robot id must be 1-64 of [A-Za-z0-9_-]: {robot_id!r}"
        )
    if sensor_type not in SENSOR_TYPES:
        hint = (
            " (sensor types are lower case on MQTT)" if sensor_type.lower() in SENSOR_TYPES else ""
        )
        raise ContractError(
            RejectReason.UNKNOWN_SENSOR_TYPE, f"unknown sensor type {sensor_type!r}{hint}"
        )
    return SensorTopic(robot_id, sensor_type)


def parse_status_topic(topic: str) -> str | None:
    """The robot id of a status topic, or None for any other topic."""
    if not topic.endswith("/status"):  # every reading's topic: decided without splitting
        return None
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "robots" and parts[2] == "status":
        return parts[1] if is_valid_robot_id(parts[1]) else None
    return None
