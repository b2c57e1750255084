"""What a benchmark's client processes are handed through the environment, read once in their
entry point: MQTT_PASSWORD, or MQTT_SECRET for a fleet's derived passwords, by the command that
starts them (so it is on no command line), and ROBOSENSE_API_KEY by the person running Locust."""

from __future__ import annotations

from telemetry.settings import EntryPointSettings


class ClientSettings(EntryPointSettings):
    mqtt_password: str | None = None
    mqtt_secret: str | None = None
    robosense_api_key: str | None = None
