"""Which MQTT identity each connection of the fleet uses, and provisioning them.

A connection of one robot is that robot (username = robot id); a connection of several
(`--robots-per-connection`) is a gateway `gw-{first robot}` allowed for exactly its robots.
Passwords derive from one secret (`--mqtt-secret-file`), so the simulator needs no list of
them, and whoever provisions with the same secret (`--provision-mqtt`, or
`python -m mqtt_auth add ... --secret-file`) grants the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_simulator.config import SimulationConfig
from edge_simulator.faults import malformed_robot_ids
from mqtt_auth.identities import Identity
from mqtt_auth.passwords import derive_password, hash_password
from mqtt_auth.store import IdentityStore

Login = tuple[str | None, str | None]


def connection_username(group: Sequence[str]) -> str:
    return group[0] if len(group) == 1 else f"gw-{group[0]}"


def logins(config: SimulationConfig) -> list[Login]:
    """Each connection's (username, password), in the order of `connection_groups()`."""
    groups = config.connection_groups()
    if config.mqtt_secret is not None:
        secret = config.mqtt_secret
        return [(name, derive_password(secret, name)) for name in map(connection_username, groups)]
    return [(config.mqtt_username, config.mqtt_password)] * len(groups)


def identities(config: SimulationConfig) -> list[Identity]:
    """The identities `logins` uses, each allowed what its connection publishes: its robots'
    topics and, when malformed messages are on, the bad ids they are sent under."""
    assert config.mqtt_secret is not None, "identities are derived from a secret"
    out = []
    for group in config.connection_groups():
        name = connection_username(group)
        hashed = hash_password(derive_password(config.mqtt_secret, name))
        extra = [bad for robot in group for bad in malformed_robot_ids(robot, config.faults)]
        if len(group) == 1 and not extra:
            out.append(Identity.robot(name, hashed))
        else:
            out.append(Identity.gateway(name, hashed, [*group, *extra]))
    return out


def provision(*, store: IdentityStore, config: SimulationConfig) -> int:
    """Adds (or re-keys) this run's identities and tells the broker; returns how many."""
    made = identities(config)
    store.put(*made)
    return len(made)
