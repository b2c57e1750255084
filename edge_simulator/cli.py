"""`python -m edge_simulator`: the flags are the interface; the environment is read here only."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx
import uvloop

from edge_simulator.config import DEFAULT_MIX, Partition, SensorRate, SimulationConfig
from edge_simulator.faults import MALFORMED_REASONS, FaultConfig
from edge_simulator.identities import logins, provision
from edge_simulator.presence import online_bridges
from edge_simulator.registry import register_via_api, register_via_db
from edge_simulator.run import simulate
from edge_simulator.summary import Summary
from mqtt_auth.probe import wait_accepted
from mqtt_auth.store import AuthFiles, IdentityStore
from telemetry.errors import RejectReason
from telemetry.logs import configure_logging, redact_url, unreachable
from telemetry.sensors import SENSOR_TYPES
from telemetry.settings import MqttTarget, ServiceSettings
from telemetry.topics import DEFAULT_MQTT_URL

log = logging.getLogger("edge_simulator")


def _per_sensor(text: str, cast: type[float] | type[int]) -> dict[str, float]:
    """`imu=100,gps=5` -> {"imu": 100.0, "gps": 5.0}."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in SENSOR_TYPES:
            raise argparse.ArgumentTypeError(
                f"expected sensor=value with sensor in {sorted(SENSOR_TYPES)}: {item!r}"
            )
        out[name] = cast(value)
    return out


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a ratio is within 0..1, not {value}")
    return value


def _partition(text: str) -> Partition:
    index, _, count = text.partition("/")
    try:
        return Partition(int(index), int(count))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n: {text!r}") from exc


def _start_ts(text: str) -> int:
    """Epoch milliseconds, or RFC 3339 with a time zone."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start-ts needs a time zone: {text!r}")
    return int(dt.timestamp() * 1000)


def _reasons(text: str) -> tuple[RejectReason, ...]:
    try:
        return tuple(RejectReason(r.strip()) for r in text.split(",") if r.strip())
    except ValueError as exc:
        names = ", ".join(MALFORMED_REASONS)
        raise argparse.ArgumentTypeError(f"{exc}; the simulator can provoke: {names}") from exc


class SimulatorSettings(ServiceSettings):
    """The simulator's environment: the shared settings and the key for --api-url."""

    robosense_api_key: str | None = None


