"""The subscriber's acknowledgements, against a real Mosquitto: a batch's PUBACKs go out as one
write (bridge/mqtt.py), and the broker must take every one of them as its message's ack."""

from __future__ import annotations

import asyncio

import orjson

from bridge.inbox import InboundMessage, Inbox
from bridge.mqtt import MqttSubscriber
from harness.publisher import Publisher, battery_messages
from harness.services import Mosquitto
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from telemetry.settings import MqttTarget

BRIDGE = "ack-test-bridge"


def _subscriber(mosquitto: Mosquitto, inbox: Inbox) -> MqttSubscriber:
    return MqttSubscriber(
        target=MqttTarget(mosquitto.url_for(BRIDGE)),
        client_id=BRIDGE,
        share_group=mosquitto.share_group,
        inbox=inbox,
    )


def _seqs(messages: list[InboundMessage]) -> set[int]:
    return {orjson.loads(m.payload)["seq"] for m in messages}


async def _receive(inbox: Inbox, n: int) -> list[InboundMessage]:
    async def count() -> int:
        return len(inbox)

    await eventually(count, n, timeout=60)
    return inbox.take(n)


async def test_acked_messages_are_not_redelivered_and_unacked_ones_are(
    mosquitto: Mosquitto, publisher: Publisher
) -> None:
    mosquitto.add(Identity(BRIDGE, Role.BRIDGE, None))
    loop = asyncio.get_running_loop()

    first = Inbox(loop=loop, high_water=10_000)
    async with _subscriber(mosquitto, first) as subscriber:
        assert await subscriber.wait_subscribed(30)
        publisher.publish_all(battery_messages("r1", 5_000))
        received = await _receive(first, 5_000)
        assert _seqs(received) == set(range(5_000))
        # Acked in one call, more than one write's worth (4,096 PUBACKs), out of order.
        acked = received[:4_500][::-1]
        assert await subscriber.ack(acked) == 4_500
    # Leaving sends the queued PUBACKs before the DISCONNECT; the session stays.

    second = Inbox(loop=loop, high_water=10_000)
    async with _subscriber(mosquitto, second) as subscriber:
        assert await subscriber.wait_subscribed(30)
        # The broker resends a resumed session's unacknowledged messages before new ones:
        # once the marker is here, every redelivery is too.
        publisher.publish_all(battery_messages("r2", 1, seq0=10**6))
        redelivered = await _receive(second, 501)
        assert _seqs(redelivered) == set(range(4_500, 5_000)) | {10**6}
        assert await subscriber.ack(redelivered) == 501
