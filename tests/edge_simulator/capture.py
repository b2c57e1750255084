"""A subscriber that records everything robots publish, and what the contract makes of it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.errors import ContractError
from telemetry.payload import EPOCH, Decoded, PayloadDecoder, TimeWindow
from telemetry.topics import parse_sensor_topic, parse_status_topic


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class Capture:
    """Subscribes to `robots/#` at QoS 1 (paho's thread: tests only read the lists)."""

    def __init__(self, *, port: int, username: str, password: str) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.username_pw_set(username, password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._port = port

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def __enter__(self) -> Capture:
        self._client.connect("127.0.0.1", self._port)
        self._client.subscribe("robots/#", qos=1)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def sensor_messages(self) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if "/sensors/" in m.topic]

    def statuses(self, robot_id: str) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages if parse_status_topic(m.topic) == robot_id]

    def wait_for(self, n: int, *, timeout: float = 30.0, settle: float = 0.3) -> list[Message]:
        """Waits for n sensor messages, then a little longer to catch any extra ones."""
        deadline = time.monotonic() + timeout
        while len(self.sensor_messages()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle)
        return self.sensor_messages()


@dataclass
class Observed:
    """What a bridge would make of the captured messages."""

    identities: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    instances: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    seqs_in_arrival_order: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def classify(messages: list[Message], *, fleet: Collection[str]) -> Observed:
    decoder = PayloadDecoder(window=TimeWindow())
    now = datetime.now(UTC)
    seen = Observed()
    for m in messages:
        try:
            topic = parse_sensor_topic(m.topic)
        except ContractError as exc:
            seen.rejected[str(exc.reason)] += 1
            continue
        out = Decoded()
        decoder.decode(
            robot_id=topic.robot_id,
            sensor_type=topic.sensor_type,
            topic=m.topic,
            payload=m.payload,
            received_at=now,
            into=out,
        )
        seen.rejected.update(str(r.reason) for r in out.rejections)
        for r in out.readings:
            if r.robot_id not in fleet:
                seen.rejected["unknown_robot"] += 1
                continue
            key = (r.robot_id, r.sensor_type)
            seen.identities.setdefault(key, set()).add((r.ts - EPOCH) // timedelta(milliseconds=1))
            seen.instances[key] += 1
            if r.seq is not None:
                seen.seqs_in_arrival_order.setdefault(key, []).append(r.seq)
    return seen
