"""A QoS 1 test publisher: returns only once the broker has acknowledged every message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

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


class SteadyRobot:
    """A robot that publishes one battery reading per message at a steady rate, on its own
    thread, through broker restarts: a persistent session (clean_session=False), so paho keeps
    what it could not send while disconnected and resends unacknowledged QoS 1 messages on
    reconnect, as a real robot's client would. Records when each reading was acknowledged.

    Reading i has ts = start_ms + i; a robot sends fewer than 65,535 messages, so a message id
    names one reading.
    """

    def __init__(
        self,
        *,
        port: int,
        robot_id: str,
        password: str,
        start_ms: int,
        rate: float,
        count: int,
        failover_ports: Sequence[int] = (),
    ) -> None:
        """`failover_ports`: other nodes of a cluster, tried in turn when a connection is lost
        (the first is `port`); `ports_used` records each node connected to, in order."""
        assert count < 65_535
        self.robot_id = robot_id
        self.start_ms = start_ms
        self.rate = rate
        self.count = count
        self.sent = 0
        self.acked_at: dict[int, float] = {}  # reading index -> time.time() of its PUBACK
        self._index_of_mid: dict[int, int] = {}
        self._stop = threading.Event()
        # The robot's own identity: the broker makes the username the client id, which keeps
        # the session the same across reconnects.
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=robot_id,
            clean_session=False,
        )
        self.client.username_pw_set(robot_id, password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        # Robots retry at once (some of a large fleet always do): they are back before the
        # bridge, which is when a subscription the broker forgot costs readings.
        self.client.reconnect_delay_set(min_delay=cast(int, 0.02), max_delay=cast(int, 0.05))
        self.client.on_publish = self._on_publish
        self._ports = [port, *failover_ports]
        self._next = 0
        self.ports_used: list[int] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda client, userdata: self._on_disconnect(
            client, userdata, None, None, None
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"robot-{robot_id}", daemon=True)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.ports_used.append(self._ports[self._next])

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if len(self._ports) > 1 and not self._stop.is_set():
            # The next node: paho's thread reconnects to whatever connect_async set last.
            self._next = (self._next + 1) % len(self._ports)
            client.connect_async("127.0.0.1", self._ports[self._next])

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        index = self._index_of_mid.get(mid)
        if index is not None and index not in self.acked_at:
            self.acked_at[index] = time.time()

    def _run(self) -> None:
        topic = sensor_topic(self.robot_id, "battery")
        began = time.monotonic()
        for i in range(self.count):
            if self._stop.is_set():
                return
            delay = began + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = orjson.dumps({"ts": self.start_ms + i, "seq": i, "data": {"level": 50.0}})
            # Whether connected or not: paho queues it and sends it when it can.
            info = self.client.publish(topic, payload, qos=1)
            self._index_of_mid[info.mid] = i
            # Acknowledged before we mapped it? (rc is NO_CONN while disconnected: still queued.)
            if info.rc == paho.MQTT_ERR_SUCCESS and info.is_published() and i not in self.acked_at:
                self.acked_at[i] = time.time()
            self.sent = i + 1

    def start(self) -> None:
        self._thread.start()

    def wait_all_acked(self, *, timeout: float) -> None:
        """Waits until every reading was sent and acknowledged; raises on timeout."""
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)
        while len(self.acked_at) < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"robot {self.robot_id}: {len(self.acked_at)} of {self.count} acknowledged"
                )
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
