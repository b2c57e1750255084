from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from harness.services import Mosquitto


class Client:
    """A test MQTT client that records what it receives and whether it is connected."""

    def __init__(self, broker: Mosquitto, username: str, *, client_id: str = "") -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.granted: list[int] = []
        self._subacks = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311
        )
        self.client.username_pw_set(username, broker.passwords[username])
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise TimeoutError(f"{username} not connected")

    def _on_connect(self, c: paho.Client, u: object, f: object, reason: object, p: object) -> None:
        self.connected.set()

    def _on_subscribe(
        self, c: paho.Client, u: object, mid: int, codes: list[ReasonCode], p: Properties | None
    ) -> None:
        self.granted += [code.value for code in codes]
        self._subacks.set()

    def subscribe(self, *topics: str) -> None:
        self._subacks.clear()
        self.client.subscribe([(t, 1) for t in topics])
        if not self._subacks.wait(10):
            raise TimeoutError("no SUBACK")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic}")

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(mosquitto: Mosquitto) -> Iterator[list[Client]]:
    """Clients a test opens, closed at its end."""
    opened: list[Client] = []
    yield opened
    for c in opened:
        c.close()


def wait_until(probe: object, *, timeout: float = 10.0) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