def build_parser(env: SimulatorSettings) -> argparse.ArgumentParser:
    """The flags; the settings (`MQTT_URL`, `DATABASE_URL`, `ROBOSENSE_API_KEY`) give defaults."""
    mix = ",".join(f"{k}={v.rate_hz:g}" for k, v in DEFAULT_MIX.items())
    batches = ",".join(f"{k}={v.batch}" for k, v in DEFAULT_MIX.items())
    p = argparse.ArgumentParser(
        prog="python -m edge_simulator",
        description="A simulated robot fleet publishing readings over MQTT (docs/simulator.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fleet = p.add_argument_group("fleet")
    fleet.add_argument("--robots", type=int, default=10, help="robots in the whole fleet")
    fleet.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of readings; 0: until stopped (Ctrl-C, SIGTERM), in real time only",
    )
    fleet.add_argument("--seed", type=int, default=0, help="same seed, same stream")
    fleet.add_argument("--robot-prefix", default="sim", help="robot ids are PREFIX-0000 ...")
    fleet.add_argument(
        "--partition", type=_partition, default=Partition(), help="run slice i of n of the fleet"
    )
    fleet.add_argument(
        "--robots-per-connection",
        type=int,
        default=1,
        help="robots sharing one MQTT connection (its Last Will covers the first one only)",
    )
    fleet.add_argument(
        "--connects-in-flight",
        type=int,
        default=25,
        help="connects this process has in flight at a time; keep partitions times this under the "
        "broker's listen backlog (Mosquitto: 100)",
    )
    signals = p.add_argument_group("signals")
    signals.add_argument(
        "--sensors",
        default=",".join(DEFAULT_MIX),
        help="sensor types each robot has",
    )
    signals.add_argument("--rate", default="", help=f"Hz per robot, overriding {mix}")
    signals.add_argument("--batch", default="", help=f"readings per message, overriding {batches}")
    signals.add_argument(
        "--start-ts",
        type=_start_ts,
        default=None,
        help="ts of the first readings (epoch ms or RFC 3339); default: when publishing starts, "
        "or with --flat-out a minute before now minus the duration",
    )
    signals.add_argument(
        "--flat-out", action="store_true", help="publish as fast as possible, not in real time"
    )
    mqtt = p.add_argument_group("mqtt")
    mqtt.add_argument(
        "--mqtt-url",
        default=env.mqtt_url,
        help="mqtt://[user:pass@]host:port (env MQTT_URL); for a cluster, its nodes "
        "comma-separated: connections spread over them and move on when theirs goes away",
    )
    mqtt.add_argument(
        "--mqtt-secret-file",
        type=Path,
        default=None,
        help="each connection its own identity, its password derived from this secret "
        "(docs/simulator.md, Credentials)",
    )
    mqtt.add_argument(
        "--provision-mqtt",
        type=Path,
        default=None,
        metavar="DIR",
        help="first add the fleet's identities to the broker's identity directory "
        "(needs --mqtt-secret-file; the broker on this machine)",
    )
    mqtt.add_argument(
        "--mosquitto-pid-file",
        type=Path,
        default=None,
        help="with --provision-mqtt: signal this broker to reload",
    )
    mqtt.add_argument("--qos", type=int, choices=(0, 1), default=1)
    mqtt.add_argument("--client-prefix", default="edge-sim", help="MQTT client ids start so")
    mqtt.add_argument(
        "--window", type=int, default=1000, help="unacknowledged QoS 1 messages per connection"
    )
    reg = p.add_argument_group("registration")
    reg.add_argument("--api-url", default=None, help="register robots with POST {URL}/api/robots")
    reg.add_argument(
        "--api-key",
        default=env.robosense_api_key,
        help="for --api-url: a key with the registry scope (env ROBOSENSE_API_KEY)",
    )
    reg.add_argument(
        "--api-key-file", type=Path, default=None, help="for --api-url: read the key from a file"
    )
    reg.add_argument(
        "--register-db", action="store_true", help="register robots in the robots table directly"
    )
    reg.add_argument(
        "--database-url",
        default=env.database_url,
        help="for --register-db (env DATABASE_URL)",
    )
    f = p.add_argument_group("faults (ratios 0..1)")
    f.add_argument("--duplicate", type=_ratio, default=0.0, help="valid messages sent twice")
    f.add_argument(
        "--out-of-order", type=_ratio, default=0.0, help="messages sent after later ones"
    )
    f.add_argument("--late", type=_ratio, default=0.0, help="messages held back")
    f.add_argument("--late-max", type=float, default=30.0, help="seconds a late message waits")
    f.add_argument("--malformed", type=_ratio, default=0.0, help="malformed messages added")
    f.add_argument(
        "--malformed-reasons",
        type=_reasons,
        default=MALFORMED_REASONS,
        help="refusal reasons to provoke (comma-separated)",
    )
    f.add_argument("--skew", type=_ratio, default=0.0, help="robots whose clock is off")
    f.add_argument("--skew-max", type=float, default=30.0, help="seconds, within the window")
    f.add_argument(
        "--skew-out", type=_ratio, default=0.0, help="robots whose clock is off by 30 days"
    )
    f.add_argument("--drop", type=_ratio, default=0.0, help="connections that drop once, uncleanly")
    f.add_argument("--drop-down", type=float, default=2.0, help="seconds a dropped robot is away")
    out = p.add_argument_group("output")
    out.add_argument("--summary", type=Path, default=None, help="write the summary as JSON here")
    out.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace, *, now_ms: int) -> SimulationConfig:
    sensors = [s.strip() for s in args.sensors.split(",") if s.strip()]
    unknown = set(sensors) - SENSOR_TYPES
    if unknown:
        raise ValueError(f"unknown sensor types {sorted(unknown)}")
    rates = _per_sensor(args.rate, float)
    batches = _per_sensor(args.batch, int)
    mix = {
        s: SensorRate(
            rates.get(s, DEFAULT_MIX[s].rate_hz), int(batches.get(s, DEFAULT_MIX[s].batch))
        )
        for s in sensors
    }
    first, *others = args.mqtt_url.split(",")
    mqtt = MqttTarget(first)
    failover = tuple((t.host, t.port) for t in map(MqttTarget, others))
    if args.provision_mqtt and not args.mqtt_secret_file:
        raise ValueError("--provision-mqtt needs --mqtt-secret-file")
    secret = args.mqtt_secret_file.read_text().strip() if args.mqtt_secret_file else None
    start = args.start_ts
    if start is None and args.flat_out:
        start = now_ms - int(args.duration * 1000) - 60_000
        start -= start % 1000
    return SimulationConfig(
        robots=args.robots,
        duration_s=args.duration,
        start_ts_ms=start,
        seed=args.seed,
        mix=mix,
        robot_prefix=args.robot_prefix,
        partition=args.partition,
        robots_per_connection=args.robots_per_connection,
        connects_in_flight=args.connects_in_flight,
        qos=args.qos,
        flat_out=args.flat_out,
        faults=FaultConfig(
            duplicate=args.duplicate,
            out_of_order=args.out_of_order,
            late=args.late,
            late_max_s=args.late_max,
            malformed=args.malformed,
            malformed_reasons=args.malformed_reasons,
            skew=args.skew,
            skew_max_s=args.skew_max,
            skew_out=args.skew_out,
            drop=args.drop,
            drop_down_s=args.drop_down,
        ),
        mqtt_host=mqtt.host,
        mqtt_port=mqtt.port,
        mqtt_failover=failover,
        mqtt_username=mqtt.username,
        mqtt_password=mqtt.password,
        mqtt_secret=secret,
        window=args.window,
    )


