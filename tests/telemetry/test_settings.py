from __future__ import annotations

from telemetry.settings import MqttTarget


def test_the_broker_is_shown_without_its_password() -> None:
    target = MqttTarget("mqtt://bridge-1:s%3Acret@broker:1884")
    assert target.password == "s:cret"
    assert str(target) == repr(target).removeprefix("MqttTarget(").removesuffix(")")
    assert str(target) == "mqtt://bridge-1@broker:1884"
    assert "cret" not in f"{target} {target!r}"
