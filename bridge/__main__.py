"""`python -m bridge` runs the bridge; `python -m bridge rebuild-counters` rebuilds Redis;
`python -m bridge nats-setup` creates or updates the NATS stream and consumer (docs/nats.md)."""

from __future__ import annotations

import argparse
import sys

import uvloop

from bridge.app import nats_setup, rebuild, run
from bridge.settings import BridgeSettings
from telemetry.collector import collect_rarely
from telemetry.logs import configure_logging
from telemetry.topics import NATS_MQTT_STREAM


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bridge", description="MQTT -> PostgreSQL bridge. Settings: environment."
    )
    parser.add_argument(
        "command", nargs="?", default="run", choices=["run", "rebuild-counters", "nats-setup"]
    )
    args = parser.parse_args()
    settings = BridgeSettings()
    sys.setswitchinterval(settings.gil_switch_interval_s)
    collect_rarely(settings.gc_young_threshold)
    configure_logging(level=settings.log_level, process="bridge")
    if args.command == "rebuild-counters":
        groups = uvloop.run(rebuild(settings))
        print(f"rebuilt counters from {groups} (robot, sensor type, minute) groups")
    elif args.command == "nats-setup":
        done = uvloop.run(nats_setup(settings))
        print(
            f"stream {settings.nats_stream} and consumer {settings.nats_consumer} (on "
            f"{NATS_MQTT_STREAM}) {done} (replicas {settings.nats_replicas})"
        )
    else:
        uvloop.run(run(settings))


if __name__ == "__main__":
    main()
