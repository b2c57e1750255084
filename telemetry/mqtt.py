"""MQTT as every process of ours speaks it, in two parts.

The connection callbacks of our long-lived paho clients (the bridge's subscriber, the live
service's publisher, the API's live subscriber): paho's VERSION2 `on_connect` and
`on_disconnect`, split into an accepted connect, a refused one and a disconnect. paho retries
both a refused connect and a lost connection on its own (`connect_async` + `loop_start`), so
what a service does about them is say so and keep its own state.

The PUBLISH packet (MQTT 3.1.1, 3.3) for what writes packets without paho's per-message
bookkeeping: the live service's batches, the load generator, the bridge's read benchmark and
tests.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from telemetry.logs import unreachable

PUBLISH = 0x30
_RETAIN = 0x01


def remaining_length(n: int) -> bytes:
    """A packet's Remaining Length field (MQTT 3.1.1, 2.2.3): 7 bits a byte, low first."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(
    topic: bytes, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False
) -> bytes:
    """One PUBLISH packet; the packet id is written at QoS 1 and 2 only."""
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += packet_id.to_bytes(2, "big")
    command = PUBLISH | qos << 1 | (_RETAIN if retain else 0)
    return bytes((command,)) + remaining_length(len(head) + len(payload)) + head + payload


class SessionCallbacks(ABC):
    """Installs itself as `client`'s on_connect and on_disconnect. Subclasses say what a
    connect does (`_accepted`); a refused connect and a disconnect are logged (the lines
    every service writes, under its own logger) unless a subclass overrides `_refused` or
    `_disconnected`. All of it runs in paho's thread."""

    def __init__(self, client: paho.Client, *, address: str, log: logging.Logger) -> None:
        # mqtt://[user@]host:port, never a password: the log lines name the broker by it.
        self._session_address = address
        self._session_log = log
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    @abstractmethod
    def _accepted(self, client: paho.Client, flags: paho.ConnectFlags) -> None: ...

    def _refused(self, reason: ReasonCode) -> None:
        self._session_log.error(
            "mqtt connect refused", extra=unreachable(self._session_address, reason=str(reason))
        )

    def _disconnected(self, reason: ReasonCode) -> None:
        # A disconnect we asked for is "Success"; paho reports every other one of an MQTT
        # 3.1.1 session (lost, keepalive, protocol error) as a failure code.
        if reason.is_failure:
            self._session_log.warning(
                "mqtt disconnected; paho reconnects", extra={"reason": str(reason)}
            )

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused(reason_code)
        else:
            self._accepted(client, flags)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._disconnected(reason_code)
