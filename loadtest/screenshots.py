"""The fleet page against a whole running pipeline, and its screenshots.

    python -m loadtest.screenshots          # docs/fleet-page.png, docs/robot-detail.png
    python -m loadtest.screenshots --out /tmp/shots

Everything is its own, as in the other benchmarks: a scratch database (dropped at the end), a
Redis prefix (deleted), a Mosquitto with our mosquitto.conf on a free port, and real processes:
a bridge, the live service, the API and a simulated fleet (`python -m edge_simulator`) in
which one robot's connection drops for good partway through. Headless Debian Chromium
(`/usr/bin/chromium`, no browser download) opens the page with a read key in its fragment,
as the link `scripts/run` prints. tests/api/test_fleet_page.py drives the same pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import IO

from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright

from harness.bridge import BridgeProcess
from harness.services import ROOT, Mosquitto, free_port
from harness.settings import BenchSettings
from loadtest.scratch import scratch_counters, scratch_database
from mqtt_auth.identities import Identity, Role

CHROMIUM = "/usr/bin/chromium"
# Nothing of the browser's own reaches out (no updates, no sync, no safe browsing lists).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}

# The simulated fleet: with this seed, of 12 robots exactly one connection drops (sim-0002,
# at 20 % of the run, by the simulator's seeded schedule, edge_simulator/schedule.py: 24 s
# into a 120 s run), and it stays away far longer than the run lasts. The run is long enough
# that the rest of the fleet is still online when a page (or a test) looks at the dropped
# robot.
FLEET_ROBOTS = 12
FLEET_SEED = 252
FLEET_DROP = 0.1
FLEET_DURATION_S = 120
FLEET_DROP_DOWN_S = 3600
DROPPED_ROBOT = "sim-0002"
LIVE_TOKEN_TTL_S = 5
ROBOT_PREFIX = "sim"


# The live service's identity and the API subscriber's (issue 13's `live` and `livestream`
# work): spelt by value so that this module loads, and says what is missing, without them.
LIVE_ROLE = "live"
API_ROLE = "api"


def live_view_missing() -> str | None:
    """Why the whole pipeline cannot run here, or None when it can."""
    roles = {role.value for role in Role}
    if LIVE_ROLE not in roles or API_ROLE not in roles or find_spec("live") is None:
        return "needs the live service (python -m live) and the API's live stream"
    return None


class Service:
    """A `python -m <module>` process with its log in a file, stopped (SIGTERM) on exit."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.module = module
        self.args = args
        self.env = env
        self.log = log
        self._log: IO[bytes] = log.open("ab")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=self._log,
        )

    def restart(self) -> None:
        """Stopped (SIGTERM) and started again, as a deployment would."""
        self._end()
        self.proc = self._spawn()

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.module} exited {self.proc.returncode}: {tail}")

    def wait_for_url(self, url: str, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.module}: {url} not answering after {timeout}s")

    def wait_for_log(self, marker: bytes, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if marker in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.module}: no {marker!r} in its log after {timeout}s")

    def _end(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        self._end()
        self._log.close()


@dataclass(frozen=True, slots=True)
class Pipeline:
    api_url: str
    read_key: str
    robot_ids: tuple[str, ...]
    dropped_robot: str
    api: Service

    def restart_api(self) -> None:
        self.api.restart()
        self.api.wait_for_url(f"{self.api_url}/readyz")

    @property
    def page_link(self) -> str:
        """What scripts/run prints: the page with the read key in its fragment."""
        return f"{self.api_url}/#key={self.read_key}"


def create_read_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "api", "keys", "create", "--scope", "read", "--name", "fleet page"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


@contextmanager
def fleet_pipeline(
    *,
    workdir: Path,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    duration_s: float = FLEET_DURATION_S,
) -> Iterator[Pipeline]:
    """Broker, bridge, live service, API and a simulated fleet, on this database and prefix;
    yields once the API answers and the simulator runs. Everything stops on exit."""
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    with ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(workdir=workdir / "mosquitto"))
        broker.add(Identity("bridge", Role.BRIDGE, None))
        bridge = BridgeProcess(
            database_url=database_url,
            redis_prefix=redis_prefix,
            mqtt_url=broker.url_for("bridge"),
            log_path=workdir / "bridge.log",
            client_id="bridge",
        )
        bridge.start(timeout=60)
        stack.callback(bridge.stop)

        broker.add(Identity("live", Role(LIVE_ROLE), None))
        live = Service(
            "live",
            [],
            {**common, "MQTT_URL": broker.url_for("live"), "LOG_LEVEL": "INFO"},
            workdir / "live.log",
        )
        stack.callback(live.stop)
        live.wait_for_log(b'"live ready"')

        api_port = free_port()
        broker.add(Identity("api", Role(API_ROLE), None))
        api_env = {
            **common,
            "API_PORT": str(api_port),
            "MQTT_URL": broker.url_for("api"),
            # Tokens expire long before a page closes: a page must get new ones by itself.
            "LIVE_TOKEN_TTL_S": str(LIVE_TOKEN_TTL_S),
        }
        api = Service("api", [], api_env, workdir / "api.log")
        stack.callback(api.stop)
        api_url = f"http://127.0.0.1:{api_port}"
        api.wait_for_url(f"{api_url}/readyz")

        secret = workdir / "fleet-secret"
        secret.write_text("fleet page secret\n")
        simulator = Service(
            "edge_simulator",
            [
                *("--robots", str(FLEET_ROBOTS), "--seed", str(FLEET_SEED)),
                *("--robot-prefix", ROBOT_PREFIX, "--duration", str(duration_s)),
                *("--drop", str(FLEET_DROP), "--drop-down", str(FLEET_DROP_DOWN_S)),
                *("--mqtt-url", broker.url, "--mqtt-secret-file", str(secret)),
                *("--provision-mqtt", str(broker.auth.directory)),
                *("--mosquitto-pid-file", str(broker.auth.pid_file)),
                *("--register-db", "--database-url", database_url),
            ],
            common,
            workdir / "simulator.log",
        )
        stack.callback(simulator.stop)
        yield Pipeline(
            api_url=api_url,
            read_key=create_read_key(common),
            robot_ids=tuple(f"{ROBOT_PREFIX}-{i:04d}" for i in range(FLEET_ROBOTS)),
            dropped_robot=DROPPED_ROBOT,
            api=api,
        )


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def row(page: Page, robot_id: str, state: str | None = None) -> str:
    """The CSS selector of a robot's row in the fleet table, in a state if given."""
    selector = f'#robots tr[data-robot-id="{robot_id}"]'
    return f'{selector}[data-state="{state}"]' if state else selector


