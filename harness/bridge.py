"""The bridge as a real process (`python -m bridge`), for tests that crash and restart it."""

from __future__ import annotations

from pathlib import Path

from harness.metrics import metric_total, samples
from harness.module_process import ModuleProcess
from harness.services import free_port


class BridgeProcess(ModuleProcess):
    module = "bridge"

    def __init__(
        self,
        *,
        database_url: str,
        redis_prefix: str,
        mqtt_url: str,
        log_path: Path,
        client_id: str = "test-bridge",
        **settings: str,
    ) -> None:
        """`settings`: environment variables, by lower-case name; the metrics port is a free
        one unless `metrics_port` is among them (a benchmark held to a port range)."""
        self.metrics_port = int(settings.pop("metrics_port", 0)) or free_port()
        self.client_id = client_id
        super().__init__(
            database_url=database_url,
            redis_prefix=redis_prefix,
            mqtt_url=mqtt_url,
            log_path=log_path,
            **settings,
        )

    def own_env(self) -> dict[str, str]:
        return {"BRIDGE_CLIENT_ID": self.client_id, "METRICS_PORT": str(self.metrics_port)}

    def metric(self, name: str) -> float:
        """The first series of `name`; KeyError when it has none yet."""
        found = samples(self.metrics_port, name)
        if not found:
            raise KeyError(name)
        return found[0]

    def metric_total(self, name: str) -> float:
        """The sum of every series of a metric (all label values); 0 when it has none yet."""
        return metric_total(self.metrics_port, name)
