"""The shipped mosquitto.conf with our identity files, against a real broker and bridge."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
import pytest

from harness.publisher import Publisher, battery_messages
from harness.services import TEST_OPERATOR, TEST_PUBLISHER, Mosquitto
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from mqtt_auth.probe import connack
from telemetry.topics import bridge_presence_topic, sensor_topic, status_topic
from tests.conftest import StartBridge
from tests.mqtt_auth.conftest import Client, wait_until

ROBOTS = ("r1", "r2", "r3")


@pytest.fixture
async def robots(clean_db: asyncpg.Pool[Any], mosquitto: Mosquitto) -> asyncpg.Pool[Any]:
    """r1-r3 registered in the database and given MQTT identities."""
    await clean_db.executemany("INSERT INTO robots (id) VALUES ($1)", [(r,) for r in ROBOTS])
    for robot_id in ROBOTS:
        mosquitto.add_robot(robot_id)
    return clean_db


def reading(ts: int, level: float = 50.0) -> bytes:
    return orjson.dumps({"ts": ts, "data": {"level": level}})


async def stored(pool: asyncpg.Pool[Any], robot_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE robot_id = $1", robot_id
    )
    return count


def test_anonymous_and_wrong_passwords_are_refused(mosquitto: Mosquitto) -> None:
    assert connack("127.0.0.1", mosquitto.port, None, None) != 0
    assert connack("127.0.0.1", mosquitto.port, TEST_OPERATOR, "not-the-password") != 0
    assert connack("127.0.0.1", mosquitto.port, "nobody", "x") != 0
    assert (
        connack("127.0.0.1", mosquitto.port, TEST_OPERATOR, mosquitto.passwords[TEST_OPERATOR]) == 0
    )


async def test_a_robot_publishes_only_as_itself(
    robots: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    start_bridge()
    r1 = Publisher(port=mosquitto.port, username="r1", password=mosquitto.passwords["r1"])
    try:
        now = int(time.time() * 1000)
        # QoS 1 in MQTT 3.1.1: the broker acknowledges a refused publish and drops it.
        r1.publish_all(
            [
                (sensor_topic("r2", "battery"), reading(now)),
                (sensor_topic("r1", "battery"), reading(now)),
                (status_topic("r2"), b"offline"),
            ]
        )
        r1.client.publish(status_topic("r2"), b"offline", qos=1, retain=True).wait_for_publish(10)
    finally:
        r1.close()
    assert await eventually(lambda: stored(robots, "r1"), 1) == 1
    assert await stored(robots, "r2") == 0
    dead: int = await robots.fetchval("SELECT count(*) FROM dead_letters")
    assert dead == 0
    # r2's retained status was never set: a late subscriber gets nothing for it.
    operator = Client(mosquitto, TEST_OPERATOR)
    try:
        operator.subscribe("robots/+/status")
        await asyncio.sleep(0.5)
        assert operator.topics() == []
    finally:
        operator.close()


async def test_a_rogue_gets_nothing_and_takes_nothing_from_the_bridge(
    robots: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    start_bridge()
    rogue = Client(mosquitto, "r3")
    try:
        # Mosquitto 2.0 grants these SUBSCRIBEs (its ACL file checks reads at delivery), so
        # the test is what is delivered and what the bridge stores, not the SUBACK.
        rogue.subscribe(
            "#",
            "$SYS/#",
            "robots/+/sensors/+",
            "$share/robosense/robots/+/sensors/+",
            "$share/bridge/robots/+/sensors/+",
        )
        publisher = Publisher(
            port=mosquitto.port, username="r1", password=mosquitto.passwords["r1"]
        )
        try:
            n = 2000
            publisher.publish_all(battery_messages("r1", n))
        finally:
            publisher.close()
        assert await eventually(lambda: stored(robots, "r1"), n) == n
        # Nothing but the bridges' presence markers, which every client may read.
        assert rogue.topics() in ([], [bridge_presence_topic("bridge")])
    finally:
        rogue.close()


async def test_an_operator_reads_and_cannot_publish(
    robots: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    start_bridge()
    operator = Client(mosquitto, TEST_OPERATOR)
    try:
        operator.subscribe("robots/#")
        r1 = Publisher(port=mosquitto.port, username="r1", password=mosquitto.passwords["r1"])
        try:
            r1.publish_all(battery_messages("r1", 5))
        finally:
            r1.close()
        wait_until(lambda: len(operator.messages) >= 5)
        operator.publish(sensor_topic("r2", "battery"), reading(int(time.time() * 1000)))
        operator.publish(status_topic("r2"), b"offline", retain=True)
        # Not even under its own name, which the robots' pattern would allow.
        operator.publish(status_topic(TEST_OPERATOR), b"online", retain=True)
        await asyncio.sleep(0.5)
        # Its own publishes never came back to it: the broker dropped them.
        assert operator.topics() == [sensor_topic("r1", "battery")] * 5
    finally:
        operator.close()
    assert await eventually(lambda: stored(robots, "r1"), 5) == 5
    assert await stored(robots, "r2") == 0


async def test_a_revoked_robot_is_disconnected_and_refused(
    robots: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    bridge = start_bridge()
    r1 = Client(mosquitto, "r1")
    r2 = Client(mosquitto, "r2")
    try:
        r1.publish(sensor_topic("r1", "battery"), reading(int(time.time() * 1000) - 1000))
        assert mosquitto.identities.remove(["r1"]) == ["r1"]  # rewrites the files, SIGHUP
        # Mosquitto 2.0 re-checks every connected client's password on reload.
        assert r1.disconnected.wait(10)
        assert connack("127.0.0.1", mosquitto.port, "r1", mosquitto.passwords["r1"]) != 0
        # paho's reconnects are refused too: nothing more from r1 is stored.
        r1.client.publish(sensor_topic("r1", "battery"), reading(int(time.time() * 1000)), qos=1)
        # Everyone else stayed connected through the reload.
        assert not r2.disconnected.is_set()
        assert bridge.running
        r2.publish(sensor_topic("r2", "battery"), reading(int(time.time() * 1000)))
        assert await eventually(lambda: stored(robots, "r2"), 1) == 1
        await asyncio.sleep(1.0)
        assert await stored(robots, "r1") == 1
    finally:
        r1.close()
        r2.close()


async def test_nobody_takes_over_the_bridges_session(
    robots: asyncpg.Pool[Any], start_bridge: StartBridge, mosquitto: Mosquitto
) -> None:
    bridge = start_bridge("bridge")
    bridge.terminate()  # its persistent session queues for it at the broker
    publisher = Publisher(port=mosquitto.port, username="r1", password=mosquitto.passwords["r1"])
    n = 1000
    try:
        publisher.publish_all(battery_messages("r1", n))
    finally:
        publisher.close()
    # Today's attack: connect with the bridge's client id and a clean session. The broker
    # makes the username the client id, so this is just r2's own session.
    rogue = Client(mosquitto, "r2", client_id="bridge")
    rogue.close()
    bridge.start()
    assert await eventually(lambda: stored(robots, "r1"), n) == n
    # Its log names the broker and the identity, never the password.
    log = bridge.log_path.read_text()
    assert '"address": "mqtt://bridge@127.0.0.1' in log
    assert mosquitto.passwords["bridge"] not in log


def test_gateways_publish_only_for_their_robots(mosquitto: Mosquitto) -> None:
    mosquitto.add(Identity.gateway("gw-1", None, ["r1", "r2"]))
    mosquitto.add(Identity("reader", Role.BRIDGE, None))
    reader = Client(mosquitto, "reader")
    gateway = Client(mosquitto, "gw-1")
    try:
        reader.subscribe("robots/+/sensors/+")
        for robot_id in ("r1", "r2", "r3"):
            gateway.publish(sensor_topic(robot_id, "battery"), reading(1))
        wait_until(lambda: len(reader.messages) >= 2)
        time.sleep(0.3)
        assert sorted(reader.topics()) == [sensor_topic(r, "battery") for r in ("r1", "r2")]
    finally:
        reader.close()
        gateway.close()


def test_a_bridge_cannot_publish_even_under_its_own_name(mosquitto: Mosquitto) -> None:
    mosquitto.add(Identity("bridge-9", Role.BRIDGE, None))
    reader = Client(mosquitto, TEST_OPERATOR)
    bridge = Client(mosquitto, "bridge-9")
    try:
        reader.subscribe("robots/#")
        bridge.publish(status_topic("bridge-9"), b"online")
        bridge.publish(sensor_topic("bridge-9", "battery"), reading(1))
        time.sleep(0.5)
        assert reader.topics() == []
    finally:
        reader.close()
        bridge.close()


def test_the_api_identity_reads_the_fleet_topics_only(mosquitto: Mosquitto) -> None:
    mosquitto.add(Identity("api-live-1", Role.API, None))
    mosquitto.add(Identity("live", Role.LIVE, None))
    api = Client(mosquitto, "api-live-1")
    live = Client(mosquitto, "live")
    operator = Client(mosquitto, TEST_OPERATOR)
    gateway = Client(mosquitto, TEST_PUBLISHER)
    try:
        api.subscribe("#")
        operator.subscribe("fleet/#")
        gateway.publish(sensor_topic("r1", "battery"), reading(1))
        api.publish("fleet/summary", b"forged")
        # Each publish above was acknowledged before this one: had the broker delivered
        # them, they would have come first.
        live.publish("fleet/r1/summary", b"{}")
        wait_until(lambda: len(api.messages) >= 1 and len(operator.messages) >= 1)
        assert api.topics() == ["fleet/r1/summary"]
        assert operator.topics() == ["fleet/r1/summary"]
    finally:
        for client in (api, live, operator, gateway):
            client.close()
