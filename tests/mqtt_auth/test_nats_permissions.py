"""The MQTT identities' permissions on a NATS cluster (mqtt_auth.nats): a robot's readings land
in the stream only under its own id, and a bridge can consume the stream but not manage it;
nats-setup before any MQTT client creates the `$MQTT_msgs` NATS then uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import orjson
import paho.mqtt.client as paho
import pytest
from nats.js.api import RetentionPolicy
from paho.mqtt.enums import CallbackAPIVersion

import nats
from bridge.nats import StreamPlan, connect, ensure_stream, split_urls
from harness.nats import NatsCluster
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from mqtt_auth.nats import ADMIN_USERNAME
from telemetry.topics import NATS_MQTT_STREAM

pytestmark = pytest.mark.slow

PLAN = StreamPlan("ROBOSENSE", "bridges", 3, 3600.0, 64 * 1024**2, 30.0, 1000)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(workdir=tmp_path / "nats")
    c.add_robot("r1")
    c.add_robot("r2")
    c.add(Identity("nb", Role.BRIDGE, None))
    with c:
        yield c


def _publish_as_r1(cluster: NatsCluster, topics: list[str]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="r1", protocol=paho.MQTTv311)
    client.username_pw_set("r1", cluster.passwords["r1"])
    client.connect("127.0.0.1", cluster.nodes[1].ports.mqtt)
    client.loop_start()
    try:
        payload = orjson.dumps({"ts": int(time.time() * 1000), "seq": 1, "data": {"level": 5}})
        for topic in topics:
            # QoS 1, which NATS stores in $MQTT_msgs (the bridges' consumer); a refused
            # publish is acknowledged and dropped (nats-server 2.15).
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_robot_publishes_only_its_own_subjects_and_a_bridge_only_consumes(
    cluster: NatsCluster,
) -> None:
    admin = await connect(split_urls(cluster.url_for(ADMIN_USERNAME)), name="admin")
    try:
        assert await ensure_stream(admin, PLAN) == "created"
        await asyncio.to_thread(
            _publish_as_r1,
            cluster,
            ["robots/r2/sensors/battery", "robots/r2/status", "robots/r1/sensors/battery"],
        )
        js = admin.jetstream()

        async def subjects() -> dict[str, int]:
            info = await js.stream_info(PLAN.stream, subjects_filter=">")
            return dict(info.state.subjects or {})

        # r1's own reading arrives; what it sent under r2's id (before it) never does.
        assert await eventually(subjects, {"robots.r1.sensors.battery": 1}) == {
            "robots.r1.sensors.battery": 1
        }
    finally:
        await admin.close()

    bridge = await nats.connect(
        servers=split_urls(cluster.url_for("nb")), connect_timeout=5, max_reconnect_attempts=1
    )
    try:
        js = bridge.jetstream(timeout=3)
        sub = await js.pull_subscribe_bind(durable=PLAN.consumer, stream=NATS_MQTT_STREAM)
        msgs = await sub.fetch(1, timeout=10)
        assert [m.subject for m in msgs] == ["$MQTT.msgs.robots.r1.sensors.battery"]
        await msgs[0].ack()
        # Managing the stream is the admin's: refused (no answer to a forbidden request).
        with pytest.raises((nats.errors.Error, nats.js.errors.Error, TimeoutError)):
            await js.delete_stream(PLAN.stream)
        with pytest.raises((nats.errors.Error, nats.js.errors.Error, TimeoutError)):
            await js.delete_stream(NATS_MQTT_STREAM)
        with pytest.raises((nats.errors.Error, nats.js.errors.Error, TimeoutError)):
            await js.add_stream(name="STOLEN", subjects=["robots.>"])
    finally:
        await bridge.close()
    admin = await connect(split_urls(cluster.url_for(ADMIN_USERNAME)), name="admin")
    try:
        info = await admin.jetstream().stream_info(PLAN.stream)
        assert info.state.messages == 1
    finally:
        await admin.close()


async def test_nats_setup_before_any_mqtt_client_creates_mqtt_msgs_that_nats_then_uses(
    tmp_path: Path,
) -> None:
    """nats-setup on a cluster no MQTT client connected to yet (the compose profile's order):
    it creates `$MQTT_msgs` with the bridges' consumer, and NATS's MQTT listener then stores
    a robot's QoS 1 publish there, where the consumer has it."""
    c = NatsCluster(workdir=tmp_path / "nats")
    c.add_robot("r1")
    try:
        await asyncio.to_thread(c.start, mqtt=False)
        admin = await connect(split_urls(c.url_for(ADMIN_USERNAME)), name="admin")
        try:
            js = admin.jetstream()
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.stream_info(NATS_MQTT_STREAM)  # not there yet
            assert await ensure_stream(admin, PLAN) == "created"
            info = await js.stream_info(NATS_MQTT_STREAM)
            assert info.config.retention == RetentionPolicy.INTEREST
            await asyncio.to_thread(c.wait_mqtt_ready)
            await asyncio.to_thread(_publish_as_r1, c, ["robots/r1/sensors/battery"])
            sub = await js.pull_subscribe_bind(durable=PLAN.consumer, stream=NATS_MQTT_STREAM)
            msgs = await sub.fetch(1, timeout=10)
            assert [m.subject for m in msgs] == ["$MQTT.msgs.robots.r1.sensors.battery"]
        finally:
            await admin.close()
    finally:
        c.stop()
