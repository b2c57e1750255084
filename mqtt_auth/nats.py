"""The same identities on a NATS cluster: each node's config and its users (docs/nats.md).

The permissions follow the Mosquitto ACLs (mqtt_auth/identities.py) on NATS subjects, which
the MQTT listener maps from topics (`robots/r1/status` is `robots.r1.status`): a robot
publishes only under its own id, a gateway under its robots' ids, an operator reads; a bridge
reads the stream only through the durable consumer (it may fetch and acknowledge, nothing
else), and the admin identity (nats-setup) manages streams and consumers.

Mosquitto's password hashes cannot be used by NATS (PBKDF2 vs bcrypt), so the users' secrets
are given here: plain passwords (the harness), or bcrypt hashes (`$2a$...`) that NATS checks
as such. The file is written 0600.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from mqtt_auth.identities import ALL_ROBOTS, Identity, Role

ROOT = Path(__file__).resolve().parents[1]
NODE_TEMPLATE = ROOT / "nats" / "cluster.conf"
ACCOUNT = "ROBOSENSE"
ADMIN_USERNAME = "nats-admin"


def _subject_level(robot: str) -> str:
    return "*" if robot == ALL_ROBOTS else robot


def permissions(identity: Identity, *, stream: str, consumer: str) -> dict[str, object]:
    """NATS publish/subscribe permissions matching the identity's Mosquitto ACL block."""
    presence = "robosense.bridges.*"
    if identity.role is Role.ROBOT:
        return {
            "publish": {"allow": [f"robots.{identity.username}.>"]},
            "subscribe": {"allow": [presence]},
        }
    if identity.role is Role.GATEWAY:
        return {
            "publish": {"allow": [f"robots.{_subject_level(r)}.>" for r in identity.robots]},
            "subscribe": {"allow": [presence]},
        }
    if identity.role is Role.BRIDGE:
        return {
            "publish": {
                "allow": [
                    f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                    f"$JS.ACK.{stream}.{consumer}.>",
                ]
            },
            "subscribe": {"allow": ["_INBOX.>"]},
        }
    return {"publish": {"deny": [">"]}, "subscribe": {"allow": ["robots.>", "fleet.>"]}}


def render_auth(
    identities: Sequence[Identity],
    secrets: Mapping[str, str],
    *,
    admin_secret: str,
    stream: str = "ROBOSENSE",
    consumer: str = "bridges",
) -> str:
    """auth.conf: one account with JetStream, a user per identity that has a secret here."""
    users: list[dict[str, object]] = [
        {
            "user": ADMIN_USERNAME,
            "password": admin_secret,
            "permissions": {
                "publish": {"allow": ["$JS.API.>"]},
                "subscribe": {"allow": ["_INBOX.>"]},
            },
        }
    ]
    users += [
        {
            "user": i.username,
            "password": secrets[i.username],
            "permissions": permissions(i, stream=stream, consumer=consumer),
        }
        for i in identities
        if i.username in secrets
    ]
    # NATS's config format reads JSON values as they are.
    body = ",\n".join(f"      {json.dumps(u)}" for u in users)
    return (
        "# Written by mqtt_auth.nats from the MQTT identities; edits here are overwritten.\n"
        f"accounts {{\n  {ACCOUNT} {{\n    jetstream: enabled\n"
        f"    users: [\n{body}\n    ]\n  }}\n}}\n"
    )


@dataclass(frozen=True, slots=True)
class NodePorts:
    client: int
    cluster: int
    mqtt: int
    monitor: int


def render_node(
    *,
    name: str,
    host: str,
    ports: NodePorts,
    peers: Sequence[tuple[str, int]],
    store_dir: Path | str,
    replicas: int,
    max_file_store: str = "20GB",
) -> str:
    """One node's config from nats/cluster.conf; `peers` are every node's (host, cluster port),
    its own included (NATS ignores a route to itself)."""
    routes = "\n".join(f"    nats-route://{h}:{p}" for h, p in peers)
    return Template(NODE_TEMPLATE.read_text()).substitute(
        name=name,
        host=host,
        client_port=ports.client,
        cluster_port=ports.cluster,
        mqtt_port=ports.mqtt,
        monitor_port=ports.monitor,
        store_dir=str(store_dir),
        routes=routes,
        replicas=replicas,
        max_file_store=max_file_store,
    )
