"""What Mosquitto's `autosave_on_changes` would cost: QoS 1 publish rate into a queue.

A persistent session that is subscribed but away (a bridge that is down, or behind) makes the
broker queue every message; each save rewrites the whole database, queue included. Publishes
`--messages` QoS 1 messages (one battery reading each, 1,000 in flight) into such a queue, once
per broker setting, and prints the rate (median of `--runs`).

    .venv/bin/python -m loadtest.autosave --messages 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.publisher import Publisher, battery_messages
from harness.services import TEST_PUBLISHER, Mosquitto
from mqtt_auth.identities import Identity, Role

SETTINGS = {
    "shipped (autosave_interval 10 s)": [],
    "autosave_on_changes, every 1,000 changes": [
        "autosave_on_changes true",
        "autosave_interval 1000",
    ],
    "autosave_on_changes, every 100 changes": ["autosave_on_changes true", "autosave_interval 100"],
    "autosave_on_changes, every change": ["autosave_on_changes true", "autosave_interval 1"],
}


def measure(extra: list[str], messages: int, workdir: Path) -> float:
    broker = Mosquitto(workdir=workdir)
    lines = [
        line for line in broker.conf.read_text().splitlines() if not line.startswith("autosave")
    ]
    broker.conf.write_text("\n".join([*lines, "autosave_interval 10", *extra]) + "\n")
    away_password = broker.add(Identity("away", Role.BRIDGE, None))
    broker.start()
    try:
        away = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="away", clean_session=False
        )
        away.username_pw_set("away", away_password)
        away.connect("127.0.0.1", broker.port)
        away.loop_start()
        away.subscribe("robots/+/sensors/+", 1)
        time.sleep(0.5)
        away.disconnect()
        away.loop_stop()
        batch = battery_messages("r1", messages)
        publisher = Publisher(
            port=broker.port, username=TEST_PUBLISHER, password=broker.passwords[TEST_PUBLISHER]
        )
        began = time.perf_counter()
        publisher.publish_all(batch)
        seconds = time.perf_counter() - began
        publisher.close()
        return messages / seconds
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in SETTINGS.items():
            rates = sorted(
                measure(extra, args.messages, Path(tmp) / f"{len(extra)}-{extra[-1:]}-{k}")
                for k in range(args.runs)
            )
            runs = [round(r) for r in rates]
            print(f"{name:45s} median {rates[len(rates) // 2]:8.0f} msgs/s  runs {runs}")


if __name__ == "__main__":
    main()
