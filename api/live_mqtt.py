"""The worker's one MQTT subscription to `fleet/#`, feeding its LiveHub.

paho-mqtt in its own network thread, not aiomqtt on the event loop: the worker's loop also
serves every stream, and a subscriber that reads only when the loop gets to it falls behind
at fleet scale (1,000 robots: ~1,000 summaries/s; aiomqtt manages ~6.6k messages/s on a
core with nothing else to do). Mosquitto then drops QoS 0 messages for the slow client
without telling anyone (BENCHMARKS.md, "Live view": 293 of 993 summaries/s reached a page).
paho's thread reads the socket as fast as messages come (`ReadAheadClient`: in chunks, the
summaries parsed without paho's per-message decoding and topic matching, which were most of
the subscription's cost at 10,000 robots) and keeps only the **newest message per topic**
(`LatestInbox`); the loop takes what is there at its own pace. A summary
superseded before the loop took it is counted, and every client watching that robot is told
(its `dropped` events), so each summary published is either delivered or counted as missed.
Alerts are events, not state: they queue (bounded) instead.

It subscribes to what the hub's clients watch (`LiveHub.interest`), following as they come
and go. A clean session: while the API is away the broker keeps nothing for it (the retained
summaries give it the watched robots' state again when it resubscribes, in `on_connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from api.live_hub import LiveHub
from api.metrics import (
    LIVE_CONNECTS,
    LIVE_DISCONNECTS,
    LIVE_RECEIVED,
    LIVE_SUPERSEDED,
)
from api.settings import ApiSettings
from mqtt_auth.identities import Identity, Role
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.store import IdentityStore
from telemetry.live import FLEET_ALERTS_TOPIC
from telemetry.mqtt import SessionCallbacks
from telemetry.mqtt_reader import ReadAheadClient

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.2
_KEEPALIVE_S = 15
# Alerts waiting for the loop: raised and cleared per robot and rule, rare; more than this
# means the loop is stuck, and the oldest go (counted).
_MAX_ALERTS = 10_000
# Messages the loop hands to the hub before it lets the streams run again.
_DISPATCH_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Credentials:
    host: str
    port: int
    username: str
    password: str | None


class LatestInbox:
    """Between paho's thread (`put`) and the event loop (`take`): the newest payload per
    topic, how many it superseded since the loop last took it, and the alerts in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[bytes, int]] = {}
        self._alerts: deque[bytes] = deque()
        self._alerts_dropped = 0
        # paho's thread wakes the loop once per batch, not once per message.
        self._wake_pending = False
        self.received = 0
        self.superseded = 0

    def put(self, topic: str, payload: bytes) -> bool:
        """Keeps the message; True when the loop should be woken."""
        with self._lock:
            self.received += 1
            if topic == FLEET_ALERTS_TOPIC:
                self._alerts.append(payload)
                if len(self._alerts) > _MAX_ALERTS:
                    self._alerts.popleft()
                    self._alerts_dropped += 1
            else:
                old = self._latest.get(topic)
                if old is None:
                    self._latest[topic] = (payload, 0)
                else:
                    self.superseded += 1
                    self._latest[topic] = (payload, old[1] + 1)
            wake = not self._wake_pending
            self._wake_pending = True
            return wake

    def take(self) -> tuple[list[bytes], int, dict[str, tuple[bytes, int]]]:
        """Alerts, alerts lost to the bound, and topic -> (payload, superseded)."""
        with self._lock:
            alerts = list(self._alerts)
            self._alerts.clear()
            alerts_dropped, self._alerts_dropped = self._alerts_dropped, 0
            latest, self._latest = self._latest, {}
            self._wake_pending = False
        return alerts, alerts_dropped, latest


