"""docker-compose.yml, mosquitto.conf and the migrate step as a first `docker compose up`
needs them (Docker itself is not on the test machines: the file is checked against the
compose-spec schema and for what a first start depends on)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML

from harness.services import ROOT, free_port
from telemetry.settings import ServiceSettings
from telemetry.topics import DEFAULT_MQTT_URL
from tests.conftest import HARNESS

COMPOSE = ROOT / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return doc


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_broker_port_everywhere() -> None:
    listener = re.search(r"^listener (\d+)$", (ROOT / "mosquitto.conf").read_text(), re.M)
    assert listener is not None
    port = int(listener.group(1))
    assert urlsplit(DEFAULT_MQTT_URL).port == port
    services = _compose()["services"]
    assert services["mosquitto"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    # The bridge's MQTT_URL (with its password) is written by the mqtt-auth service.
    assert f"@mosquitto:{port}\\n" in "\n".join(services["mqtt-auth"]["command"])
    assert f"mqtt://mosquitto:{port}" in services["simulator"]["command"]
    run = (ROOT / "scripts" / "run").read_text()
    assert f"MQTT_PORT=${{MQTT_PORT:-{port}}}" in run


def test_first_start_dependencies() -> None:
    services = _compose()["services"]
    # Over TCP: during the image's init the server listens on its socket only.
    assert "-h 127.0.0.1" in services["postgres"]["healthcheck"]["test"][1]
    command = services["migrate"]["command"]
    assert (
        command[command.index("--wait") + 1] and float(command[command.index("--wait") + 1]) >= 60
    )
    # Published on loopback only, the metrics port too (the README shows its URL).
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["bridge"]["ports"] == ["127.0.0.1:9108:9108"]
    assert services["bridge"]["environment"]["METRICS_HOST"] == "0.0.0.0"


def test_cluster_profile_has_a_redis_cluster_the_settings_can_reach() -> None:
    compose = _compose()
    services = compose["services"]
    nodes = [f"redis-node-{i}" for i in (1, 2, 3)]
    for node in nodes:
        assert services[node]["profiles"] == ["cluster"]
        command = services[node]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
    create = services["redis-cluster-create"]
    assert create["profiles"] == ["cluster"]
    assert set(create["depends_on"]) == set(nodes)
    script = "\n".join(create["command"])
    assert "--cluster create" in script and all(node in script for node in nodes)
    # What the cluster profile's processes merge into their environment: settings they read.
    env = compose["x-redis-cluster-env"]
    settings = ServiceSettings(**{k.lower(): v for k, v in env.items()})
    assert settings.redis_cluster
    assert settings.redis_counter_shards == len(nodes)
    assert urlsplit(settings.redis_url).hostname in nodes


def test_cluster_profile_runs_three_nats_nodes_and_three_bridges_on_their_stream() -> None:
    services = _compose()["services"]
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    nodes = {f"nats-{i}" for i in (1, 2, 3)}
    bridges = {f"nats-bridge-{i}" for i in (1, 2, 3)}
    assert nodes | bridges | {"nats-conf", "nats-setup"} <= cluster
    # Each node its own config (written by `python -m mqtt_auth nats-conf`), store and port.
    assert {services[n]["command"][-1] for n in nodes} == {f"/nats/{n}.conf" for n in nodes}
    assert len({services[n]["volumes"][1] for n in nodes}) == 3
    assert len({services[n]["ports"][0] for n in nodes}) == 3
    for name in bridges:
        bridge = services[name]
        assert bridge["environment"]["BRIDGE_SOURCE"] == "nats"
        assert bridge["environment"]["BRIDGE_CLIENT_ID"] == name
        assert f"/nats/clients/{name}.env" in bridge["command"][-1]
        assert bridge["depends_on"]["nats-setup"]["condition"] == "service_completed_successfully"
        # Counting into the profile's Redis Cluster, as its other processes do.
        assert bridge["environment"]["REDIS_CLUSTER"] == "true"
    assert "nats-conf --out /nats" in services["nats-conf"]["command"][-1]


class _LateForwarder:
    """Forwards a port to PostgreSQL, from some seconds on: a database that is still starting."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.port = free_port()
        self.target = target
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self._server = server
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        # The acceptor sees the flag within its 0.2 s accept timeout; then the socket can go.
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
        if self._server is not None:
            self._server.close()


def test_migrate_waits_for_a_database_that_comes_up_late(database_url: str) -> None:
    target = urlsplit(HARNESS.postgres_url)
    late = _LateForwarder((target.hostname or "127.0.0.1", target.port or 5432))
    name = urlsplit(database_url).path
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{late.port}{name}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "db", "migrate", "--wait", "60"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        assert proc.poll() is None, "migrate gave up while told to wait"
        late.open()
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        late.close()
    assert proc.returncode == 0, stderr
    assert "waiting for PostgreSQL" in stderr and '"database migrated"' in stderr


def test_the_edge_profile_runs_a_site_broker_bridged_to_ours() -> None:
    services = _compose()["services"]
    for name in ("edge-config", "site-broker", "site-simulator"):
        assert services[name]["profiles"] == ["edge"]
    listener = re.search(r"^listener (\d+)$", (ROOT / "edge" / "mosquitto.conf").read_text(), re.M)
    assert listener is not None
    port = listener.group(1)
    assert f"mqtt://site-broker:{port}" in services["site-simulator"]["command"]
    assert services["site-broker"]["ports"] == [f"127.0.0.1:1885:{port}"]
    config = "\n".join(services["edge-config"]["command"])
    assert "--cloud mosquitto:1884" in config and "add site site-1" in config


def test_the_live_service_has_an_identity_of_its_own() -> None:
    services = _compose()["services"]
    assert "/auth/clients/live.env" in " ".join(services["live"]["command"])
    # Made by the one-shot mqtt-auth service with the `live` role (publishes fleet/# only).
    assert "add live live" in "\n".join(services["mqtt-auth"]["command"])
    assert "bridge" in services["live"]["depends_on"]
    # The site identities in the same directory say which robots are behind a site.
    assert services["live"]["environment"]["MQTT_AUTH_DIR"] == "/auth"
    assert "mqtt-auth:/auth:ro" in services["live"]["volumes"]
