"""A site broker bridged to a cloud broker through a WAN link a test can cut (docs/edge.md).

The link is a TCP proxy (Debian's `socat`) between the site broker's bridge and the cloud
broker: stopping it closes the bridge's connection and refuses new ones, as a dropped uplink
does; starting it on the same port restores the link.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.site import SiteBroker, render_site_conf
from harness.services import Mosquitto, ServiceProcess, free_port, wait_for_port
from harness.spawn import spawn_logged
from mqtt_auth.identities import Identity
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.store import AuthFiles, IdentityStore
from telemetry.topics import SITES_FILTER


class TcpProxy(ServiceProcess):
    """socat forwarding a port of its own to `target_port` (one process per connection)."""

    log_name = "socat.log"

    def __init__(self, *, workdir: Path, target_port: int, port: int | None = None) -> None:
        super().__init__(workdir=workdir, port=port)
        self.target_port = target_port
        self.cuts = 0

    def command(self) -> list[str]:
        return [
            shutil.which("socat") or "/usr/bin/socat",
            f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork",
            f"TCP:127.0.0.1:{self.target_port}",
        ]

    def cut(self) -> None:
        """Ends the proxy and every connection through it (its forked children are in its
        process group); proves nothing listens any more."""
        assert self.proc is not None
        os.killpg(self.proc.pid, 9)
        self.proc.wait(timeout=10)
        self.proc = None
        self.cuts += 1
        assert not self.listening(), "the WAN link still answers after the cut"

    def start(self) -> None:
        # A process group of its own, so that a cut ends the connections' children too.
        self.proc = spawn_logged(
            self.command(), self.workdir / self.log_name, start_new_session=True
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cut()

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False


class SiteMosquitto(ServiceProcess):
    """A site broker rendered from edge/mosquitto.conf, with its own identity store (the
    site's robots), bridged to `cloud` (through `via_port`, e.g. a TcpProxy) as `site_id`,
    whose identity at the cloud broker it makes: a site allowed for `robots`."""

    log_name = "mosquitto-site.log"

    def __init__(
        self,
        *,
        workdir: Path,
        cloud: Mosquitto,
        site_id: str,
        robots: list[str],
        via_port: int | None = None,
        port: int | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        super().__init__(workdir=workdir, port=port or free_port())
        self.site_id = site_id
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.auth = AuthFiles(workdir / "auth", pid_file=workdir / "mosquitto.pid")
        self.identities = IdentityStore(self.auth)
        self.identities.render()
        self.passwords: dict[str, str] = {}
        site_password = cloud.add(Identity.site(site_id, None, robots))
        self.site = SiteBroker(
            site_id=site_id,
            cloud_host="127.0.0.1",
            cloud_port=via_port or cloud.port,
            site_password=site_password,
            port=self.port,
            bind="127.0.0.1",
            data_dir=self.data_dir,
            auth_dir=self.auth.directory,
            pid_file=self.auth.pid_file,
            run_as_root=os.geteuid() == 0,
        )
        self.conf = workdir / "mosquitto.conf"
        text = render_site_conf(self.site)
        # A test's own limits (a small queue), replacing the option's line of the template.
        for option, value in (overrides or {}).items():
            text, n = re.subn(rf"^{option} .*$", f"{option} {value}", text, flags=re.M)
            assert n == 1, f"{option} is not in edge/mosquitto.conf"
        self.conf.write_text(text)
        self.conf.chmod(0o600)

    def add_robot(self, robot_id: str) -> str:
        password = new_password()
        self.identities.put(Identity.robot(robot_id, hash_password(password)))
        self.passwords[robot_id] = password
        return password

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)]


class SiteWatch:
    """An operator at the cloud broker following every site's topics (sites/#): the last
    payload of each topic and when each arrived."""

    def __init__(self, cloud: Mosquitto, username: str) -> None:
        self.latest: dict[str, bytes] = {}
        self.history: list[tuple[float, str, bytes]] = []
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(username, cloud.passwords[username])
        self.client.on_connect = lambda c, *_: c.subscribe(SITES_FILTER, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", cloud.port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, msg: Any) -> None:
        self.latest[msg.topic] = msg.payload
        self.history.append((time.time(), msg.topic, msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
