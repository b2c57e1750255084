"""A paho-mqtt subscriber that does nothing with what it receives: the Python reference ceiling.

It is set up as the bridge's client is (MQTT 3.1.1, paho's network thread, a shared
subscription), so the gap between it and the bridge is the bridge's own work.
`python -m loadtest.null_subscriber --port P --count N` prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from loadtest.settings import ClientSettings


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.null_subscriber")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--count", type=int, required=True, help="messages to wait for")
    p.add_argument("--topic", default="$share/null/robots/+/sensors/+")
    p.add_argument("--idle-s", type=float, default=5.0, help="give up after this long idle")
    p.add_argument("--username", default=None, help="the password is in env MQTT_PASSWORD")
    a = p.parse_args()

    received = 0
    first_at = last_at = 0.0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal received, first_at, last_at
        last_at = time.time()
        if not received:
            first_at = last_at
        received += 1
        if received >= a.count:
            done.set()

    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"null-sub-{time.time_ns()}",
        protocol=paho.MQTTv311,
    )
    client.max_inflight_messages_set(20_000)
    if a.username:
        client.username_pw_set(a.username, ClientSettings().mqtt_password)
    client.on_message = on_message
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect("127.0.0.1", a.port)
    client.subscribe(a.topic, qos=a.qos)
    client.loop_start()
    subscribed.wait(10)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    seen = -1
    while not done.wait(a.idle_s):
        if received == seen:  # QoS 0 lost some: nothing more is coming
            break
        seen = received
    client.disconnect()
    client.loop_stop()
    sys.stdout.buffer.write(
        orjson.dumps({"received": received, "first_at": first_at, "last_at": last_at}) + b"\n"
    )


if __name__ == "__main__":
    main()
