"""Is the fleet page smooth with 1,000 robots? Headless Chromium on the page, fed by the real
API's live stream, with a summary per robot per second published to the broker.

    python -m loadtest.fleet_page                   # 1,000 robots, 60 s
    python -m loadtest.fleet_page --robots 200 --seconds 20

Its own Mosquitto (our mosquitto.conf, a free port), a scratch database and Redis prefix, and
`python -m api` subscribed with the `api` identity. This process plays the live service: it
publishes a RobotSummary per robot per second (retained, as `python -m live` does at
LIVE_SUMMARY_HZ=1) with changing values, so every row changes every second. Chromium
(`/usr/bin/chromium`, software rendering, as the tests run it) keeps the page open, the
table scrolled to the top, while the figures are taken over the window:
- summaries the page received per second (counted in the page, from the stream's events);
- frame intervals (requestAnimationFrame) p50/p95/p99/max, and tasks over 50 ms;
- the browser's main-thread time per second: all tasks, script, layout, style (DevTools
  Performance metrics), and the JS heap at the end.
One run is 60 s of steady state after the whole fleet has appeared (sustained).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.services import Mosquitto, free_port
from harness.settings import BenchSettings
from loadtest.scratch import scratch_counters, scratch_database
from loadtest.screenshots import (
    API_ROLE,
    LIVE_ROLE,
    VIEWPORT,
    Service,
    chromium,
    create_read_key,
)
from mqtt_auth.identities import Identity, Role
from telemetry.live import (
    FLEET_SUMMARY_TOPIC,
    FleetSummary,
    RobotState,
    RobotSummary,
    SensorLatest,
    encode,
    robot_summary_topic,
)

# Counts what the page receives and how its frames go, from before its own script runs.
_PROBE = """
window.__probe = {summaries: 0, missed: 0, long: 0, longest: 0};
const add = EventTarget.prototype.addEventListener;
EventTarget.prototype.addEventListener = function (type, listener, options) {
  if (this instanceof EventSource && (type === "summary" || type === "dropped")) {
    const inner = listener;
    listener = function (event) {
      if (type === "summary") window.__probe.summaries += 1;
      else window.__probe.missed += JSON.parse(event.data).missed;
      return inner.call(this, event);
    };
  }
  return add.call(this, type, listener, options);
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__probe.long += 1;
    window.__probe.longest = Math.max(window.__probe.longest, entry.duration);
  }
}).observe({type: "longtask"});
"""

_FRAMES = """(seconds) => new Promise((resolve) => {
  const intervals = [];
  let last = performance.now();
  const end = last + seconds * 1000;
  function frame(now) {
    intervals.push(now - last);
    last = now;
    if (now < end) requestAnimationFrame(frame); else resolve(intervals);
  }
  requestAnimationFrame(frame);
})"""


def _summary(i: int, robot_id: str, now_ms: int) -> RobotSummary:
    t = now_ms / 1000
    state = RobotState.OFFLINE if i % 97 == 5 else RobotState.ONLINE
    level = 100 - (t / 10 + i) % 100
    sensors = {
        "imu": SensorLatest(
            now_ms,
            {
                "accel": {"x": math.sin(t + i), "y": math.cos(t), "z": 9.81},
                "gyro": {"x": 0.01, "y": 0.02 * math.sin(t), "z": 0.03},
            },
        ),
        "gps": SensorLatest(
            now_ms,
            {"lat": 48.1 + 0.001 * math.sin(t / 30 + i), "lon": 11.5 + 0.001 * math.cos(t / 30)},
        ),
        "lidar": SensorLatest(now_ms, {"distance": 3 + math.sin(t / 3), "angle": (t * 10) % 360}),
        "battery": SensorLatest(now_ms, {"level": level, "voltage": 24.1}),
    }
    return RobotSummary(
        robot_id=robot_id,
        at=now_ms,
        state=state,
        last_seen=now_ms,
        rate_hz=13.0 + (i + int(t)) % 5 / 10,
        sensors=sensors,
        battery_percent=level,
        gaps_total={"imu": (i + int(t)) % 4},
        gaps_new=0,
        rejected_new=0,
        active_alerts=[],
    )


class SummaryPublisher:
    """Plays the live service: every robot's summary once a second, on its own thread."""

    def __init__(self, port: int, username: str, password: str, robot_ids: list[str]) -> None:
        self.robot_ids = robot_ids
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(username, password)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.published = 0

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            now_ms = int(time.time() * 1000)
            for i, robot_id in enumerate(self.robot_ids):
                payload = encode(_summary(i, robot_id, now_ms))
                self.client.publish(robot_summary_topic(robot_id), payload, qos=0, retain=True)
                self.published += 1
            fleet = FleetSummary(
                at=now_ms,
                robots=len(self.robot_ids),
                states={RobotState.ONLINE: len(self.robot_ids)},
                rate_hz=13.0 * len(self.robot_ids),
                gaps_new=0,
                rejected_new=0,
                active_alerts=0,
            )
            self.client.publish(FLEET_SUMMARY_TOPIC, encode(fleet), qos=0, retain=True)
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def __enter__(self) -> SummaryPublisher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    *, database_url: str, redis_url: str, redis_prefix: str, robots: int, seconds: float
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rs-fleet-page-load-"))
    robot_ids = [f"load-{i:04d}" for i in range(robots)]
    common = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    with ExitStack() as stack:
        broker = stack.enter_context(Mosquitto(workdir=workdir / "mosquitto"))
        broker.add(Identity("live", Role(LIVE_ROLE), None))
        broker.add(Identity("api", Role(API_ROLE), None))
        api_port = free_port()
        api = Service(
            "api",
            [],
            {**common, "API_PORT": str(api_port), "MQTT_URL": broker.url_for("api")},
            workdir / "api.log",
        )
        stack.callback(api.stop)
        api_url = f"http://127.0.0.1:{api_port}"
        api.wait_for_url(f"{api_url}/readyz")
        key = create_read_key(common)
        publisher = stack.enter_context(
            SummaryPublisher(broker.port, "live", broker.passwords["live"], robot_ids)
        )
        browser = stack.enter_context(chromium())
        page = browser.new_page(viewport=VIEWPORT)
        page.add_init_script(_PROBE)
        page.goto(f"{api_url}/#key={key}")
        page.wait_for_function(
            f"document.getElementById('shown-count').textContent.startsWith('{robots} of')",
            timeout=120_000,
        )
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")

        def metrics() -> dict[str, float]:
            return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

        before = metrics()
        published_before = publisher.published
        probe_before = page.evaluate("({...window.__probe})")
        frames: list[float] = page.evaluate(_FRAMES, seconds)
        after = metrics()
        published = publisher.published - published_before
        probe_after = page.evaluate("({...window.__probe})")
        elapsed = after["Timestamp"] - before["Timestamp"]

        def per_s(name: str) -> float:
            return round((after[name] - before[name]) / elapsed * 1000, 1)

        return {
            "robots": robots,
            "seconds": round(elapsed, 1),
            "published_per_s": round(published / elapsed, 1),
            "summaries_per_s": round(
                (probe_after["summaries"] - probe_before["summaries"]) / elapsed, 1
            ),
            # Superseded while the page was behind: the stream's `dropped` events.
            "missed_per_s": round((probe_after["missed"] - probe_before["missed"]) / elapsed, 1),
            "frame_ms": {
                "p50": round(statistics.median(frames), 1),
                "p95": round(_percentile(frames, 0.95), 1),
                "p99": round(_percentile(frames, 0.99), 1),
                "max": round(max(frames), 1),
            },
            "frames_per_s": round(len(frames) / elapsed, 1),
            "long_tasks": probe_after["long"] - probe_before["long"],
            "main_thread_ms_per_s": {
                "all_tasks": per_s("TaskDuration"),
                "script": per_s("ScriptDuration"),
                "layout": per_s("LayoutDuration"),
                "style": per_s("RecalcStyleDuration"),
            },
            "js_heap_mb": round(after["JSHeapUsedSize"] / 2**20, 1),
            # The table is virtual: the rows that exist, whatever the fleet's size.
            "table_rows_in_dom": page.locator("#robots tbody tr[data-robot-id]").count(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    servers = BenchSettings()

    async def run() -> dict[str, Any]:
        async with (
            scratch_database(servers, label="fleet_page_load") as dsn,
            scratch_counters(servers, label="fleet-page-load") as counters,
        ):
            return await asyncio.to_thread(
                measure,
                database_url=dsn,
                redis_url=servers.redis_url,
                redis_prefix=counters.prefix,
                robots=args.robots,
                seconds=args.seconds,
            )

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
