"""bridge.mqtt._Client's chunked reads: packets served from one recv, a packet split across
reads, a partial packet left for paho's select, and the end of the stream."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bridge.mqtt import _Client


def _publish(mid: int, payload: bytes) -> bytes:
    """An MQTT 3.1.1 QoS 1 PUBLISH on robots/r1/sensors/imu."""
    topic = b"robots/r1/sensors/imu"
    body = len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + payload
    n, length = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (128 if n else 0))
        if not n:
            break
    return bytes([0x32]) + bytes(length) + body


@pytest.fixture
def client() -> Iterator[tuple[_Client, socket.socket, list[paho.MQTTMessage]]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = _Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    c.manual_ack_set(True)
    got: list[paho.MQTTMessage] = []

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        got.append(m)

    c.on_message = on_message
    c._sock = ours  # what paho's connect sets
    yield c, broker, got
    c._sock = None
    ours.close()
    broker.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_many_packets_come_from_one_read_and_a_split_packet_is_completed(
    client: tuple[_Client, socket.socket, list[paho.MQTTMessage]],
) -> None:
    c, broker, got = client
    packets = [_publish(i + 1, b'{"seq":%d}' % i) for i in range(500)]
    big = _publish(501, b"x" * 70_000)  # longer than one read
    stream = b"".join(packets) + big
    head, tail = stream[:-100], stream[-100:]
    broker.sendall(head)
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    # One loop_read took every whole packet that had arrived, and left nothing buffered.
    assert [m.mid for m in got] == list(range(1, 501))
    assert [m.payload for m in got[:2]] == [b'{"seq":0}', b'{"seq":1}']
    assert c.buffered() == 0
    broker.sendall(tail)
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got[-1].mid == 501
    assert got[-1].payload == b"x" * 70_000


def test_what_the_kernel_still_holds_is_left_for_select(
    client: tuple[_Client, socket.socket, list[paho.MQTTMessage]],
) -> None:
    """More than one chunk waiting: one loop_read stops at the chunk (paho's loop must turn
    to write PUBACKs), and the socket stays readable, so paho's select wakes for the rest."""
    c, broker, got = client
    packets = [_publish(i % 65_535 + 1, b"y" * 200) for i in range(2_000)]
    stream = b"".join(packets)
    sent = broker.send(stream[:150_000])  # what the socket pair's buffers take at once
    assert sent > 2 * 65_536
    rounds = 0
    while sum(len(p) for p in packets[: len(got)]) < sent - 300:
        assert _readable(c._sock)  # type: ignore[arg-type]
        assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        rounds += 1
        assert rounds < 100
    assert rounds > 2  # more than one chunk's worth took more than one turn
    assert len(got) == sent // len(packets[0])
    assert not _readable(c._sock)  # type: ignore[arg-type]
    assert c.buffered() == 0


def test_the_end_of_the_stream_is_a_lost_connection(
    client: tuple[_Client, socket.socket, list[paho.MQTTMessage]],
) -> None:
    c, broker, got = client
    broker.sendall(_publish(1, b"z") + _publish(2, b"z")[:5])
    broker.shutdown(socket.SHUT_WR)
    first = c.loop_read()
    rc = first if first != MQTTErrorCode.MQTT_ERR_SUCCESS else c.loop_read()
    assert [m.mid for m in got] == [1]
    assert rc != MQTTErrorCode.MQTT_ERR_SUCCESS
