"""Live-stream benchmark: many Server-Sent-Events clients on one API worker.

    python -m loadtest.live_stream                                  # 200 clients, 100 robots
    python -m loadtest.live_stream --clients 200 --robots 1000 --watch 1   # detail views

It starts a private Mosquitto and `python -m api` (one worker, its live subscriber on
fleet/#) on a scratch database, opens `--clients` streams, and publishes, as the `live`
service would, one summary per robot every 1/`--rate-hz` s (a burst per round) for
`--duration` s after `--warmup` s. Each client watches every robot (`--watch 0`, the fleet
table) or `--watch` robots of its own (detail views). It measures:
- memory: the API's RSS before the clients, with them connected and idle, and at the end
  of the run (per client: the difference over the client count);
- delivered: summaries received per second (all clients, and per client) against what they
  asked for, and what the server told them they missed (`dropped`);
- latency: from the publish call to the event's arrival at a client (one clock: both ends
  run in this process), p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import paho.mqtt.client as paho
import uvloop
from paho.mqtt.enums import CallbackAPIVersion

from api.keys import generate_key
from harness.metrics import metric_total
from harness.procfs import cpu_seconds, rss_bytes
from harness.services import ROOT, Mosquitto, wait_for_port
from harness.settings import BenchSettings
from loadtest import report
from loadtest.live_stream_clients import ClientProcesses
from loadtest.rest import percentiles
from loadtest.scratch import scratch_counters, scratch_database
from mqtt_auth.identities import Identity, Role
from telemetry.live import RobotState, RobotSummary, SensorLatest, encode, robot_summary_topic

API_IDENTITY = "api-live-bench"
WRITER = "live-bench"
ADMIN_KEY = generate_key().token


@contextlib.contextmanager
def api_process(
    *, port: int, dsn: str, redis_url: str, prefix: str, mqtt_url: str, clients: int, log: Path
) -> Iterator[int]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "API_PORT": str(port),
        "API_WORKERS": "1",
        "API_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "MQTT_URL": mqtt_url,
        "LIVE_MAX_CLIENTS": str(clients + 10),
        # Each of `clients` connections is one stream; the edge's cap is per worker too.
        "MAX_CONNECTIONS": str(clients + 100),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        wait_for_port(port, timeout=60)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(robot_id: str, at_s: float) -> bytes:
    at = int(at_s * 1000)
    return encode(
        RobotSummary(
            robot_id=robot_id,
            at=at,
            state=RobotState.ONLINE,
            last_seen=at,
            rate_hz=13.2,
            sensors={
                "gps": SensorLatest(at, {"lat": 48.137, "lon": 11.575}),
                "battery": SensorLatest(at, {"level": 81.5, "voltage": 24.1}),
                "imu": SensorLatest(
                    at, {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0, "y": 0, "z": 0}}
                ),
                "lidar": SensorLatest(at, {"distance": 3.5, "angle": 45.0}),
                # The publish time at full resolution, for the latency (one clock: this process).
                "bench": SensorLatest(at, {"t_pub": at_s}),
            },
            battery_percent=81.5,
            gaps_total={"gps": 0, "imu": 0},
            gaps_new=0,
            rejected_new=0,
            active_alerts=[],
        )
    )


class Publisher:
    """Publishes the summaries as the live service would, from paho's thread (QoS 1, so the
    broker's acknowledgements count what it took)."""

    def __init__(self, port: int, password: str) -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.username_pw_set(WRITER, password)
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.acked += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def publish_rounds(
    publisher: Publisher, robots: list[str], rate_hz: float, stop: asyncio.Event
) -> int:
    published = 0
    next_round = time.monotonic()
    while not stop.is_set():
        for r in robots:
            publisher.client.publish(
                robot_summary_topic(r), summary(r, time.time()), qos=1, retain=True
            )
        published += len(robots)
        next_round += 1 / rate_hz
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
    return published


async def run(args: argparse.Namespace, workdir: Path, servers: BenchSettings) -> dict[str, Any]:
    robots = [f"robot-{i:04d}" for i in range(args.robots)]
    broker = Mosquitto(workdir=workdir / "mosquitto", port=args.mqtt_port)
    broker.add(Identity(API_IDENTITY, Role.API, None))
    broker.add(Identity(WRITER, Role.LIVE, None))
    with broker:
        async with (
            scratch_database(servers, label="live") as dsn,
            scratch_counters(servers, label="live") as ctr,
        ):
            with api_process(
                port=args.api_port,
                dsn=dsn,
                redis_url=servers.redis_url,
                prefix=ctr.prefix,
                mqtt_url=broker.url_for(API_IDENTITY),
                clients=args.clients,
                log=workdir / "api.log",
            ) as pid:
                return await measure(args, broker, pid, robots)


