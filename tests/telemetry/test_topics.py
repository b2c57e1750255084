"""NATS subjects back to MQTT topics, as the bridges' consumer of `$MQTT_msgs` delivers them."""

from __future__ import annotations

from telemetry.topics import NATS_MQTT_PREFIX, topic_of_subject


def test_a_subject_of_mqtt_msgs_is_the_topic_without_its_prefix() -> None:
    assert topic_of_subject(NATS_MQTT_PREFIX + "robots.r1.sensors.imu") == "robots/r1/sensors/imu"
    assert topic_of_subject("robots.r1.status") == "robots/r1/status"
    # A `.` inside a level travels as `//`.
    assert topic_of_subject(NATS_MQTT_PREFIX + "robots.r//1.status") == "robots/r.1/status"
