"""The live view's cost and rate: N simulated robots, a bridge, and the live service on or off.

    python -m loadtest.live          # 1,000 robots, a 30 s window, 2 x 300k readings each way
    python -m loadtest.live --robots 200 --window 15 --readings 50000 --repeat 1 --hz 2

Two phases, each on a broker, database and Redis prefix of its own:
1. rate: the simulator publishes in real time (per robot: imu 10 Hz in messages of 10, gps,
   lidar and battery 1 Hz: 13 readings, 4 messages a second); an operator subscribed to
   fleet/# counts the summaries. Figures: raw messages/s into the bridge, summaries/s per
   robot (should be LIVE_SUMMARY_HZ for robots whose state changes every tick), fleet
   summaries/s, and the live service's CPU.
2. cost: lean publishers (loadtest/wire_publisher.py) send readings of as many robots flat out,
   live off and on alternately. Figure: readings committed per second between 10 % and 90 % of
   the total (bridge metric, sampled), each way. (The simulator is not used here: 1,000
   simulated robots are bound by the simulator's own CPU, a few thousand readings/s.)
Runs here are short and the machine is shared: the figures are noisy (BENCHMARKS.md says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
import paho.mqtt.client as paho
import uvloop
from paho.mqtt.enums import CallbackAPIVersion

from harness.bridge import BridgeProcess
from harness.live import LiveProcess
from harness.metrics import metric_total
from harness.procfs import cpu_seconds
from harness.services import ROOT, TEST_OPERATOR, Mosquitto, free_port
from harness.settings import BenchSettings
from loadtest.live_stream import ADMIN_KEY, API_IDENTITY, api_process
from loadtest.live_stream_clients import ClientProcesses, ClientStats
from loadtest.rest import percentiles
from loadtest.scratch import register_robots, scratch_counters, scratch_database
from loadtest.wire_publisher import publisher_identities, robot_ids, run_publishers
from mqtt_auth.identities import Identity, Role
from telemetry.live import FLEET_FILTER, FLEET_SUMMARY_TOPIC

_RATES = "imu=10,gps=1,lidar=1,battery=1"
_BATCH = "imu=10,gps=1,lidar=1,battery=1"
_ROBOTS_PER_CONNECTION = 10


class SummaryCounter:
    """An operator on fleet/# (clean session, QoS 0), counting live (not retained) messages by
    their `at` (when the live service made them: delivery under load comes in bursts)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.robot_summaries: list[float] = []
        # Robots in the newest fleet summary.
        self.fleet_robots = 0
        self.fleet_summaries: list[float] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.username_pw_set(TEST_OPERATOR, broker.passwords[TEST_OPERATOR])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(FLEET_FILTER, 0)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.retain or not message.payload or not message.topic.endswith("/summary"):
            return
        doc = orjson.loads(message.payload)
        at = doc["at"] / 1000
        with self._lock:
            if message.topic == FLEET_SUMMARY_TOPIC:
                self.fleet_summaries.append(at)
                self.fleet_robots = doc["robots"]
            else:
                self.robot_summaries.append(at)

    def between(self, start: float, end: float) -> tuple[int, int]:
        with self._lock:
            robots = sum(1 for t in self.robot_summaries if start <= t < end)
            fleet = sum(1 for t in self.fleet_summaries if start <= t < end)
        return robots, fleet

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(slots=True)
class Stack:
    broker: Mosquitto
    bridge: BridgeProcess
    live: LiveProcess | None
    database_url: str
    workdir: Path
    api_port: int = 0
    api_pid: int | None = None


@contextlib.asynccontextmanager
async def _stack(
    servers: BenchSettings,
    *,
    label: str,
    live_hz: float | None,
    workdir: Path,
    live_nice: int = 10,
    stream_clients: int = 0,
    api_port: int = 0,
) -> AsyncIterator[Stack]:
    async with (
        scratch_database(servers, label=f"live_{label}") as dsn,
        scratch_counters(servers, label=f"live-{label}") as counters,
    ):
        with Mosquitto(workdir=workdir / "mosquitto") as broker:
            broker.add(Identity("bridge", Role.BRIDGE, None))
            broker.add(Identity("live", Role.LIVE, None))
            broker.add(Identity(API_IDENTITY, Role.API, None))
            bridge = BridgeProcess(
                database_url=dsn,
                redis_url=servers.redis_url,
                redis_prefix=counters.prefix,
                mqtt_url=broker.url_for("bridge"),
                log_path=workdir / "bridge.log",
                client_id="bridge",
            )
            bridge.start()
            live = None
            try:
                if live_hz is not None:
                    live = LiveProcess(
                        database_url=dsn,
                        redis_url=servers.redis_url,
                        redis_prefix=counters.prefix,
                        mqtt_url=broker.url_for("live"),
                        log_path=workdir / "live.log",
                        live_summary_hz=str(live_hz),
                        # Robots registered by the simulator are picked up within 2 s.
                        live_registry_refresh_s="2",
                        live_nice=str(live_nice),
                    )
                    live.start()
                with contextlib.ExitStack() as api:
                    api_pid = None
                    if stream_clients:
                        api_pid = api.enter_context(
                            api_process(
                                port=api_port,
                                dsn=dsn,
                                redis_url=servers.redis_url,
                                prefix=counters.prefix,
                                mqtt_url=broker.url_for(API_IDENTITY),
                                clients=stream_clients,
                                log=workdir / "api.log",
                            )
                        )
                    yield Stack(broker, bridge, live, dsn, workdir, api_port, api_pid)
            finally:
                if live is not None:
                    live.stop()
                bridge.stop()