async def measure(
    args: argparse.Namespace, broker: Mosquitto, pid: int, robots: list[str]
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{args.api_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        token = (await client.post("/api/live/token", headers={"X-API-Key": ADMIN_KEY})).json()[
            "token"
        ]
    await asyncio.sleep(2)  # the subscriber's first connect
    rss_before = rss_bytes(pid) / 2**20
    queries = []
    watched: list[int] = []
    for k in range(args.clients):
        params = [("token", token)]
        if args.watch:
            mine = [robots[(k * args.watch + j) % len(robots)] for j in range(args.watch)]
            params += [("robot_id", r) for r in mine]
        watched.append(args.watch or len(robots))
        queries.append(urlencode(params))
    stop = asyncio.Event()
    received0 = metric_total(args.api_port, "robosense_api_live_received_total")
    with ClientProcesses(
        port=args.api_port, queries=queries, processes=args.client_processes, latency="t_pub"
    ) as clients:
        await asyncio.sleep(2)
        rss_idle = rss_bytes(pid) / 2**20
        publisher = Publisher(broker.port, broker.passwords[WRITER])
        try:
            publishing = asyncio.create_task(publish_rounds(publisher, robots, args.rate_hz, stop))
            await asyncio.sleep(args.warmup)
            cpu0 = cpu_seconds(pid)
            load = os.getloadavg()[0]
            clients.measuring.set()
            await asyncio.sleep(args.duration)
            clients.measuring.clear()
            cpu1 = cpu_seconds(pid)
            rss_end = rss_bytes(pid) / 2**20
            stop.set()
            published = await publishing
            # What is on its way arrives, or is superseded and told, within a few seconds.
            await asyncio.sleep(args.settle)
        finally:
            publisher.close()
        stats = clients.stop()
    received = metric_total(args.api_port, "robosense_api_live_received_total") - received0
    superseded = metric_total(args.api_port, "robosense_api_live_superseded_total")
    latencies = [x for s in stats for x in s.latencies]
    window_delivered = sum(s.window_summaries for s in stats)
    asked = sum(w * args.rate_hz for w in watched)
    rounds = published // len(robots)
    # Every client watches from before the first round: it should get, or be told it missed,
    # each round's summary of each robot it watches.
    expected = sum(w * rounds for w in watched)
    delivered = sum(s.summaries for s in stats)
    told = sum(s.missed for s in stats)
    return {
        "clients": args.clients,
        "client_processes": args.client_processes,
        "robots": args.robots,
        "watch": args.watch or "all",
        "rate_hz": args.rate_hz,
        "duration_s": args.duration,
        "load_average_during": round(load, 2),
        "rss_before_mib": rss_before,
        "rss_idle_mib": rss_idle,
        "rss_end_mib": rss_end,
        "kib_per_idle_client": (rss_idle - rss_before) * 1024 / args.clients,
        "kib_per_client_at_end": (rss_end - rss_before) * 1024 / args.clients,
        "asked_per_s": asked,
        "delivered_per_s": window_delivered / args.duration,
        "delivered_share": window_delivered / args.duration / asked if asked else 0.0,
        "missed_per_s": sum(s.window_missed for s in stats) / args.duration,
        "per_client_delivered_per_s": window_delivered / args.duration / args.clients,
        "api_cpu_share": (cpu1 - cpu0) / args.duration,
        "latency": percentiles(latencies),
        # The stages, over the whole run (warm-up included): broker -> subscriber -> hub ->
        # clients. Summaries the broker took (QoS 1, acknowledged) that the subscriber never
        # got were dropped by the broker without telling anyone.
        "stages": {
            "published": published,
            "broker_acked": publisher.acked,
            "subscriber_received": int(received),
            "superseded_in_subscriber": int(superseded),
            "to_hub": int(received - superseded),
            "lost_between_broker_and_subscriber": int(publisher.acked - received),
            "client_expected": expected,
            "client_delivered": delivered,
            "client_told_missed": told,
            "client_unaccounted": expected - delivered - told,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.live_stream", description=__doc__)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--robots", type=int, default=100)
    p.add_argument("--watch", type=int, default=0, help="robots per client (0: all)")
    p.add_argument("--rate-hz", type=float, default=1.0, help="summaries per robot per second")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--settle", type=float, default=5.0, help="after the last round, seconds")
    p.add_argument("--client-processes", type=int, default=4)
    p.add_argument("--api-port", type=int, default=21100)
    p.add_argument("--mqtt-port", type=int, default=21101)
    args = p.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    with tempfile.TemporaryDirectory(prefix="rs-live-bench-") as tmp:
        result = uvloop.run(run(args, Path(tmp), BenchSettings()))
    result["machine"] = report.machine()
    result["sustained"] = args.duration >= 60
    columns = [
        "clients",
        "robots",
        "watch",
        "asked_per_s",
        "delivered_per_s",
        "delivered_share",
        "missed_per_s",
        "kib_per_idle_client",
        "kib_per_client_at_end",
        "api_cpu_share",
    ]
    lat = result["latency"]
    table = report.markdown_table([result], columns)
    kind = "Sustained" if result["sustained"] else "SHORT run (< 60 s)"
    load = result["machine"]["load_average_at_start"]
    text = (
        f"{kind}: {args.duration:.0f} s, load average at start {load}\n\n{table}\n"
        f"latency publish -> stream: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
        f"max {lat['max_ms']:.1f} ms; API RSS {result['rss_before_mib']:.1f} MiB before, "
        f"{result['rss_idle_mib']:.1f} idle with clients, {result['rss_end_mib']:.1f} at the end\n"
    )
    st = result["stages"]
    text += (
        f"stages (whole run): published {st['published']}, broker acked {st['broker_acked']}, "
        f"subscriber received {st['subscriber_received']} (lost between broker and "
        f"subscriber: {st['lost_between_broker_and_subscriber']}), superseded in the "
        f"subscriber {st['superseded_in_subscriber']}, to the hub {st['to_hub']}; clients: "
        f"expected {st['client_expected']} = delivered {st['client_delivered']} + told missed "
        f"{st['client_told_missed']} + unaccounted {st['client_unaccounted']}\n"
    )
    print(text)
    print(f"written: {report.write(name='live-stream', data=result, markdown=text)}")


if __name__ == "__main__":
    main()
