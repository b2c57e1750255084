"""The live service's identity publishes fleet/# and nothing else, and reads nothing."""

from __future__ import annotations

from harness.services import TEST_OPERATOR, Mosquitto
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from tests.mqtt_auth.conftest import Client


def test_acl_lines() -> None:
    assert Identity("live", Role.LIVE, None).acl_lines() == [
        "user live",
        "topic deny robots/live/#",
        "topic write fleet/#",
    ]


async def test_the_live_identity_publishes_fleet_topics_only(
    mosquitto: Mosquitto, clients: list[Client]
) -> None:
    mosquitto.add(Identity("live", Role.LIVE, None))
    operator = Client(mosquitto, TEST_OPERATOR)
    clients.append(operator)
    operator.subscribe("robots/#", "fleet/#")
    live = Client(mosquitto, "live")
    clients.append(live)
    live.subscribe("robots/#", "fleet/#")
    # QoS 1 in MQTT 3.1.1: the broker acknowledges a refused publish and drops it.
    live.publish("robots/r1/sensors/battery", b'{"ts": 1, "data": {"level": 1}}')
    live.publish("robots/r1/status", b"offline")
    live.publish("fleet/r1/summary", b"{}")

    async def topics() -> list[str]:
        return operator.topics()

    # In order from one publisher: had the robots/ ones gone through, they would come first.
    await eventually(topics, ["fleet/r1/summary"], timeout=10)
    # It reads nothing, not even what it published.
    assert live.topics() == []