def capture(pipeline: Pipeline, out: Path, *, timeout_s: float = 180.0) -> list[Path]:
    """Opens the page, waits until the dropped robot shows offline with its alert, and saves
    the fleet table, then the dropped robot's detail."""
    out.mkdir(parents=True, exist_ok=True)
    timeout_ms = timeout_s * 1000
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(pipeline.page_link)
        dropped = pipeline.dropped_robot
        page.wait_for_selector(row(page, dropped, "offline"), timeout=timeout_ms)
        page.wait_for_selector(f'#alerts li[data-robot-id="{dropped}"]', timeout=timeout_ms)
        # Reading rates are per full minute: the image shows them once the first has passed.
        page.wait_for_function(
            "!document.querySelector('#robots td.rate').textContent.startsWith('0.0')",
            timeout=timeout_ms,
        )
        fleet = out / "fleet-page.png"
        # The table and the alerts, without the empty page below a small fleet.
        height = page.evaluate("document.querySelector('main').getBoundingClientRect().bottom")
        page.screenshot(
            path=fleet, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
        )
        page.click(row(page, pipeline.robot_ids[0]) + " td.rate")
        page.wait_for_selector("#gps-track", state="visible", timeout=timeout_ms)
        # Enough summaries for the charts to draw lines.
        page.wait_for_function(
            "document.querySelectorAll('#charts canvas.chart').length > 3", timeout=timeout_ms
        )
        time.sleep(5)  # a few more summaries on the charts
        detail = out / "robot-detail.png"
        page.screenshot(path=detail, full_page=True)
    return [fleet, detail]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    args = parser.parse_args()
    servers = BenchSettings()
    missing = live_view_missing()
    if missing:
        sys.exit(f"loadtest.screenshots {missing}")

    def shoot(dsn: str, prefix: str) -> list[Path]:
        workdir = Path(tempfile.mkdtemp(prefix="rs-fleet-page-"))
        # Twice the usual run: the drop comes later (48 s), the rates after a minute.
        with fleet_pipeline(
            workdir=workdir,
            database_url=dsn,
            redis_url=servers.redis_url,
            redis_prefix=prefix,
            duration_s=2 * FLEET_DURATION_S,
        ) as pipeline:
            return capture(pipeline, args.out)

    async def run() -> list[Path]:
        async with (
            scratch_database(servers, label="fleet_page") as dsn,
            scratch_counters(servers, label="fleet-page") as counters,
        ):
            # The processes and the browser are driven synchronously, off the event loop.
            return await asyncio.to_thread(shoot, dsn, counters.prefix)

    for path in asyncio.run(run()):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
