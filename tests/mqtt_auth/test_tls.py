"""The TLS listener of mosquitto.conf: the client certificate's CN is the identity."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from harness.services import ROOT, TEST_OPERATOR, Mosquitto, free_port
from mqtt_auth.identities import Identity
from telemetry.topics import sensor_topic
from tests.mqtt_auth.conftest import Client, wait_until


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, Path]]:
    certs = tmp_path / "certs"
    subprocess.run([ROOT / "scripts/dev-certs", certs, "r1", "stranger"], check=True)
    tls_port = free_port()
    broker = Mosquitto(workdir=tmp_path / "mosquitto", tls=(tls_port, certs))
    # r1 has no password at all: its certificate is its credential.
    broker.identities.put(Identity.robot("r1", None))
    with broker:
        yield broker, tls_port, certs


def tls_client(port: int, certs: Path, name: str | None) -> tuple[paho.Client, list[int]]:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    if name is None:
        client.tls_set(ca_certs=str(certs / "ca.crt"))
    else:
        client.tls_set(
            ca_certs=str(certs / "ca.crt"),
            certfile=str(certs / f"{name}.crt"),
            keyfile=str(certs / f"{name}.key"),
        )
    codes: list[int] = []
    client.on_connect = lambda c, u, f, reason, p: codes.append(reason.value)
    return client, codes


def test_a_certificate_is_an_identity_under_the_same_acl(
    tls_broker: tuple[Mosquitto, int, Path],
) -> None:
    broker, tls_port, certs = tls_broker
    reader = Client(broker, TEST_OPERATOR)
    robot, codes = tls_client(tls_port, certs, "r1")
    try:
        reader.subscribe("robots/#")
        robot.connect("127.0.0.1", tls_port)
        robot.loop_start()
        wait_until(lambda: codes == [0])
        for robot_id in ("r2", "r1"):  # r1's certificate does not make it r2
            info = robot.publish(sensor_topic(robot_id, "battery"), b"{}", qos=1)
            info.wait_for_publish(10)
        wait_until(lambda: reader.topics() != [])
        time.sleep(0.3)
        assert reader.topics() == [sensor_topic("r1", "battery")]
    finally:
        robot.disconnect()
        robot.loop_stop()
        reader.close()


def test_no_certificate_is_refused_and_any_certificate_is_its_name_only(
    tls_broker: tuple[Mosquitto, int, Path],
) -> None:
    broker, tls_port, certs = tls_broker
    anonymous, _ = tls_client(tls_port, certs, None)
    with pytest.raises((ssl.SSLError, OSError)):
        anonymous.connect("127.0.0.1", tls_port)
        for _ in range(20):  # TLS 1.3 reports a refused client certificate on the first read
            anonymous.loop(0.1)
            if anonymous.socket() is None:
                raise OSError("closed by the broker")
    # The CA issuing a certificate is what provisions a robot (the robots' ACL pattern covers
    # its CN); it publishes as itself and as nobody else. Revoking it takes a CRL.
    reader = Client(broker, TEST_OPERATOR)
    stranger, codes = tls_client(tls_port, certs, "stranger")
    try:
        reader.subscribe("robots/#")
        stranger.connect("127.0.0.1", tls_port)
        stranger.loop_start()
        wait_until(lambda: codes != [])
        for robot_id in ("r1", "stranger"):
            info = stranger.publish(sensor_topic(robot_id, "battery"), b"{}", qos=1)
            info.wait_for_publish(10)
        wait_until(lambda: reader.topics() != [])
        time.sleep(0.3)
        assert reader.topics() == [sensor_topic("stranger", "battery")]
    finally:
        stranger.disconnect()
        stranger.loop_stop()
        reader.close()
