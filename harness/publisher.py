"""A QoS 1 test publisher: returns only once the broker has acknowledged every message."""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.topics import sensor_topic


class Publisher:
    def __init__(self, *, port: int, username: str, password: str) -> None:
        # The broker makes the username the client id (use_username_as_clientid).
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish_all(self, messages: Iterable[tuple[str, bytes]], *, qos: int = 1) -> int:
        infos = [self.client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published(), "broker did not acknowledge a publish"
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def battery_messages(
    robot_id: str, n: int, *, start_ms: int | None = None, per_message: int = 1, seq0: int = 0
) -> list[tuple[str, bytes]]:
    """n readings of one robot's battery, one ms apart, grouped `per_message` to a message."""
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    readings = [
        {"ts": start + i, "seq": seq0 + i, "data": {"level": (i % 1000) / 10}} for i in range(n)
    ]
    topic = sensor_topic(robot_id, "battery")
    if per_message == 1:
        return [(topic, orjson.dumps(r)) for r in readings]
    return [
        (topic, orjson.dumps({"readings": readings[i : i + per_message]}))
        for i in range(0, n, per_message)
    ]
