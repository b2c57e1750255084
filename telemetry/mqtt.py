"""The connection callbacks of our long-lived paho clients (the bridge's subscriber, the live
service's publisher, the API's live subscriber): paho's VERSION2 `on_connect` and
`on_disconnect`, split into an accepted connect, a refused one and a disconnect.

paho retries both a refused connect and a lost connection on its own (`connect_async` +
`loop_start`), so what a service does about them is say so and keep its own state.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from telemetry.logs import unreachable


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
