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
from telemetry.topics import NATS_MQTT_STREAM

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
                    # The shared consumer, on NATS's own $MQTT_msgs (bridge.nats).
                    f"$JS.API.CONSUMER.INFO.{NATS_MQTT_STREAM}.{consumer}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{NATS_MQTT_STREAM}.{consumer}",
                    f"$JS.ACK.{NATS_MQTT_STREAM}.{consumer}.>",
                    # The short-lived, unnamed consumer that replays the last statuses: it
                    # can create consumers that read the stream, not delete or change one.
                    f"$JS.API.CONSUMER.CREATE.{stream}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
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


CLIENT_PORT, CLUSTER_PORT, MQTT_PORT, MONITOR_PORT = 4222, 6222, 1883, 8222


def write_cluster_dir(
    out: Path,
    identities: Sequence[Identity],
    *,
    nodes: Sequence[str],
    fleet_secret: str | None,
    replicas: int,
) -> list[str]:
    """What `python -m mqtt_auth nats-conf` writes for a cluster whose nodes are reachable by
    these host names on the standard ports: `<node>.conf` each, `auth.conf`, and for each
    bridge and the admin `clients/<name>.env` holding its NATS_URLS. Robots' and gateways'
    passwords derive from the fleet secret (as the simulator's); the bridges' and the
    admin's are made once and kept in `secrets.json`. Returns the files written."""
    from mqtt_auth.passwords import derive_password, new_password

    (out / "clients").mkdir(parents=True, exist_ok=True)
    kept_file = out / "secrets.json"
    kept: dict[str, str] = json.loads(kept_file.read_text()) if kept_file.exists() else {}
    secrets: dict[str, str] = {}
    for i in identities:
        if i.role in (Role.ROBOT, Role.GATEWAY):
            if fleet_secret is not None:
                secrets[i.username] = derive_password(fleet_secret, i.username)
        else:
            secrets[i.username] = kept.setdefault(i.username, new_password())
    admin = kept.setdefault(ADMIN_USERNAME, new_password())
    written = [_write_secret(kept_file, json.dumps(kept, indent=1))]
    written.append(
        _write_secret(out / "auth.conf", render_auth(identities, secrets, admin_secret=admin))
    )
    peers = [(n, CLUSTER_PORT) for n in nodes]
    for name in nodes:
        path = out / f"{name}.conf"
        path.write_text(
            render_node(
                name=name,
                host="0.0.0.0",
                ports=NodePorts(CLIENT_PORT, CLUSTER_PORT, MQTT_PORT, MONITOR_PORT),
                peers=peers,
                store_dir="/data",
                replicas=replicas,
            )
        )
        written.append(str(path))
    for username in [ADMIN_USERNAME, *(i.username for i in identities if i.role is Role.BRIDGE)]:
        password = admin if username == ADMIN_USERNAME else secrets[username]
        urls = ",".join(f"nats://{username}:{password}@{n}:{CLIENT_PORT}" for n in nodes)
        written.append(_write_secret(out / "clients" / f"{username}.env", f"NATS_URLS={urls}\n"))
    return written


def _write_secret(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)
