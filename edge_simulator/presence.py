"""Whether any RoboSense bridge is connected to the broker the fleet publishes to.

A broker accepts readings whether or not anything will store them: the machine's own broker
on 1883 accepts them as readily as ours. Each bridge keeps a retained `online` marker on
`robosense/bridges/<client id>` while it is connected; reading those markers tells the
simulator whether its readings can reach a bridge.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.topics import BRIDGE_ONLINE, BRIDGE_PRESENCE_FILTER

# Retained messages follow the SUBACK at once; this covers a loaded machine.
_SETTLE_S = 0.5


def _online_bridges(
    host: str, port: int, username: str | None, password: str | None, timeout_s: float
) -> list[str]:
    online: dict[str, bool] = {}
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edge-sim-presence-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            c.subscribe(BRIDGE_PRESENCE_FILTER, qos=1)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        online[message.topic.rsplit("/", 1)[-1]] = message.payload == BRIDGE_ONLINE

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        if subscribed.wait(timeout_s):
            threading.Event().wait(_SETTLE_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return sorted(name for name, up in online.items() if up)


async def online_bridges(
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 5.0,
) -> list[str]:
    """Client ids of the bridges connected to the broker now (none on a broker not ours)."""
    return await asyncio.to_thread(_online_bridges, host, port, username, password, timeout_s)
