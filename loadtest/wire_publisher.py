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

import orjson
import uvloop

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


def reading_bytes(*, ts: bytes, seq: int) -> bytes:
    return b'{"ts":"%s","seq":%d,"data":%s}' % (ts, seq, _IMU_DATA)


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
    # Paced runs write what 2 ms of schedule holds at a time: waking for every message or two
    # cost the publisher ~35 µs of CPU per message at 10k msgs/s (a write and a loop turn
    # each), more than the bridge spends on it, on the same two cores.
    tick = max(1, int(msg_rate * _PACE_S))
    await asyncio.sleep(max(0.0, start_at - time.time()))
    sent = left = 0
    left = readings
    packet_id = 0
    max_behind = 0.0
    t0 = time.time()
    t0_mono = time.monotonic()
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
        if msg_rate:
            elapsed = time.monotonic() - t0_mono
            due = int(elapsed * msg_rate) + 1 - sent
            if due < min(tick, messages - sent):
                await asyncio.sleep((sent + tick) / msg_rate - elapsed)
                continue
            if due > n:
                max_behind = max(max_behind, (due - n) / msg_rate)
            n = min(n, due)
        chunk = []
        for _ in range(n):
            r = sent % len(robots)
            k = min(per_message, left)
            seq = seqs[r]
            if per_message == 1:
                payload = reading_bytes(ts=clock.next(), seq=seq)
            else:
                payload = b'{"readings":[%s]}' % b",".join(
                    [reading_bytes(ts=clock.next(), seq=seq + j) for j in range(k)]
                )
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


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.wire_publisher")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--robots", required=True, help="comma-separated robot ids")
    p.add_argument("--readings", type=int, required=True)
    p.add_argument("--per-message", type=int, default=1)
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    p.add_argument("--rate", type=float, default=0.0, help="readings/s; 0 = flat out")
    p.add_argument("--window", type=int, default=2000, help="QoS 1 messages in flight")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start at")
    p.add_argument("--username", default=None, help="the password is in env MQTT_PASSWORD")
    a = p.parse_args()
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
            password=ClientSettings().mqtt_password,
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
