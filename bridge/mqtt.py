"""The bridge's MQTT session: paho-mqtt in its own thread, persistent session, manual acks.

Why paho and not aiomqtt: see bridge/inbox.py.
Why MQTT 3.1.1 and not v5: paho decodes a property set for every v5 PUBLISH, which costs about
a quarter of the bridge's message rate (BENCHMARKS.md, "Measurements behind design choices").
What v5 would add we
get from the broker's config instead: the in-flight window (`max_inflight_messages`) and the
session lifetime (`persistent_client_expiration`) in mosquitto.conf. Shared subscriptions work
for 3.1.1 clients in Mosquitto.

Reconnects are quick (0.1 s, doubling to 0.5 s): with a shared subscription, which Mosquitto
forgets when it restarts, what robots publish before a bridge has subscribed again is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.inbox import InboundMessage, Inbox
from telemetry.logs import unreachable
from telemetry.mqtt import SessionCallbacks
from telemetry.mqtt_reader import ReadAheadClient
from telemetry.settings import MqttTarget
from telemetry.topics import (
    BRIDGE_OFFLINE,
    BRIDGE_ONLINE,
    STATUS_FILTER,
    bridge_presence_topic,
    readings_filter,
)

log = logging.getLogger(__name__)

PUBACK = PacketTypes.PUBACK << 4
# A PUBACK is 4 bytes: type, remaining length 2, the message id (big-endian).
_PUBACK_HEADER = (PUBACK << 24) | (2 << 16)
_PUBACKS_PER_WRITE = 4096


class MqttSubscriber(SessionCallbacks):
    """Subscribes to readings (plain or shared) and statuses, feeding an Inbox; acks on
    request."""

    def __init__(
        self,
        *,
        target: MqttTarget,
        client_id: str,
        share_group: str,
        inbox: Inbox,
    ) -> None:
        self._target = target
        self._inbox = inbox
        self._share_group = share_group
        self._generation = 0
        self._subscribed = threading.Event()
        # Why the broker could not be reached, last time it could not (None: it could).
        self.last_error: OSError | None = None
        self._said_at = -1e9
        # The identity, never the password: a log line tells which login a bridge used.
        who = f"{target.username}@" if target.username else ""
        self._address_url = f"mqtt://{who}{target.host}:{target.port}"
        self._client = ReadAheadClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            # A persistent session: the broker queues for us while we are away, and redelivers
            # what we had not acknowledged.
            clean_session=False,
        )
        self._client.manual_ack_set(True)
        # Under the username when there is one: the broker makes it the client id.
        self._presence = bridge_presence_topic(target.username or client_id)
        self._client.will_set(self._presence, BRIDGE_OFFLINE, qos=1, retain=True)
        if target.username:
            self._client.username_pw_set(target.username, target.password)
        # paho's hints say int, its arithmetic takes floats. A refused connect to a broker that
        # is down costs a few microseconds; a late re-subscription can cost readings.
        self._client.reconnect_delay_set(min_delay=cast(int, 0.1), max_delay=cast(int, 0.5))
        super().__init__(self._client, address=self._address_url, log=log)
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.deliver_fields(self._on_publish_fields, max_qos=1)

    @property
    def address(self) -> str:
        return self._address_url

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def __aenter__(self) -> MqttSubscriber:
        # connect_async + loop_start: paho's thread connects and reconnects on its own, so a
        # broker that is down at start or restarts later is waited for, not fatal.
        self._client.connect_async(
            self._target.host,
            self._target.port,
            keepalive=30,
        )
        self._client.loop_start()
        return self

    async def wait_subscribed(self, within_s: float) -> bool:
        return await asyncio.to_thread(self._subscribed.wait, within_s)

    async def pump(self, stopping: asyncio.Event) -> None:
        """Nothing to pull: paho's thread pushes messages into the inbox."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inbox.close()
        offline = self._client.publish(self._presence, BRIDGE_OFFLINE, qos=1, retain=True)
        # The broker handles a connection's packets in order: once it acknowledged this
        # publish, it has taken every PUBACK queued before it. Without waiting, loop_stop
        # could end paho's thread with the last batch's PUBACKs unwritten, and the next
        # session got those messages again (tests/bridge/test_mqtt_acks.py).
        with contextlib.suppress(RuntimeError, ValueError):  # not connected: nothing to flush
            await asyncio.to_thread(offline.wait_for_publish, 5.0)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def ack(self, messages: Sequence[InboundMessage]) -> int:
        """Acknowledges QoS 1 messages delivered on the current connection; returns how many.

        Messages from an earlier connection are not acked: the broker redelivers them on the
        resumed session under the same ids, and the idempotent merge absorbs the repeat.

        A batch's PUBACKs go out as one write: `Client.ack` queues each as its own packet,
        which costs a wake-up of paho's thread and a socket write per message (a third of the
        per-message cost of single-reading messages; BENCHMARKS.md, "Single-reading
        messages: CPU per message"). The packets are the same 4 bytes each, in order.
        """
        current = self._generation
        mids = [m.mid for m in messages if m.qos == 1 and m.generation == current]
        for start in range(0, len(mids), _PUBACKS_PER_WRITE):
            chunk = mids[start : start + _PUBACKS_PER_WRITE]
            packets = struct.pack(f"!{len(chunk)}I", *(_PUBACK_HEADER | mid for mid in chunk))
            # paho's own queue (what Client.ack uses), so the write keeps its order with
            # everything else paho sends; pinned paho version (constraints.txt).
            self._client._packet_queue(PUBACK, packets, 0, 0)
        return len(mids)

    def refresh_statuses(self) -> None:
        """Has the broker resend every retained status (Redis lost the online/offline state).

        Subscribing again to a filter the session holds makes the broker send its retained
        messages again (MQTT 3.1.1, 3.8.4). Safe from any thread: paho locks its output queue.
        """
        self._client.subscribe(STATUS_FILTER, 1)

    # paho's thread from here on.

    def _accepted(self, client: paho.Client, flags: paho.ConnectFlags) -> None:
        self.last_error = None
        self._generation += 1
        log.info(
            "mqtt connected",
            extra={"session_present": flags.session_present, "generation": self._generation},
        )
        client.publish(self._presence, BRIDGE_ONLINE, qos=1, retain=True)
        # Subscribing again on a resumed session is harmless and covers one the broker lost (a
        # shared subscription after a broker restart; any after a hard kill within its
        # autosave interval). It also has the broker resend the retained statuses.
        client.subscribe([(readings_filter(self._share_group), 1), (STATUS_FILTER, 1)])

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho does not pass the cause; one plain TCP connect finds it (refused, no route, ...).
        try:
            with socket.create_connection((self._target.host, self._target.port), timeout=2):
                cause = None
        except OSError as exc:
            cause = exc
        # paho retries every half second: say it when the cause changes, else every 10 s.
        now = time.monotonic()
        if repr(cause) != repr(self.last_error) or now - self._said_at >= 10.0:
            self._said_at = now
            log.warning(
                "cannot reach the MQTT broker; retrying",
                extra=unreachable(self._address_url, cause),
            )
        self.last_error = cause

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("mqtt subscribe refused", extra={"reasons": [str(rc) for rc in reason_codes]})
            return
        self._subscribed.set()

    def _disconnected(self, reason: ReasonCode) -> None:
        self._subscribed.clear()
        super()._disconnected(reason)

    def _on_publish_fields(
        self, mid: int, qos: int, topic: str, payload: bytes, retained: bool
    ) -> None:
        # The same as _on_message, from a PUBLISH that ReadAheadClient parsed itself.
        self._inbox.put(
            InboundMessage(self._generation, mid, qos, topic, payload, time.time(), retained)
        )

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # The hottest Python in the bridge for single-reading messages (paho's thread, which
        # holds the GIL meanwhile): nothing here that the loop can do later.
        self._inbox.put(
            InboundMessage(
                self._generation,
                message.mid,
                message.qos,
                message.topic,
                message.payload,  # type: ignore[arg-type]  # bytes: paho unpacks it with struct
                time.time(),
                message.retain,
            )
        )
