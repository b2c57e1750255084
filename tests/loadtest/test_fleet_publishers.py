"""loadtest.wire_publisher's fleet mode, on a real broker with our mosquitto.conf: each robot
connects with its own identity, and every message it publishes arrives, on its own topic.

Checks connections and counts only; it times nothing (benchmarks print figures, tests do not).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from edge_simulator.config import Partition
from edge_simulator.identities import identities
from harness.services import TEST_OPERATOR, Mosquitto
from loadtest.wire_publisher import FleetPublishers, fleet_config
from mqtt_auth.passwords import derive_password, new_password
from mqtt_auth.probe import wait_accepted
from tests.mqtt_auth.conftest import Client, wait_until

# The publishers run as processes, as the benchmark's do: `-m "not slow"` leaves this out.
pytestmark = pytest.mark.slow

ROBOTS, PARTITIONS, PER_MESSAGE, MESSAGES_EACH = 12, 3, 10, 4


def _provision(broker: Mosquitto, secret: str) -> list[str]:
    fleet = fleet_config(robots=ROBOTS, prefix="fleettest", secret=secret, partition=Partition())
    broker.identities.put(*identities(fleet))
    ids = fleet.fleet_ids()
    # The broker reloads its files asynchronously on the SIGHUP that put() sent.
    wait_accepted("127.0.0.1", broker.port, ids[-1], derive_password(secret, ids[-1]))
    return ids


def _fleet(broker: Mosquitto, secret: str) -> FleetPublishers:
    return FleetPublishers(
        port=broker.port,
        robots=ROBOTS,
        partitions=PARTITIONS,
        prefix="fleettest",
        secret=secret,
        readings=ROBOTS * MESSAGES_EACH * PER_MESSAGE,
        rate=5000,
        per_message=PER_MESSAGE,
    )


async def test_each_robot_connects_as_itself_and_all_its_messages_arrive(
    mosquitto: Mosquitto,
) -> None:
    secret = new_password()
    ids = _provision(mosquitto, secret)
    operator = Client(mosquitto, TEST_OPERATOR)
    fleet = _fleet(mosquitto, secret)
    try:
        operator.subscribe("robots/#")
        # Bounded waits: a publisher that waits for an acknowledgement that never comes
        # fails the test instead of hanging it.
        storms = await asyncio.wait_for(fleet.connect(lead_s=0.5), 60)
        results = await asyncio.wait_for(fleet.publish(lead_s=0.1), 60)
        expected = ROBOTS * MESSAGES_EACH
        wait_until(lambda: len(operator.messages) >= expected)
    finally:
        fleet.kill()
        operator.close()

    # One connection per robot, the partitions' slices together the whole fleet.
    assert sorted(s.index for s in storms) == list(range(PARTITIONS))
    assert [s.connections for s in sorted(storms, key=lambda s: s.index)] == [4, 4, 4]
    assert all(len(s.connect_ms) == s.connections for s in storms)
    assert sum(r.messages for r, _ in results) == expected
    assert sum(r.acked for r, _ in results) == expected
    # The ACL lets a robot identity publish under its own id only: a message on each robot's
    # topic means it came over that robot's own connection and credentials.
    assert len(operator.messages) == expected
    per_topic = Counter(m.topic for m in operator.messages)
    assert per_topic == {f"robots/{r}/sensors/imu": MESSAGES_EACH for r in ids}
    seqs: dict[str, list[int]] = {}
    for m in operator.messages:
        robot = m.topic.split("/")[1]
        seqs.setdefault(robot, []).extend(x["seq"] for x in orjson.loads(m.payload)["readings"])
    assert all(sorted(s) == list(range(MESSAGES_EACH * PER_MESSAGE)) for s in seqs.values()), seqs


async def test_a_fleet_with_the_wrong_secret_is_refused(mosquitto: Mosquitto) -> None:
    _provision(mosquitto, new_password())
    fleet = _fleet(mosquitto, new_password())
    try:
        with pytest.raises(RuntimeError, match="fleet publisher exited"):
            await asyncio.wait_for(fleet.connect(lead_s=0.5), 60)
    finally:
        fleet.kill()
