"""A lean MQTT 3.1.1 publisher speaking the wire protocol directly, for load generation.

Why not paho or mosquitto_pub: a paho publisher manages ~5-15k QoS 1 messages/s per process
(Python per-message bookkeeping), and `mosquitto_pub -l` 2.0.11 exits on end of input while
QoS 1 messages are still queued (measured: 69k of 200k lines delivered), so it cannot give exact
counts. This one builds PUBLISH packets in chunks, writes each chunk with one syscall and only
counts PUBACKs, so one process publishes well over 50k messages/s and the publisher is not what a
benchmark measures. It speaks just enough MQTT for that: CONNECT, PUBLISH (QoS 0/1), PUBACK,
PINGREQ (a QoS 0 run ends with one: its PINGRESP proves the broker read every PUBLISH before it).

Each reading's `ts` is the time it was put on the wire (RFC 3339, microseconds, unique per
process), so the database row itself says when it was sent: latency needs no side channel.

Run as `python -m loadtest.wire_publisher --port P ...`; it prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import uvloop

from edge_simulator.config import Partition, SimulationConfig
from edge_simulator.identities import logins
from loadtest.settings import ClientSettings
from mqtt_auth.identities import Identity
from telemetry.mqtt import publish_packet, remaining_length

_CONNACK, _PUBACK, _PINGRESP = 0x20, 0x40, 0xD0
# Constant sensor values: the benchmark measures transport and storage, not the signal.
_IMU_DATA = b'{"accel":{"x":0.12,"y":-0.03,"z":9.81},"gyro":{"x":0.001,"y":0.002,"z":-0.003}}'
_CHUNK_MESSAGES = 256  # messages built and written per syscall
_PACE_S = 0.002  # a paced publisher's smallest step


def _string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(
    *,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    keepalive_s: int = 60,
) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string(b"MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big")
    body += _string(client_id.encode())
    if username is not None:
        body += _string(username.encode())
    if password is not None:
        body += _string(password.encode())
    return b"\x10" + remaining_length(len(body)) + body


class _Clock:
    """Unique, increasing RFC 3339 timestamps near the wall clock (microsecond resolution)."""

    def __init__(self) -> None:
        self._last_us = 0
        self._second = -1
        self._prefix = b""

    def next(self) -> bytes:
        us = max(int(time.time() * 1_000_000), self._last_us + 1)
        self._last_us = us
        second, micro = divmod(us, 1_000_000)
        if second != self._second:  # strftime once a second, not once a reading
            self._second = second
            self._prefix = (
                datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.").encode()
            )
        return b"%s%06dZ" % (self._prefix, micro)


class _Schedule:
    """When a paced publisher's messages are due. It writes what 2 ms of schedule
    (`_PACE_S`) holds at a time: waking for every message or two cost the publisher ~35 µs of
    CPU per message at 10k msgs/s (a write and a loop turn each), more than the bridge spends
    on it, on the same two cores."""

    def __init__(self, *, msg_rate: float, messages: int) -> None:
        self.msg_rate = msg_rate
        self.messages = messages
        self.tick = max(1, int(msg_rate * _PACE_S))
        self._t0 = time.monotonic()

    def due(self, sent: int) -> tuple[int, float]:
        """Messages due now, past `sent` (the schedule's, not capped at the end); or 0 and the
        seconds until a tick's worth is."""
        elapsed = time.monotonic() - self._t0
        due = int(elapsed * self.msg_rate) + 1 - sent
        if due < min(self.tick, self.messages - sent):
            return 0, (sent + self.tick) / self.msg_rate - elapsed
        return due, 0.0


def reading_bytes(*, ts: bytes, seq: int) -> bytes:
    return b'{"ts":"%s","seq":%d,"data":%s}' % (ts, seq, _IMU_DATA)


def message_bytes(clock: _Clock, *, seq: int, readings: int, batched: bool) -> bytes:
    """A message of `readings` readings numbered from `seq`: a bare reading, or a batch."""
    if not batched:
        return reading_bytes(ts=clock.next(), seq=seq)
    return b'{"readings":[%s]}' % b",".join(
        [reading_bytes(ts=clock.next(), seq=seq + j) for j in range(readings)]
    )


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.connected = asyncio.Event()
        self.acked = 0
        self.ack_waiter: asyncio.Event = asyncio.Event()
        self.pong = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost: BaseException | None = None
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end, acks = 0, len(buf), 0
        while end - pos >= 2:
            kind = buf[pos] & 0xF0
            length, multiplier, i, complete = 0, 1, pos + 1, False
            while i < end:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                if not byte & 0x80:
                    complete = True
                    break
            if not complete or i + length > end:
                break
            if kind == _PUBACK:
                acks += 1
            elif kind == _CONNACK:
                if buf[i + 1] != 0:
                    self.lost = ConnectionError(f"CONNACK refused: {buf[i + 1]}")
                self.connected.set()
            elif kind == _PINGRESP:
                self.pong.set()
            pos = i + length
        del buf[:pos]
        if acks:
            self.acked += acks
            self.ack_waiter.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionError("broker closed the connection")
        self.closed.set()
        self.connected.set()
        self.ack_waiter.set()
        self.pong.set()
        self.writable.set()


@dataclass(frozen=True, slots=True)
class PublisherResult:
    index: int
    qos: int
    messages: int
    readings: int
    acked: int  # PUBACKs (QoS 1); at QoS 0, messages the broker read before our PINGREQ
    started_at: float  # epoch seconds of the first PUBLISH
    written_at: float  # the last PUBLISH handed to the kernel
    done_at: float  # the last PUBACK (QoS 1) or the PINGRESP (QoS 0)
    target_readings_per_s: float
    max_behind_s: float  # how far it fell behind its schedule (0 when flat out)

    @property
    def readings_per_s(self) -> float:
        return self.readings / max(self.done_at - self.started_at, 1e-9)


async def publish(  # noqa: PLR0915 - one hot loop, kept in one piece on purpose
    *,
    port: int,
    index: int,
    robots: list[str],
    readings: int,
    per_message: int,
    qos: int,
    rate: float,
    window: int,
    start_at: float,
    username: str | None = None,
    password: str | None = None,
) -> PublisherResult:
    """Publishes `readings` IMU readings round-robin over `robots`, `per_message` to a message.

    rate: readings/s for this process, 0 for flat out. window: unacknowledged QoS 1 messages.
    """
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Protocol, "127.0.0.1", port)
    transport.set_write_buffer_limits(high=4 << 20)
    transport.write(
        connect_packet(
            client_id=f"bench-pub-{index}-{time.time_ns()}", username=username, password=password
        )
    )
    await proto.connected.wait()
    if proto.lost:
        raise proto.lost
    topics = [f"robots/{r}/sensors/imu".encode() for r in robots]
    seqs = [0] * len(robots)
    clock = _Clock()
    messages = -(-readings // per_message)
    msg_rate = rate / per_message if rate else 0.0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    sent = left = 0
    left = readings
    packet_id = 0
    max_behind = 0.0
    t0 = time.time()
    schedule = _Schedule(msg_rate=msg_rate, messages=messages) if msg_rate else None
    while sent < messages:
        if proto.lost:
            raise proto.lost
        room = window - (sent - proto.acked) if qos else _CHUNK_MESSAGES
        if room <= 0:
            proto.ack_waiter.clear()
            await proto.ack_waiter.wait()
            continue
        if not proto.writable.is_set():
            await proto.writable.wait()
        n = min(room, _CHUNK_MESSAGES, messages - sent)
        if schedule:
            due, wait_s = schedule.due(sent)
            if not due:
                await asyncio.sleep(wait_s)
                continue
            if due > n:
                max_behind = max(max_behind, (due - n) / msg_rate)
            n = min(n, due)
        chunk = []
        for _ in range(n):
            r = sent % len(robots)
            k = min(per_message, left)
            seq = seqs[r]
            payload = message_bytes(clock, seq=seq, readings=k, batched=per_message > 1)
            seqs[r] = seq + k
            left -= k
            packet_id = packet_id % 65535 + 1
            chunk.append(publish_packet(topics[r], payload, qos=qos, packet_id=packet_id))
            sent += 1
        transport.write(b"".join(chunk))
        if not msg_rate:
            await asyncio.sleep(0)  # let PUBACKs in
    written_at = time.time()
    if qos:
        while proto.acked < messages and not proto.lost:
            proto.ack_waiter.clear()
            await proto.ack_waiter.wait()
    else:
        transport.write(b"\xc0\x00")
        await proto.pong.wait()
    if proto.lost and not proto.closed.is_set():
        raise proto.lost
    done_at = time.time()
    transport.write(b"\xe0\x00")
    transport.close()
    return PublisherResult(
        index=index,
        qos=qos,
        messages=messages,
        readings=readings,
        acked=proto.acked if qos else messages,
        started_at=t0,
        written_at=written_at,
        done_at=done_at,
        target_readings_per_s=rate,
        max_behind_s=max_behind,
    )


# A fleet: each robot its own connection and identity (username = robot id, as a robot of
# edge_simulator's fleet; passwords derived from one secret), a process holding a partition of
# it, as the simulator's `--partition i/n` does. Where the publishers above are gateways
# (one connection for many robots, for rate), this is for what connections cost: the connect
# storm of a whole fleet and a broker holding thousands of them.


def fleet_config(
    *, robots: int, prefix: str, secret: str, partition: Partition
) -> SimulationConfig:
    """The simulator's fleet of `robots` robots (ids PREFIX-0000 ...), one connection each;
    `edge_simulator.identities` provisions and logs them in."""
    return SimulationConfig(
        robots=robots,
        duration_s=60.0,  # unused: only the fleet's ids and logins are taken from it
        robot_prefix=prefix,
        partition=partition,
        mqtt_secret=secret,
    )


@dataclass(frozen=True, slots=True)
class StormResult:
    index: int
    connections: int
    first_connect_at: float  # epoch seconds: the first TCP connect started
    last_connack_at: float  # the last CONNACK arrived
    connect_ms: list[float]  # each connection's TCP connect to its CONNACK
    cpu_s: float  # this process's CPU for the storm


@dataclass(frozen=True, slots=True)
class _Connection:
    transport: asyncio.Transport
    proto: _Protocol


async def _connect_one(
    loop: asyncio.AbstractEventLoop, port: int, login: tuple[str, str], keepalive_s: int
) -> tuple[_Connection, float, float]:
    started = time.time()
    transport, proto = await loop.create_connection(_Protocol, "127.0.0.1", port)
    username, password = login
    transport.write(
        connect_packet(
            client_id=username, username=username, password=password, keepalive_s=keepalive_s
        )
    )
    await proto.connected.wait()
    if proto.lost:
        transport.close()
        raise proto.lost
    return _Connection(transport, proto), started, time.time()


async def connect_fleet(
    *,
    port: int,
    logins: list[tuple[str, str]],
    connect_at: float,
    keepalive_s: int,
    index: int,
    chunk: int = 0,
) -> tuple[list[_Connection], StormResult]:
    """Every login's connection at once, from `connect_at` (epoch s) on, until all CONNACKs;
    or `chunk` at a time, each chunk once the one before has its CONNACKs (edge_simulator's
    way: it connects 200 at a time, for the broker's accept backlog)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, connect_at - time.time()))
    cpu0 = time.process_time()
    step = chunk or len(logins)
    done = []
    for i in range(0, len(logins), step):
        done += await asyncio.gather(
            *(_connect_one(loop, port, lg, keepalive_s) for lg in logins[i : i + step])
        )
    return [c for c, _, _ in done], StormResult(
        index=index,
        connections=len(done),
        first_connect_at=min(s for _, s, _ in done),
        last_connack_at=max(e for _, _, e in done),
        connect_ms=[round((e - s) * 1000, 3) for _, s, e in done],
        cpu_s=time.process_time() - cpu0,
    )


async def publish_fleet(
    conns: list[_Connection],
    *,
    robots: list[str],
    index: int,
    readings: int,
    per_message: int,
    qos: int,
    rate: float,
    start_at: float,
) -> PublisherResult:
    """`readings` IMU readings at `rate` readings/s (this process's), message k on robot
    k mod len(robots)'s own connection, so every robot publishes its share of the rate."""
    topics = [f"robots/{r}/sensors/imu".encode() for r in robots]
    seqs = [0] * len(robots)
    sent_on = [0] * len(robots)
    clock = _Clock()
    messages = -(-readings // per_message)
    msg_rate = rate / per_message
    await asyncio.sleep(max(0.0, start_at - time.time()))
    sent, left, packet_id, max_behind = 0, readings, 0, 0.0
    t0 = time.time()
    schedule = _Schedule(msg_rate=msg_rate, messages=messages)
    while sent < messages:
        due, wait_s = schedule.due(sent)
        if not due:
            await asyncio.sleep(wait_s)
            continue
        due = min(due, messages - sent)
        max_behind = max(max_behind, (due - schedule.tick) / msg_rate)
        for _ in range(due):
            r = sent % len(robots)
            conn = conns[r]
            if conn.proto.lost:
                raise conn.proto.lost
            k = min(per_message, left)
            payload = message_bytes(clock, seq=seqs[r], readings=k, batched=per_message > 1)
            seqs[r] += k
            left -= k
            packet_id = packet_id % 65535 + 1
            conn.transport.write(
                publish_packet(topic=topics[r], payload=payload, qos=qos, packet_id=packet_id)
            )
            sent_on[r] += 1
            sent += 1
    written_at = time.time()
    for conn, n in zip(conns, sent_on, strict=True):
        if not qos:
            conn.transport.write(b"\xc0\x00")
            await conn.proto.pong.wait()
        while conn.proto.acked < n and not conn.proto.lost:
            conn.proto.ack_waiter.clear()
            await conn.proto.ack_waiter.wait()
        if conn.proto.lost:
            raise conn.proto.lost
    done_at = time.time()
    for conn in conns:
        conn.transport.write(b"\xe0\x00")
        conn.transport.close()
    return PublisherResult(
        index=index,
        qos=qos,
        messages=messages,
        readings=readings,
        acked=sum(c.proto.acked for c in conns) if qos else messages,
        started_at=t0,
        written_at=written_at,
        done_at=done_at,
        target_readings_per_s=rate,
        max_behind_s=max_behind,
    )


async def _fleet_main(a: argparse.Namespace, secret: str) -> None:
    """The fleet partition's process: connects, prints its StormResult, waits for a line with
    the publishing's start time on stdin, publishes, prints its PublisherResult and CPU."""
    index, count = (int(x) for x in a.partition.split("/"))
    config = fleet_config(
        robots=a.fleet, prefix=a.robot_prefix, secret=secret, partition=Partition(index, count)
    )
    creds = [(u, p) for u, p in logins(config) if u is not None and p is not None]
    conns, storm = await connect_fleet(
        port=a.port,
        logins=creds,
        connect_at=a.start_at,
        keepalive_s=a.keepalive,
        index=index,
        chunk=a.connect_chunk,
    )
    _emit(asdict(storm))
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = time.process_time()
    result = await publish_fleet(
        conns,
        robots=config.fleet_ids(),
        index=index,
        readings=a.readings,
        per_message=a.per_message,
        qos=a.qos,
        rate=a.rate,
        start_at=float(line),
    )
    _emit({"result": asdict(result), "cpu_s": time.process_time() - cpu0})


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(data) + b"\n")
    sys.stdout.buffer.flush()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.wire_publisher")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--robots", help="comma-separated robot ids (a gateway's)")
    p.add_argument("--readings", type=int, required=True)
    p.add_argument("--per-message", type=int, default=1)
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    p.add_argument("--rate", type=float, default=0.0, help="readings/s; 0 = flat out")
    p.add_argument("--window", type=int, default=2000, help="QoS 1 messages in flight")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start at")
    p.add_argument("--username", default=None, help="the password is in env MQTT_PASSWORD")
    fleet = p.add_argument_group(
        "a fleet partition: each robot its own connection and identity, instead of --robots"
    )
    fleet.add_argument("--fleet", type=int, help="robots in the whole fleet")
    fleet.add_argument("--partition", default="0/1", help="this process's slice i/n")
    fleet.add_argument("--robot-prefix", default="fleet", help="robot ids are PREFIX-0000 ...")
    fleet.add_argument("--keepalive", type=int, default=120, help="MQTT keepalive, seconds")
    fleet.add_argument(
        "--connect-chunk", type=int, default=0, help="connections at a time (0: all at once)"
    )
    a = p.parse_args()
    settings = ClientSettings()
    if a.fleet:
        if not settings.mqtt_secret:
            p.error("--fleet: the robots' passwords derive from env MQTT_SECRET")
        uvloop.run(_fleet_main(a, settings.mqtt_secret))
        return
    if not a.robots:
        p.error("--robots or --fleet")
    result = uvloop.run(
        publish(
            port=a.port,
            index=a.index,
            robots=a.robots.split(","),
            readings=a.readings,
            per_message=a.per_message,
            qos=a.qos,
            rate=a.rate,
            window=a.window,
            start_at=a.start_at,
            username=a.username,
            password=settings.mqtt_password,
        )
    )
    sys.stdout.buffer.write(orjson.dumps(asdict(result)) + b"\n")


if __name__ == "__main__":
    main()


def robot_ids(*, publishers: int, robots_per_publisher: int) -> list[list[str]]:
    return [[f"bench-{i}-{j}" for j in range(robots_per_publisher)] for i in range(publishers)]


def publisher_identities(robots: list[list[str]]) -> list[Identity]:
    """One gateway per publisher process, allowed exactly its robots (passwords set later)."""
    return [Identity.gateway(f"bench-gw-{i}", None, group) for i, group in enumerate(robots)]


async def run_publishers(
    *,
    port: int,
    robots: list[list[str]],
    readings: int,
    per_message: int,
    qos: int,
    rate: float,
    window: int = 2000,
    logins: list[tuple[str, str]] | None = None,
    more_ports: list[int] | None = None,
) -> list[PublisherResult]:
    """Runs one publisher process per robot group, all starting together; splits the work.

    logins: (username, password) per group, an identity allowed to publish for its robots.
    more_ports: a cluster's other nodes; publisher i connects to node i mod n."""
    ports = [port, *(more_ports or [])]
    n = len(robots)
    share = readings // n // per_message * per_message  # whole messages per process
    start_at = time.time() + 0.5  # time for the interpreters to start and connect
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadtest.wire_publisher",
            f"--port={ports[i % len(ports)]}",
            f"--index={i}",
            f"--robots={','.join(group)}",
            f"--readings={share}",
            f"--per-message={per_message}",
            f"--qos={qos}",
            f"--rate={rate / n}",
            f"--window={window}",
            f"--start-at={start_at}",
            *([f"--username={logins[i][0]}"] if logins else []),
            env={**os.environ, "MQTT_PASSWORD": logins[i][1]} if logins else None,
            stdout=asyncio.subprocess.PIPE,
        )
        for i, group in enumerate(robots)
    ]
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    results = []
    for proc, (out, _) in zip(procs, outs, strict=True):
        if proc.returncode:
            raise RuntimeError(f"publisher exited with {proc.returncode}")
        results.append(PublisherResult(**orjson.loads(out)))
    return results