@contextlib.contextmanager
def _simulator(
    stack: Stack, *, robots: int, duration: float, flat_out: bool
) -> Iterator[subprocess.Popen[bytes]]:
    secret = stack.workdir / "fleet-secret"
    secret.write_text(secrets.token_urlsafe(24))
    command = [
        sys.executable,
        "-m",
        "edge_simulator",
        "--robots",
        str(robots),
        "--duration",
        str(duration),
        "--rate",
        _RATES,
        "--batch",
        _BATCH,
        "--robots-per-connection",
        str(_ROBOTS_PER_CONNECTION),
        "--mqtt-url",
        stack.broker.url,
        "--mqtt-secret-file",
        str(secret),
        "--provision-mqtt",
        str(stack.broker.auth.directory),
        "--mosquitto-pid-file",
        str(stack.broker.auth.pid_file),
        "--register-db",
        "--database-url",
        stack.database_url,
        "--log-level",
        "WARNING",
        *(["--flat-out"] if flat_out else []),
    ]
    log = (stack.workdir / "simulator.log").open("ab")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=60)


async def _until(probe: Callable[[], bool], *, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {within_s} s")
        await asyncio.sleep(0.2)


async def rate_phase(
    servers: BenchSettings,
    *,
    robots: int,
    window: float,
    hz: float,
    live_nice: int,
    stream_clients: int = 0,
    api_port: int = 0,
) -> dict[str, Any]:
    """With `stream_clients`: that many live-stream clients on an API worker too, each
    watching 5 robots, and the latency from a reading's publish (its `ts`, stamped by the
    simulator) to its arrival on a stream, at the simulator's steady rate."""
    with tempfile.TemporaryDirectory(prefix="rs-live-rate-") as tmp:
        async with (
            _stack(
                servers,
                label="rate",
                live_hz=hz,
                workdir=Path(tmp),
                live_nice=live_nice,
                stream_clients=stream_clients,
                api_port=api_port or free_port(),
            ) as stack,
            contextlib.AsyncExitStack() as exits,
        ):
            counter = SummaryCounter(stack.broker)
            assert stack.live is not None and stack.live.proc is not None
            live_pid = stack.live.proc.pid
            port = stack.bridge.metrics_port
            try:
                # Until stopped: the window starts once every robot is publishing and known.
                with _simulator(stack, robots=robots, duration=0, flat_out=False):
                    await _until(
                        lambda: counter.fleet_robots == robots,
                        within_s=300,
                        what="the live service sees every robot",
                    )
                    # Every robot has sent a reading since it was registered.
                    await asyncio.sleep(5)
                    clients = None
                    if stream_clients:
                        clients = exits.enter_context(
                            ClientProcesses(
                                port=stack.api_port,
                                queries=_stream_queries(
                                    await _live_token(stack.api_port),
                                    await _robot_ids(stack.database_url),
                                    stream_clients,
                                    5,
                                ),
                                processes=4,
                                latency="ts",
                            )
                        )
                        clients.measuring.set()
                    start = time.time()
                    msgs0 = metric_total(port, "bridge_messages_received_total")
                    cpu0 = cpu_seconds(live_pid)
                    api_cpu0 = cpu_seconds(stack.api_pid) if stack.api_pid else 0.0
                    await asyncio.sleep(window)
                    end = time.time()
                    msgs1 = metric_total(port, "bridge_messages_received_total")
                    cpu1 = cpu_seconds(live_pid)
                    api_cpu1 = cpu_seconds(stack.api_pid) if stack.api_pid else 0.0
                    load = os.getloadavg()[0]
                    stats = clients.stop() if clients is not None else []
            finally:
                counter.close()
            robot_summaries, fleet_summaries = counter.between(start, end)
            span = end - start
            return {
                "robots": robots,
                "live_nice": live_nice,
                "load_average_1m_at_end": round(load, 2),
                "summary_hz_configured": hz,
                "window_s": round(span, 1),
                "raw_messages_per_s": round((msgs1 - msgs0) / span),
                "summaries_per_s": round(robot_summaries / span, 1),
                "summaries_per_robot_per_s": round(robot_summaries / span / robots, 3),
                "fleet_summaries_per_s": round(fleet_summaries / span, 2),
                "live_cpu_percent_of_a_core": round(100 * (cpu1 - cpu0) / span, 1),
                # Each tick publishes one fleet summary.
                "live_cpu_ms_per_tick": round(1000 * (cpu1 - cpu0) / max(1, fleet_summaries), 1),
                "live_cpu_us_per_summary": round(1e6 * (cpu1 - cpu0) / max(1, robot_summaries)),
                **(
                    {
                        "streams": {
                            "clients": stream_clients,
                            "watch": 5,
                            "delivered_per_s": round(
                                sum(s.window_summaries for s in stats) / span, 1
                            ),
                            "missed_per_s": round(sum(s.window_missed for s in stats) / span, 1),
                            "api_cpu_share": round((api_cpu1 - api_cpu0) / span, 3),
                            "latency_reading_publish_to_stream": percentiles(
                                [x for s in stats for x in s.latencies]
                            ),
                        }
                    }
                    if stream_clients
                    else {}
                ),
            }


async def _robot_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["id"] for r in await conn.fetch("SELECT id FROM robots ORDER BY id")]
    finally:
        await conn.close()


