"""Where the identity files live, for every process that provisions identities."""

from __future__ import annotations

from pathlib import Path

from mqtt_auth.store import AuthFiles
from telemetry.settings import ServiceSettings


class MqttAuthSettings(ServiceSettings):
    # The directory holding identities.json, passwd and acl: the broker's `password_file` and
    # `acl_file` point into it. Empty: this process does not provision MQTT identities.
    mqtt_auth_dir: str = ""
    # The broker's `pid_file`, to signal it (SIGHUP) after a change. Empty: no signal.
    mosquitto_pid_file: str = ""

    @property
    def files(self) -> AuthFiles | None:
        if not self.mqtt_auth_dir:
            return None
        pid = Path(self.mosquitto_pid_file) if self.mosquitto_pid_file else None
        return AuthFiles(Path(self.mqtt_auth_dir), pid_file=pid)