async def _main(args: argparse.Namespace, config: SimulationConfig) -> Summary:
    robot_ids = config.fleet_ids()
    if args.provision_mqtt:
        store = IdentityStore(AuthFiles(args.provision_mqtt, pid_file=args.mosquitto_pid_file))
        count = await asyncio.to_thread(provision, store=store, config=config)
        username, password = logins(config)[0]
        assert username is not None and password is not None
        took = await asyncio.to_thread(
            wait_accepted, config.mqtt_host, config.mqtt_port, username, password
        )
        log.info("provisioned %d MQTT identities; the broker took them in %.2f s", count, took)
    if args.api_url:
        key = args.api_key_file.read_text().strip() if args.api_key_file else args.api_key
        headers = {"X-API-Key": key} if key else {}
        async with httpx.AsyncClient(
            base_url=args.api_url, timeout=10.0, headers=headers
        ) as client:
            reg = await register_via_api(client=client, robot_ids=robot_ids)
        log.info("registered through the API: %d new, %d existing", reg.created, reg.existing)
    if args.register_db:
        reg = await register_via_db(database_url=args.database_url, robot_ids=robot_ids)
        log.info("registered in the database: %d new, %d existing", reg.created, reg.existing)
    bridges = await _bridges(args, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        log.warning("stopping: flushing what was published (Ctrl-C again to abort)")
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    summary = await simulate(config=config, client_prefix=args.client_prefix, stop=stop)
    if not bridges and not await _online(config):
        log.warning(
            "NO ROBOSENSE BRIDGE was connected to %s during this run: nothing it published "
            "was stored",
            _shown(args.mqtt_url),
            extra=unreachable(args.mqtt_url.split(",")[0]),
        )
    return summary


def _shown(urls: str) -> str:
    """--mqtt-url for a log line: each node's URL without its password."""
    return ",".join(redact_url(u) for u in urls.split(","))


async def _online(config: SimulationConfig) -> list[str]:
    # The first connection's identity reads the markers; the fleet is not connected during
    # the check, so the broker (client id = username) takes nothing over.
    username, password = logins(config)[0]
    return await online_bridges(
        host=config.mqtt_host, port=config.mqtt_port, username=username, password=password
    )


async def _bridges(args: argparse.Namespace, config: SimulationConfig) -> list[str]:
    """The bridges connected to the broker; says loudly when there is none."""
    bridges = await _online(config)
    if bridges:
        log.info("bridges connected to the broker: %s", ", ".join(bridges))
    else:
        log.warning(
            "NO ROBOSENSE BRIDGE is connected to %s: what the fleet publishes there is not "
            "stored unless a bridge connects. scripts/run's broker listens on %s; a machine's "
            "own broker (usually port 1883) is not ours",
            _shown(args.mqtt_url),
            DEFAULT_MQTT_URL,
            extra=unreachable(args.mqtt_url.split(",")[0]),
        )
    return bridges


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(SimulatorSettings()).parse_args(argv)
    configure_logging(level=args.log_level, process="edge_simulator")
    now_ms = int(time.time() * 1000)
    try:
        config = config_from_args(args, now_ms=now_ms)
        config.check_time_window(now_ms=now_ms)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = uvloop.run(_main(args, config))
    except OSError as exc:
        first = args.mqtt_url.split(",")[0]
        log.error("cannot reach the MQTT broker", extra=unreachable(first, exc))  # noqa: TRY400 - the cause is in the line
        return 1
    # The file first: stdout may be a pipe that is gone (`scripts/run | tee`, then Ctrl-C).
    if args.summary:
        summary.write(args.summary)
    with contextlib.suppress(BrokenPipeError):
        summary.print()
    return 1 if summary.unacknowledged else 0
