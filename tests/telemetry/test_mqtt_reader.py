"""telemetry.mqtt_reader.ReadAheadClient: packets served from one recv, a packet split across
reads, a partial packet left for paho's select, the end of the stream, and the PUBLISH packets
it parses itself up to the QoS its user acknowledges."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from telemetry.mqtt import publish_packet
from telemetry.mqtt_reader import ReadAheadClient


def _publish(mid: int, payload: bytes) -> bytes:
    return publish_packet(b"robots/r1/sensors/imu", payload, qos=1, packet_id=mid)


@pytest.fixture
def client() -> Iterator[tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]]]:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = ReadAheadClient(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
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
    client: tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]],
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
    client: tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]],
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
    client: tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]],
) -> None:
    c, broker, got = client
    broker.sendall(_publish(1, b"z") + _publish(2, b"z")[:5])
    broker.shutdown(socket.SHUT_WR)
    first = c.loop_read()
    rc = first if first != MQTTErrorCode.MQTT_ERR_SUCCESS else c.loop_read()
    assert [m.mid for m in got] == [1]
    assert rc != MQTTErrorCode.MQTT_ERR_SUCCESS


def test_publishes_parsed_here_match_pahos_and_the_rest_goes_to_paho(
    client: tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]],
) -> None:
    """QoS 1, QoS 0 and retained PUBLISHes reach the deliver_fields callback with the fields paho
    would give; a PINGRESP and a topic that is not UTF-8 go through paho, in order, and a
    PUBLISH split across reads arrives whole. (The first packet of each chunk is paho's: it
    does the read.)"""
    c, broker, _ = client
    events: list[tuple[str, int, int, str, bytes, bool]] = []
    c.deliver_fields(lambda *fields: events.append(("ours", *fields)), max_qos=1)

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        topic = m._topic.decode("utf-8", "replace")
        events.append(("paho", m.mid, m.qos, topic, bytes(m.payload), m.retain))

    c.on_message = on_message
    big = b"p" * 300  # a two-byte remaining length
    expected = [
        (7, 1, "robots/r1/sensors/imu", b'{"seq":1}', False),
        (8, 1, "robots/r1/sensors/imu", b'{"seq":2}', False),
        (0, 0, "robots/r1/sensors/gps", b"q0", False),
        (9, 1, "robots/r1/status", b"online", True),
        (10, 1, "robots/r\ufffd/sensors/imu", b"bad topic", False),
        (11, 1, "robots/r2/sensors/imu", big, False),
        (12, 1, "robots/r3/sensors/imu", b"end", False),
    ]
    stream = b"".join(
        [
            publish_packet(b"robots/r1/sensors/imu", b'{"seq":1}', qos=1, packet_id=7),
            publish_packet(b"robots/r1/sensors/imu", b'{"seq":2}', qos=1, packet_id=8),
            publish_packet(b"robots/r1/sensors/gps", b"q0"),
            publish_packet(b"robots/r1/status", b"online", qos=1, packet_id=9, retain=True),
            bytes([0xD0, 0x00]),  # PINGRESP
            publish_packet(b"robots/r\xff/sensors/imu", b"bad topic", qos=1, packet_id=10),
            publish_packet(b"robots/r2/sensors/imu", big, qos=1, packet_id=11),
        ]
    )
    last = publish_packet(b"robots/r3/sensors/imu", b"end", qos=1, packet_id=12)
    broker.sendall(stream + last[:4])
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert c.buffered() == 0
    broker.sendall(last[4:])
    assert _readable(c._sock)  # type: ignore[arg-type]
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [e[1:] for e in events] == expected
    paths = {e[1]: e[0] for e in events}
    assert [paths[m] for m in (7, 8, 0, 9, 10, 11, 12)] == [
        "paho",  # the chunk's first packet
        "ours",
        "ours",
        "ours",
        "paho",  # after the PINGRESP, which paho took
        "ours",
        "paho",  # split across reads
    ]


def test_with_max_qos_0_paho_takes_and_acknowledges_every_qos_1_publish(
    client: tuple[ReadAheadClient, socket.socket, list[paho.MQTTMessage]],
) -> None:
    """The API's live subscription: QoS 0 summaries are parsed here; QoS 1 alerts between
    them go to paho's on_message in order, and paho writes their PUBACKs (nobody else would:
    the broker would stop sending after its in-flight window)."""
    c, broker, _ = client
    c.manual_ack_set(False)
    events: list[tuple[str, int, str]] = []
    c.deliver_fields(lambda mid, qos, topic, *_: events.append(("ours", qos, topic)), max_qos=0)

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        events.append(("paho", m.qos, m.topic))

    c.on_message = on_message
    stream = b"".join(
        [
            publish_packet(b"fleet/r1/summary", b"s1", retain=True),
            publish_packet(b"fleet/r2/summary", b"s2", retain=True),
            publish_packet(b"fleet/alerts", b"a1", qos=1, packet_id=41),
            publish_packet(b"fleet/r3/summary", b"s3"),
            publish_packet(b"fleet/alerts", b"a2", qos=1, packet_id=42),
            publish_packet(b"fleet/alerts", b"a3", qos=1, packet_id=43),
            publish_packet(b"fleet/r4/summary", b"s4"),
        ]
    )
    broker.sendall(stream)
    assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert c.buffered() == 0
    assert events == [
        ("paho", 0, "fleet/r1/summary"),  # the chunk's first packet
        ("ours", 0, "fleet/r2/summary"),
        ("paho", 1, "fleet/alerts"),
        ("ours", 0, "fleet/r3/summary"),
        ("paho", 1, "fleet/alerts"),
        ("paho", 1, "fleet/alerts"),
        ("ours", 0, "fleet/r4/summary"),
    ]
    while c.want_write():
        assert c.loop_write() == MQTTErrorCode.MQTT_ERR_SUCCESS
    broker.setblocking(False)
    pubacks = broker.recv(1024)
    assert pubacks == b"".join(bytes([0x40, 2, 0, mid]) for mid in (41, 42, 43))