class LiveSubscriber(SessionCallbacks):
    """paho's client in its own thread; `run()` on the loop hands what it kept to the hub."""

    def __init__(self, credentials: Credentials, hub: LiveHub, *, max_backoff_s: float) -> None:
        self._credentials = credentials
        self._hub = hub
        self.inbox = LatestInbox()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._client = ReadAheadClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=credentials.username,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self._client.username_pw_set(credentials.username, credentials.password)
        self._client.reconnect_delay_set(
            min_delay=cast(int, _FIRST_RETRY_S), max_delay=cast(int, max_backoff_s)
        )
        self._client.on_message = self._on_message
        # The summaries (QoS 0); paho takes the alerts (QoS 1) and acknowledges them.
        self._client.deliver_fields(self._on_fields, max_qos=0)
        self._was_connected = False
        # The topic filters the hub needs, and those asked of the broker on this connection.
        # The lock orders the loop's changes with paho's thread subscribing on a connect.
        self._topics_lock = threading.Lock()
        self._wanted = hub.interest()
        self._asked: frozenset[str] = frozenset()
        hub.on_interest_changed(self._follow_interest)
        super().__init__(
            self._client,
            address=f"mqtt://{credentials.username}@{credentials.host}:{credentials.port}",
            log=log,
        )

    async def __aenter__(self) -> LiveSubscriber:
        self._client.connect_async(
            self._credentials.host, self._credentials.port, keepalive=_KEEPALIVE_S
        )
        self._client.loop_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def run(self) -> None:
        """Hands the inbox to the hub until cancelled, a chunk at a time, letting the streams
        run between chunks (what arrives meanwhile supersedes what waits)."""
        hub = self._hub
        while True:
            await self._wake.wait()
            self._wake.clear()
            alerts, alerts_dropped, latest = self.inbox.take()
            if alerts_dropped:
                hub.alerts_lost(alerts_dropped)
            for payload in alerts:
                hub.dispatch(FLEET_ALERTS_TOPIC, payload)
            for i, (topic, (payload, superseded)) in enumerate(latest.items()):
                if superseded:
                    LIVE_SUPERSEDED.inc(superseded)
                hub.dispatch(topic, payload, superseded=superseded)
                if i % _DISPATCH_CHUNK == _DISPATCH_CHUNK - 1:
                    await asyncio.sleep(0)

    def _follow_interest(self) -> None:
        """The loop: subscribes to the topics the hub now needs and unsubscribes from those it
        no longer does. While disconnected, the next connect asks for the whole set. paho's
        calls are thread-safe; they are made outside the lock, as paho's thread may hold its
        own locks while it waits for this one in `_accepted`."""
        wanted = self._hub.interest()
        with self._topics_lock:
            self._wanted = wanted
            if not self._client.is_connected():
                return
            gone, new = sorted(self._asked - wanted), sorted(wanted - self._asked)
            self._asked = wanted
        if gone:
            self._client.unsubscribe(gone)
        if new:
            self._client.subscribe([(topic, 1) for topic in new])

    # paho's thread from here on; the hub is touched only on the loop.

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_fields(message.mid, message.qos, message.topic, bytes(message.payload), False)

    def _on_fields(self, mid: int, qos: int, topic: str, payload: bytes, retained: bool) -> None:
        LIVE_RECEIVED.inc()
        if self.inbox.put(topic, payload):
            self._loop.call_soon_threadsafe(self._wake.set)

    def _accepted(self, client: paho.Client, flags: paho.ConnectFlags) -> None:
        with self._topics_lock:
            self._asked = topics = self._wanted
        client.subscribe([(topic, 1) for topic in sorted(topics)])
        LIVE_CONNECTS.inc()
        self._was_connected = True
        self._loop.call_soon_threadsafe(self._hub.subscribed)
        log.info("live: subscribed", extra={"filters": len(topics)})

    def _refused(self, reason: ReasonCode) -> None:
        self._lost(f"refused: {reason}")

    def _disconnected(self, reason: ReasonCode) -> None:
        if self._was_connected:
            self._was_connected = False
            self._lost(f"lost: {reason}")

    def _lost(self, error: str) -> None:
        LIVE_DISCONNECTS.inc()
        self._loop.call_soon_threadsafe(self._hub.unsubscribed)
        log.warning(
            "live: MQTT subscription lost or refused; paho retries",
            extra={
                "broker": f"{self._credentials.host}:{self._credentials.port}",
                "user": self._credentials.username,
                "error": error,
            },
        )


@contextlib.asynccontextmanager
async def live_credentials(settings: ApiSettings) -> AsyncIterator[Credentials | None]:
    """The subscriber's identity (docs/security.md): MQTT_URL's user, or one this worker adds
    for itself (LIVE_PROVISION_IDENTITY) and removes when it stops; None: no live stream."""
    target = settings.mqtt
    if not settings.live_provision_identity:
        if target.username is None:
            log.warning(
                "live stream off: MQTT_URL names no user and LIVE_PROVISION_IDENTITY is off"
            )
            yield None
        else:
            yield Credentials(target.host, target.port, target.username, target.password)
        return
    files = settings.files
    if files is None:
        raise ValueError("LIVE_PROVISION_IDENTITY needs MQTT_AUTH_DIR")
    store = IdentityStore(files)
    username = f"api-live-{secrets.token_hex(4)}"
    password = new_password()
    await asyncio.to_thread(store.put, Identity(username, Role.API, hash_password(password)))
    try:
        yield Credentials(target.host, target.port, username, password)
    finally:
        await asyncio.to_thread(store.remove, [username])


@contextlib.asynccontextmanager
async def open_live(settings: ApiSettings) -> AsyncIterator[LiveHub | None]:
    """This worker's hub and its subscription, for the lifespan; None without an identity."""
    async with live_credentials(settings) as credentials:
        if credentials is None:
            yield None
            return
        hub = LiveHub(
            max_clients=settings.live_max_clients,
            client_max_bytes=settings.live_client_max_bytes,
            retry_after_s=settings.retry_after_s,
        )
        async with (
            LiveSubscriber(
                credentials, hub, max_backoff_s=settings.live_reconnect_max_s
            ) as subscriber,
            asyncio.TaskGroup() as tasks,
        ):
            handing = tasks.create_task(subscriber.run(), name="live-subscriber")
            try:
                yield hub
            finally:
                hub.close()
                handing.cancel()
