"""The live service's MQTT session: paho-mqtt in its own thread, publishing summaries and
alerts, and following the sites' statuses (`sites/+/status`, docs/edge.md).

paho rather than aiomqtt: publishing needs no callbacks on the event loop, and `publish` is
safe to call from it (paho locks its output queue); a site's status is queued by paho's thread
and taken by the next tick. A clean session: the only subscription is to retained statuses,
which the broker hands over again at each connect, so it has nothing to keep for the service.

A tick's summaries go out as a batch (`publish_batch`): QoS 0 PUBLISH packets built here and
handed to paho's thread as a few large writes. paho's own `publish` costs, per message, a
message-info object with its lock, a wake-up byte through a socket pair and a `select` round
in its thread: ~45 % of the service's CPU with 1,000 robots (BENCHMARKS.md, "Live view").
That uses a private method of the pinned paho version (`_packet_queue`, constraints.txt);
tests/live/ cover it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from live.state import SiteEvent
from telemetry.mqtt import PUBLISH, SessionCallbacks, publish_packet
from telemetry.settings import MqttTarget
from telemetry.topics import (
    SITE_REACHABLE,
    SITE_STATUS_FILTER,
    SITE_UNREACHABLE,
    parse_site_status_topic,
)

log = logging.getLogger(__name__)

# A batch is handed to paho in writes of about this size.
_BATCH_BYTES = 256 * 1024


# Alerts (QoS 1) waiting while the broker is away; summaries (QoS 0) are dropped instead, since
# the next tick supersedes them.
_MAX_QUEUED = 10_000


class MqttPublisher(SessionCallbacks):
    def __init__(self, *, target: MqttTarget, client_id: str) -> None:
        self._target = target
        self._connected = threading.Event()
        # Counts connections: a new one means the broker may have lost retained messages
        # (restarted without persistence), so every summary is published again.
        self.connections = 0
        # Sites' statuses as they arrive, oldest first (appended by paho's thread).
        self._site_events: deque[SiteEvent] = deque()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if target.username:
            self._client.username_pw_set(target.username, target.password)
        self._client.max_queued_messages_set(_MAX_QUEUED)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(min_delay=cast(int, 0.2), max_delay=5)
        super().__init__(self._client, address=f"mqtt://{target.host}:{target.port}", log=log)
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def __aenter__(self) -> MqttPublisher:
        self._client.connect_async(self._target.host, self._target.port, keepalive=30)
        self._client.loop_start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def wait_connected(self, within_s: float) -> bool:
        return await asyncio.to_thread(self._connected.wait, within_s)

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> bool:
        """False when it could not be sent or queued (not connected, QoS 0)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def publish_batch(self, messages: Iterable[tuple[str, bytes]], *, retain: bool) -> bool:
        """QoS 0 messages, in order, in a few writes; False when not connected (dropped, as
        paho drops QoS 0 then: the next tick supersedes them)."""
        if not self._client.is_connected():
            return False
        chunk: list[bytes] = []
        size = 0
        for topic, payload in messages:
            packet = publish_packet(topic.encode(), payload, retain=retain)
            chunk.append(packet)
            size += len(packet)
            if size >= _BATCH_BYTES:
                self._queue(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            self._queue(b"".join(chunk))
        return True

    def _queue(self, packets: bytes) -> None:
        # The pinned paho's private method: paho writes it as one packet; at QoS 0 its
        # completion only marks the info published.
        self._client._packet_queue(PUBLISH, packets, 0, 0, paho.MQTTMessageInfo(0))

    def take_site_events(self) -> list[SiteEvent]:
        """The sites' statuses received since the last call, oldest first."""
        events = []
        while self._site_events:
            events.append(self._site_events.popleft())
        return events

    # paho's thread from here on.

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        site_id = parse_site_status_topic(msg.topic)
        if site_id is None:
            return
        payload = bytes(msg.payload)
        if payload in (SITE_REACHABLE, b""):
            # b"": the retained status was deleted, the site is gone (judged as reachable).
            reachable = True
        elif payload == SITE_UNREACHABLE:
            reachable = False
        else:
            log.warning("site status not understood", extra={"site": site_id})
            return
        self._site_events.append(SiteEvent(site_id, reachable, int(time.time() * 1000)))

    def _accepted(self, client: paho.Client, flags: paho.ConnectFlags) -> None:
        self.connections += 1
        # QoS 1: a status is not lost between the broker and us. The retained ones arrive at
        # once, the current state of every site.
        client.subscribe(SITE_STATUS_FILTER, qos=1)
        self._connected.set()
        log.info("mqtt connected", extra={"connections": self.connections})

    def _disconnected(self, reason: ReasonCode) -> None:
        self._connected.clear()
        super()._disconnected(reason)
