"""The simulator's fleet provisioned on a test broker, as `--provision-mqtt` does."""

from __future__ import annotations

from dataclasses import replace

from edge_simulator.config import SimulationConfig
from edge_simulator.identities import logins, provision
from harness.services import TEST_OPERATOR, Mosquitto
from mqtt_auth.probe import wait_accepted

SECRET = "test-fleet-secret"


def provisioned(config: SimulationConfig, broker: Mosquitto) -> SimulationConfig:
    """`config` with each connection's own identity, which the broker now accepts."""
    config = replace(config, mqtt_secret=SECRET, mqtt_port=broker.port)
    provision(store=broker.identities, config=config)
    if broker.proc is not None:
        username, password = logins(config)[0]
        assert username is not None and password is not None
        wait_accepted("127.0.0.1", broker.port, username, password)
    return config


def operator(broker: Mosquitto) -> dict[str, str]:
    """Credentials of the test operator, who reads every robot's topics."""
    return {"username": TEST_OPERATOR, "password": broker.passwords[TEST_OPERATOR]}
