"""The worker's one MQTT subscription to `fleet/#`, feeding its LiveHub.

aiomqtt: the topics are decimated (about one summary per robot per second), the subscription
needs no manual acknowledgement, and it runs on the worker's event loop beside the streams.
A clean session: while the API is away the broker keeps nothing for it (the retained
summaries give it the whole fleet again when it resubscribes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiomqtt

from api.live_hub import LiveHub
from api.metrics import LIVE_CONNECTS, LIVE_DISCONNECTS
from api.settings import ApiSettings
from mqtt_auth.identities import Identity, Role
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.store import IdentityStore
from telemetry.live import FLEET_FILTER

log = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.2
_KEEPALIVE_S = 15


@dataclass(frozen=True, slots=True)
class Credentials:
    host: str
    port: int
    username: str
    password: str | None


async def subscribe_forever(
    credentials: Credentials, hub: LiveHub, *, max_backoff_s: float
) -> None:
    """Subscribes and dispatches until cancelled; a lost or refused connection is logged and
    retried with exponential backoff (the hub's clients stay open meanwhile)."""
    delay = _FIRST_RETRY_S
    while True:
        try:
            async with aiomqtt.Client(
                credentials.host,
                credentials.port,
                username=credentials.username,
                password=credentials.password,
                identifier=credentials.username,
                clean_session=True,
                keepalive=_KEEPALIVE_S,
            ) as client:
                await client.subscribe(FLEET_FILTER, qos=1)
                hub.connected = True
                hub.connects += 1
                LIVE_CONNECTS.inc()
                log.info("live: subscribed", extra={"filter": FLEET_FILTER})
                delay = _FIRST_RETRY_S
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes | bytearray):
                        hub.dispatch(message.topic.value, bytes(payload))
        except aiomqtt.MqttError as exc:
            hub.connected = False
            LIVE_DISCONNECTS.inc()
            log.warning(
                "live: MQTT subscription lost or refused; retrying",
                extra={
                    "broker": f"{credentials.host}:{credentials.port}",
                    "user": credentials.username,
                    "retry_in_s": round(delay, 2),
                    "error": str(exc),
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)


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
        async with asyncio.TaskGroup() as tasks:
            subscriber = tasks.create_task(
                subscribe_forever(credentials, hub, max_backoff_s=settings.live_reconnect_max_s),
                name="live-subscriber",
            )
            try:
                yield hub
            finally:
                hub.close()
                subscriber.cancel()
