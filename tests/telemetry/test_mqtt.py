"""The shared paho connection callbacks: which events reach a client's own code, and which
are logged."""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from telemetry.mqtt import SessionCallbacks

log = logging.getLogger("tests.telemetry.session")


class Recorder(SessionCallbacks):
    def __init__(self, client: paho.Client) -> None:
        self.accepted = 0
        super().__init__(client, address="mqtt://bridge@127.0.0.1:1884", log=log)

    def _accepted(self, client: paho.Client, flags: paho.ConnectFlags) -> None:
        self.accepted += 1


def connack(name: str) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, name)


def test_an_accepted_connect_reaches_the_client_and_a_refused_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    session = Recorder(client)
    caplog.set_level(logging.INFO, logger=log.name)
    flags = paho.ConnectFlags(session_present=False)
    # paho's hint is the union of its callback API versions; this client is VERSION2.
    on_connect: Any = client.on_connect

    on_connect(client, None, flags, connack("Not authorized"), None)
    assert session.accepted == 0
    [refused] = caplog.records
    assert refused.getMessage() == "mqtt connect refused"
    assert refused.__dict__["address"] == "127.0.0.1:1884"

    on_connect(client, None, flags, connack("Success"), None)
    assert session.accepted == 1
    assert len(caplog.records) == 1


def test_only_a_disconnect_we_did_not_ask_for_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    Recorder(client)
    caplog.set_level(logging.INFO, logger=log.name)
    flags = paho.DisconnectFlags(is_disconnect_packet_from_server=False)
    on_disconnect: Any = client.on_disconnect

    for rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_CONN_LOST):
        reason = paho.convert_disconnect_error_code_to_reason_code(rc)
        on_disconnect(client, None, flags, reason, None)

    assert [(r.getMessage(), r.__dict__["reason"]) for r in caplog.records] == [
        ("mqtt disconnected; paho reconnects", "Unspecified error")
    ]
