"""A private NATS cluster for tests and the benchmark: 3 nodes of Debian's nats-server on free
loopback ports, each with its own client, cluster, MQTT and monitoring port and store dir,
configured from nats/cluster.conf with users from the MQTT identities (mqtt_auth.nats)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.services import (
    TEST_OPERATOR,
    TEST_PUBLISHER,
    ServiceProcess,
    free_port,
    wait_for_port,
)
from mqtt_auth.identities import ALL_ROBOTS, Identity, Role
from mqtt_auth.nats import ADMIN_USERNAME, NodePorts, render_auth, render_node
from mqtt_auth.passwords import new_password


class NatsNode(ServiceProcess):
    log_name = "nats.log"

    def __init__(self, *, workdir: Path, name: str, ports: NodePorts) -> None:
        super().__init__(workdir=workdir, port=ports.client)
        self.name = name
        self.ports = ports
        self.conf = workdir / "node.conf"
        self.store_dir = workdir / "store"

    def command(self) -> list[str]:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        return [binary, "-c", str(self.conf)]

    def spawn(self) -> None:
        log = (self.workdir / self.log_name).open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log)

    def wait_up(self) -> None:
        # The MQTT listener opens once JetStream has a meta leader: a lone node of three waits.
        wait_for_port(self.ports.client, timeout=30)
        wait_for_port(self.ports.mqtt, timeout=60)

    def start(self) -> None:
        self.spawn()
        self.wait_up()

    def varz(self, what: str = "varz", **query: str) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"http://127.0.0.1:{self.ports.monitor}/{what}" + (f"?{q}" if q else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data


class NatsCluster:
    """Three nodes; identities (robots, bridges) added before start() are its users."""

    def __init__(self, *, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [
            NatsNode(
                workdir=workdir / f"n{i}",
                name=f"n{i}",
                ports=NodePorts(
                    client=free_port(), cluster=free_port(), mqtt=free_port(), monitor=free_port()
                ),
            )
            for i in range(1, size + 1)
        ]
        self.replicas = 3 if size >= 3 else 1
        self.identities: dict[str, Identity] = {}
        self.passwords: dict[str, str] = {ADMIN_USERNAME: new_password()}
        self.add(Identity.gateway(TEST_PUBLISHER, None, [ALL_ROBOTS]))
        self.add(Identity(TEST_OPERATOR, Role.OPERATOR, None))

    def add(self, identity: Identity) -> str:
        """Adds a user (before start(), or rewrite() and reload() after)."""
        password = self.passwords.get(identity.username) or new_password()
        self.identities[identity.username] = identity
        self.passwords[identity.username] = password
        return password

    def add_robot(self, robot_id: str) -> str:
        return self.add(Identity.robot(robot_id, None))

    def write_configs(self) -> None:
        peers = [("127.0.0.1", n.ports.cluster) for n in self.nodes]
        auth = render_auth(
            list(self.identities.values()),
            self.passwords,
            admin_secret=self.passwords[ADMIN_USERNAME],
        )
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            (node.workdir / "auth.conf").write_text(auth)
            (node.workdir / "auth.conf").chmod(0o600)
            node.conf.write_text(
                render_node(
                    name=node.name,
                    host="127.0.0.1",
                    ports=node.ports,
                    peers=peers,
                    store_dir=node.store_dir,
                    replicas=self.replicas,
                    max_file_store="2GB",
                )
            )

    def start(self) -> None:
        self.write_configs()
        # Each node waits for its peers to form the JetStream meta group: start them together.
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_up()
        self.wait_jetstream_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_jetstream_ready(self, timeout: float = 60.0) -> None:
        """Until every running node knows a meta leader (streams can be created)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready = all(
                    n.varz("jsz").get("meta_cluster", {}).get("leader")
                    for n in self.nodes
                    if n.proc is not None
                )
            except OSError:
                ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader after {timeout}s")
            time.sleep(0.2)

    def url_for(self, username: str, *, nodes: list[NatsNode] | None = None) -> str:
        """NATS_URLS for `username`: every node (or those given)."""
        pw = self.passwords[username]
        return ",".join(
            f"nats://{username}:{pw}@127.0.0.1:{n.ports.client}" for n in (nodes or self.nodes)
        )

    def mqtt_url_for(self, username: str, node: NatsNode) -> str:
        return f"mqtt://{username}:{self.passwords[username]}@127.0.0.1:{node.ports.mqtt}"

    def stream_leader(self, stream: str) -> NatsNode:
        """The node leading the stream's RAFT group now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            data = node.varz("jsz", accounts="true", streams="true")
            for account in data.get("account_details", []):
                for s in account.get("stream_detail", []):
                    if s.get("name") == stream and s.get("cluster", {}).get("leader"):
                        leader = s["cluster"]["leader"]
                        return next(n for n in self.nodes if n.name == leader)
        raise LookupError(f"stream {stream} has no leader")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