async def _live_token(api_port: int) -> str:
    def post() -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/live/token",
            method="POST",
            headers={"X-API-Key": ADMIN_KEY},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            token: str = orjson.loads(r.read())["token"]
            return token

    return await asyncio.to_thread(post)


def _stream_queries(token: str, robots: list[str], clients: int, watch: int) -> list[str]:
    """Each client's query: `watch` robots of its own (detail views), round the fleet."""
    return [
        urlencode(
            [("token", token)]
            + [("robot_id", robots[(k * watch + j) % len(robots)]) for j in range(watch)]
        )
        for k in range(clients)
    ]


async def _ingest_rate(
    stack: Stack,
    *,
    robots: int,
    readings: int,
    stream_clients: int = 0,
    watch: int = 5,
    paced_rate: float = 0.0,
) -> dict[str, Any]:
    """Readings committed per second between 10 % and 90 % of the total, published flat out
    by lean publishers (loadtest/wire_publisher.py: 10 readings a message, QoS 1) for
    `robots` robots, so that the live service has the whole fleet to summarize every tick.
    With `stream_clients`: that many live-stream clients on the API worker, in processes of
    their own, each watching `watch` robots, and the latency from a reading's publish (its
    `ts`, set when it was put on the wire) to its arrival on a stream in a summary."""
    groups = robot_ids(publishers=2, robots_per_publisher=robots // 2)
    logins = [(i.username, stack.broker.add(i)) for i in publisher_identities(groups)]
    conn = await asyncpg.connect(stack.database_url)
    try:
        await register_robots(conn, [r for g in groups for r in g])
    finally:
        await conn.close()
    # The live service reads the registry every 2 s here.
    await asyncio.sleep(3)
    port = stack.bridge.metrics_port
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), metric_total(port, "bridge_readings_inserted_total")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.1)

    everyone = [r for g in groups for r in g]
    clients: ClientProcesses | None = None
    stats: list[ClientStats] = []
    with contextlib.ExitStack() as exits:
        if stream_clients:
            queries = _stream_queries(
                await _live_token(stack.api_port), everyone, stream_clients, watch
            )
            clients = exits.enter_context(
                ClientProcesses(port=stack.api_port, queries=queries, processes=4, latency="ts")
            )
        live_pid = stack.live.proc.pid if stack.live and stack.live.proc else None
        assert stack.bridge.proc is not None
        watched = {"bridge": stack.bridge.proc.pid, "live": live_pid, "api": stack.api_pid}
        cpu0 = {k: cpu_seconds(p) for k, p in watched.items() if p is not None}
        t0 = time.monotonic()
        if clients is not None:
            clients.measuring.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sample())
            pubs = await run_publishers(
                port=stack.broker.port,
                logins=logins,
                robots=groups,
                readings=readings,
                per_message=10,
                qos=1,
                rate=paced_rate,
            )
            published = sum(p.readings for p in pubs)
            await _until(
                lambda: bool(samples) and samples[-1][1] >= published,
                within_s=300,
                what="the bridge stores every reading",
            )
            done.set()
        span = time.monotonic() - t0
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in watched.items() if p is not None}
        load = os.getloadavg()[0]
        if clients is not None:
            clients.measuring.clear()
            stats = clients.stop()
    t10 = next(t for t, n in samples if n >= 0.1 * published)
    t90 = next(t for t, n in samples if n >= 0.9 * published)
    result: dict[str, Any] = {
        "readings": published,
        "readings_per_s": round(0.8 * published / (t90 - t10)),
        "load_average_1m_at_end": round(load, 2),
        "cpu_share_of_a_core": {k: round(v / span, 3) for k, v in cpu.items()},
        "bridge_cpu_ms_per_1k_readings": round(1e6 * cpu["bridge"] / published, 1),
    }
    if stats:
        delivered = sum(s.window_summaries for s in stats)
        result["streams"] = {
            "clients": stream_clients,
            "watch": watch,
            "delivered_per_s": round(delivered / span, 1),
            "missed_per_s": round(sum(s.window_missed for s in stats) / span, 1),
            "latency_reading_publish_to_stream": percentiles(
                [x for s in stats for x in s.latencies]
            ),
        }
    return result


