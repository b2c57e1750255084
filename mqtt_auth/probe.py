"""Asks the broker whether it accepts credentials: after a change, the reload is asynchronous."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def connack(
    host: str, port: int, username: str | None, password: str | None, *, timeout: float = 5.0
) -> int:
    """The CONNACK code for these credentials (0: accepted). The broker makes the username the
    client id, so this replaces a connection of the same identity: probe unused ones only."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    codes: list[int] = []
    client.on_connect = lambda c, u, f, reason, p: codes.append(reason.value)
    client.connect(host, port)
    deadline = time.monotonic() + timeout
    while not codes and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    if not codes:
        raise TimeoutError(f"no CONNACK from {host}:{port}")
    return codes[0]


def wait_accepted(
    host: str, port: int, username: str, password: str, *, timeout: float = 10.0
) -> float:
    """Polls until the broker accepts the credentials; returns the seconds it took."""
    started = time.monotonic()
    while connack(host, port, username, password) != 0:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the broker does not accept {username} after {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started
