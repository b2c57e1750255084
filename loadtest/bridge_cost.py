"""CPU per single-reading message on the bridge's own Python path, in process:

    python -m loadtest.bridge_cost [--messages 50000] [--rounds 7] [--profile FILE.html]

The end-to-end figure is `loadtest.ingest`'s bridge CPU per message (the whole process:
paho's socket reads and packet parsing, our callback, decoding, batching, the write and the
acks). This isolates the parts that are ours, on messages that paho parsed for real
(`paho.MQTTMessage`, as its network thread hands them over): the callback that hands a message
to the loop (paho's dispatch `Client._handle_on_message` and `MqttSubscriber._on_message` into an
`Inbox`), and the loop's side (`Inbox.take`
and `BatchBuilder.add`: topic, decode, validation, batching), each in CPU µs per message
(process time, median of `--rounds`), and the PUBACKs of a batch queued on a paho client.
`--profile` writes a pyinstrument profile of the loop's side.

And paho's reading of the socket (`socket_rounds`): the same messages as MQTT PUBLISH packets
written into a socket pair, read by paho's own reads (a recv per type byte, length byte and
body, and a loop turn per packet), by the bridge's client reading 64 KiB chunks with paho
parsing, and by the bridge's client as it runs (chunks, QoS 0/1 PUBLISHes parsed by
`telemetry.mqtt_reader.ReadAheadClient` itself), interleaved; CPU µs per message from the
socket to the callback, counting the writer's side too (the same for all three).
"""

from __future__ import annotations

import argparse
import asyncio
import select
import socket
import statistics
import threading
import time
from datetime import timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bridge.batcher import BatchBuilder
from bridge.inbox import Inbox
from bridge.mqtt import MqttSubscriber
from telemetry.mqtt import publish_packet
from telemetry.mqtt_reader import ReadAheadClient
from telemetry.payload import PayloadDecoder, TimeWindow
from telemetry.settings import MqttTarget

_BODY = (
    b'{"ts":%d,"seq":%d,"data":{"accel":{"x":0.12,"y":-0.03,"z":9.81},'
    b'"gyro":{"x":0.001,"y":0.002,"z":-0.004}}}'
)


def paho_messages(n: int) -> list[paho.MQTTMessage]:
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(n):
        m = paho.MQTTMessage(mid=i % 65535 + 1, topic=f"robots/r{i % 20}/sensors/imu".encode())
        m.payload = _BODY % (now_ms - n + i, i)
        m.qos = 1
        out.append(m)
    return out


def _subscriber(inbox: Inbox) -> MqttSubscriber:
    return MqttSubscriber(
        target=MqttTarget("mqtt://127.0.0.1:1"),
        client_id="bridge-cost",
        share_group="g",
        inbox=inbox,
    )


async def one_round(messages: list[paho.MQTTMessage]) -> tuple[float, float, float]:
    """(callback µs, loop side µs, acks µs) per message."""
    loop = asyncio.get_running_loop()
    inbox = Inbox(loop=loop, high_water=len(messages) + 1)
    sub = _subscriber(inbox)
    client = sub._client
    builder = BatchBuilder(decoder=PayloadDecoder(window=TimeWindow(max_age=timedelta(days=1))))
    on_message = sub._on_message
    t0 = time.process_time()
    for m in messages:
        on_message(client, None, m)
    t1 = time.process_time()
    while len(inbox):
        for item in inbox.take(256):
            builder.add(item)
    t2 = time.process_time()
    batch = builder.take()
    await sub.ack(batch.messages)
    t3 = time.process_time()
    n = len(messages)
    if len(batch.decoded.readings) != n:
        raise RuntimeError(f"{len(batch.decoded.readings)} readings of {n}: {batch.decoded}")
    return (t1 - t0) * 1e6 / n, (t2 - t1) * 1e6 / n, (t3 - t2) * 1e6 / n


def publish_packets(messages: list[paho.MQTTMessage]) -> bytes:
    """The messages as MQTT 3.1.1 QoS 1 PUBLISH packets, as the broker sends them."""
    return b"".join(
        publish_packet(m.topic.encode(), bytes(m.payload), qos=1, packet_id=m.mid) for m in messages
    )


class _PahoReads(ReadAheadClient):
    """The bridge's client with paho's own socket reads (what it had before)."""

    def _sock_recv(self, bufsize: int) -> bytes:
        return paho.Client._sock_recv(self, bufsize)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        return paho.Client.loop_read(self, max_packets)


def socket_round(
    client_class: type[ReadAheadClient], stream: bytes, n: int, *, parse: bool
) -> float:
    """CPU µs per message from a socket to on_message, as paho's loop reads: select, then
    loop_read, until n messages arrived (a writer thread feeds the socket meanwhile)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = client_class(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.manual_ack_set(True)
    got = [0]

    def on_message(_c: Any, _u: Any, _m: paho.MQTTMessage) -> None:
        got[0] += 1

    def on_publish(_mid: int, _qos: int, _topic: str, _payload: bytes, _retain: bool) -> None:
        got[0] += 1

    client.on_message = on_message
    if parse:
        client.deliver_fields(on_publish, max_qos=1)
    client._sock = ours
    writer = threading.Thread(target=theirs.sendall, args=(stream,))
    t0 = time.process_time()
    writer.start()
    while got[0] < n:
        select.select([ours], [], [], 1.0)
        client.loop_read()
    t1 = time.process_time()
    writer.join()
    client._sock = None
    ours.close()
    theirs.close()
    return (t1 - t0) * 1e6 / n


async def main_async(args: argparse.Namespace) -> None:
    messages = paho_messages(args.messages)
    await one_round(messages)  # warm-up
    rounds = [await one_round(messages) for _ in range(args.rounds)]
    callback, loop_side, acks = (statistics.median(x) for x in zip(*rounds, strict=True))
    print(
        f"CPU per single-reading message (median of {args.rounds} rounds of {args.messages:,}): "
        f"paho callback -> inbox {callback:.2f} µs; inbox -> batch (decode, validate) "
        f"{loop_side:.2f} µs; PUBACKs queued {acks:.2f} µs; "
        f"total {callback + loop_side + acks:.2f} µs"
    )
    stream = publish_packets(messages)
    reads: dict[str, list[float]] = {
        "paho's reads": [],
        "64 KiB chunks, paho parses": [],
        "64 KiB chunks, PUBLISH parsed by ReadAheadClient (bridge)": [],
    }
    n = len(messages)
    for _ in range(args.rounds):
        reads["paho's reads"].append(socket_round(_PahoReads, stream, n, parse=False))
        reads["64 KiB chunks, paho parses"].append(
            socket_round(ReadAheadClient, stream, n, parse=False)
        )
        reads["64 KiB chunks, PUBLISH parsed by ReadAheadClient (bridge)"].append(
            socket_round(ReadAheadClient, stream, n, parse=True)
        )
    print(
        "socket -> on_message, CPU µs per message (median; rounds): "
        + "; ".join(
            f"{k} {statistics.median(v):.2f} ({', '.join(f'{x:.2f}' for x in v)})"
            for k, v in reads.items()
        )
    )
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(3):
            await one_round(messages)
        profiler.stop()
        args.profile.write_text(profiler.output_text(unicode=True, show_all=False))
        print(f"profile: {args.profile}")


def main() -> None:
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m loadtest.bridge_cost", description=__doc__)
    p.add_argument("--messages", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", type=Path, help="pyinstrument text profile of 3 rounds, here")
    args = p.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