async def cost_phase(
    servers: BenchSettings,
    *,
    robots: int,
    readings: int,
    hz: float,
    repeat: int,
    live_nice: int,
    stream_clients: int,
    api_port: int,
    paced_rate: float = 0.0,
) -> dict[str, Any]:
    """Live off and on (and on with `stream_clients` live-stream clients), alternating,
    `repeat` times each."""
    labels: list[tuple[str, float | None, int]] = [("off", None, 0), ("on", hz, 0)]
    if stream_clients:
        labels.append(("on+streams", hz, stream_clients))
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in labels}
    for _ in range(repeat):
        for label, live_hz, clients in labels:
            with tempfile.TemporaryDirectory(prefix="rs-live-cost-") as tmp:
                async with _stack(
                    servers,
                    label=f"cost_{label.replace('+', '_')}",
                    live_hz=live_hz,
                    workdir=Path(tmp),
                    live_nice=live_nice,
                    stream_clients=clients,
                    api_port=api_port or free_port(),
                ) as stack:
                    result = await _ingest_rate(
                        stack,
                        robots=robots,
                        readings=readings,
                        stream_clients=clients,
                        paced_rate=paced_rate,
                    )
            runs[label].append(result)
            print(json.dumps({"cost_run": label, **result}), flush=True)

    def rates(label: str) -> list[int]:
        return [r["readings_per_s"] for r in runs[label]]

    off = rates("off")
    summary: dict[str, Any] = {
        "robots": robots,
        "readings_per_run": readings,
        "live_nice": live_nice,
        "note": "short runs on a shared 2-core machine: noisy",
        "loads": {k: [r["load_average_1m_at_end"] for r in v] for k, v in runs.items()},
        "runs": runs,
    }
    for label, _, _ in labels[1:]:
        on = rates(label)
        # Each run against the off run just before it (the machine's load drifts).
        pairs = [100 * (b - a) / a for a, b in zip(off, on, strict=True)]
        summary[label] = {
            "readings_per_s": on,
            "off_readings_per_s": off,
            "median_of_pairs_change_percent": round(statistics.median(pairs), 1),
            "pairs_change_percent": [round(p, 1) for p in pairs],
            "change_of_medians_percent": round(
                100 * (statistics.median(on) - statistics.median(off)) / statistics.median(off), 1
            ),
            "live_cpu_share_median": statistics.median(
                r["cpu_share_of_a_core"]["live"] for r in runs[label]
            ),
        }
    return summary


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not args.skip_rate:
        results["rate"] = await rate_phase(
            servers,
            robots=args.robots,
            window=args.window,
            hz=args.hz,
            live_nice=args.live_nice,
            stream_clients=args.stream_clients,
            api_port=args.api_port,
        )
        print(json.dumps({"rate": results["rate"]}), flush=True)
    if not args.skip_cost:
        results["cost"] = await cost_phase(
            servers,
            robots=args.robots,
            readings=args.readings,
            hz=args.hz,
            repeat=args.repeat,
            live_nice=args.live_nice,
            stream_clients=args.stream_clients,
            api_port=args.api_port,
            paced_rate=args.paced_rate,
        )
        print(json.dumps({"cost": results["cost"]}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.live",
        description="Live view benchmark: summary rate with N robots; ingest with live on/off.",
    )
    parser.add_argument("--robots", type=int, default=1000)
    parser.add_argument("--window", type=float, default=30.0, help="rate phase, seconds")
    parser.add_argument(
        "--readings", type=int, default=300_000, help="per ingest run, sent flat out"
    )
    parser.add_argument("--repeat", type=int, default=2, help="ingest runs each way")
    parser.add_argument("--hz", type=float, default=1.0, help="LIVE_SUMMARY_HZ")
    parser.add_argument("--live-nice", type=int, default=10, help="LIVE_NICE")
    parser.add_argument(
        "--stream-clients", type=int, default=0, help="cost: also runs with N live-stream clients"
    )
    parser.add_argument("--api-port", type=int, default=0, help="with --stream-clients (0: free)")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        help="cost: readings/s in all instead of flat out (latency without an ingest backlog)",
    )
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
