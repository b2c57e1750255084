"""The live service's identity publishes fleet/# and nothing else, and reads the sites'
statuses and nothing else."""

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
        "topic read sites/+/status",
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
    live.subscribe("robots/#", "fleet/#", "sites/#")
    # QoS 1 in MQTT 3.1.1: the broker acknowledges a refused publish and drops it.
    live.publish("robots/r1/sensors/battery", b'{"ts": 1, "data": {"level": 1}}')
    live.publish("robots/r1/status", b"offline")
    live.publish("sites/site-a/status", b"0")
    live.publish("fleet/r1/summary", b"{}")

    async def topics() -> list[str]:
        return operator.topics()

    # In order from one publisher: had the robots/ and sites/ ones gone through, they would
    # come first.
    await eventually(topics, ["fleet/r1/summary"], timeout=10)
    # A site's status (published by the site's identity, as its bridge does) is delivered,
    # its broker's counters are not.
    mosquitto.add(Identity.site("site-a", None, ["r9"]))
    site = Client(mosquitto, "site-a")
    clients.append(site)
    site.publish("sites/site-a/broker/publish/messages/dropped", b"3")
    site.publish("sites/site-a/status", b"1")

    async def live_topics() -> list[str]:
        return live.topics()

    # Nothing else, not even what it published.
    await eventually(live_topics, ["sites/site-a/status"], timeout=10)