# A partition's StormResult is one line with a time per connection: ~10 bytes each.
_LINE_LIMIT = 16 << 20


class FleetPublishers:
    """A fleet of `robots` robots split over `partitions` publisher processes (the simulator's
    partitions), each robot its own connection and identity; see `fleet_config`.

    `connect()` starts the processes and returns once every robot has its CONNACK (the
    storm: all at once, or `connect_chunk` at a time per process); `publish()` then has them
    publish `readings` at `rate` readings/s in total, each robot its share, and returns once
    every PUBACK is in."""

    def __init__(
        self,
        *,
        port: int,
        robots: int,
        partitions: int,
        prefix: str,
        secret: str,
        readings: int,
        rate: float,
        per_message: int = 10,
        qos: int = 1,
        keepalive_s: int = 120,
        connect_chunk: int = 0,
    ) -> None:
        self.port, self.robots, self.partitions = port, robots, partitions
        self.connect_chunk = connect_chunk
        self.prefix, self.secret = prefix, secret
        self.per_message, self.qos, self.keepalive_s = per_message, qos, keepalive_s
        messages = readings // per_message
        # Whole messages per partition and a rate in proportion to its robots: every robot
        # publishes the same share, whatever the split.
        self.shares: list[tuple[int, float]] = []
        for i in range(partitions):
            lo, hi = Partition(i, partitions).bounds(robots)
            self.shares.append(
                (messages * (hi - lo) // robots * per_message, rate * (hi - lo) / robots)
            )
        self.procs: list[asyncio.subprocess.Process] = []

    async def connect(self, *, lead_s: float = 2.0) -> list[StormResult]:
        """`lead_s`: time for the interpreters to start before the storm, all at once."""
        connect_at = time.time() + lead_s
        for i, (readings, rate) in enumerate(self.shares):
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "loadtest.wire_publisher",
                    f"--port={self.port}",
                    f"--fleet={self.robots}",
                    f"--partition={i}/{self.partitions}",
                    f"--robot-prefix={self.prefix}",
                    f"--keepalive={self.keepalive_s}",
                    f"--connect-chunk={self.connect_chunk}",
                    f"--readings={readings}",
                    f"--per-message={self.per_message}",
                    f"--qos={self.qos}",
                    f"--rate={rate}",
                    f"--start-at={connect_at}",
                    env={**os.environ, "MQTT_SECRET": self.secret},
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=_LINE_LIMIT,
                )
            )
        lines = await asyncio.gather(*(self._line(p) for p in self.procs))
        return [StormResult(**line) for line in lines]

    async def publish(self, *, lead_s: float = 0.5) -> list[tuple[PublisherResult, float]]:
        """Each partition's result and its CPU seconds while publishing."""
        start_at = time.time() + lead_s
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at}\n".encode())
            await proc.stdin.drain()
        lines = await asyncio.gather(*(self._line(p) for p in self.procs))
        for proc in self.procs:
            if await proc.wait():
                raise RuntimeError(f"fleet publisher exited with {proc.returncode}")
        return [(PublisherResult(**line["result"]), line["cpu_s"]) for line in lines]

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()

    @staticmethod
    async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet publisher exited with {await proc.wait()}")
        data: dict[str, Any] = orjson.loads(line)
        return data
