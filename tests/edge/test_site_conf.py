"""The site broker's config as rendered for one site, and the site's identity at the cloud."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from edge.site import SiteBroker, render_site_conf
from harness.services import run_here
from mqtt_auth.identities import Identity, IdentityError, Role
from telemetry.topics import parse_site_status_topic, site_status_topic


def _site(**changes: object) -> SiteBroker:
    fields: dict[str, object] = {
        "site_id": "plant-7",
        "cloud_host": "cloud.example",
        "cloud_port": 8883,
        "site_password": "s3cret",
    }
    fields.update(changes)
    return SiteBroker(**fields)  # type: ignore[arg-type]


def _option(text: str, name: str) -> list[str]:
    return re.findall(rf"^{name} (.*)$", text, flags=re.M)


def test_a_rendered_site_bridges_readings_and_statuses_with_a_persistent_session() -> None:
    text = render_site_conf(_site())
    assert not re.findall(r"@[A-Z_]+@", text)
    assert _option(text, "address") == ["cloud.example:8883"]
    assert _option(text, "remote_clientid") == _option(text, "remote_username") == ["plant-7"]
    assert _option(text, "local_clientid") == ["local.plant-7"]
    assert _option(text, "cleansession") == _option(text, "local_cleansession") == ["false"]
    assert "robots/+/sensors/+ out 1" in _option(text, "topic")
    assert "robots/+/status out 1" in _option(text, "topic")
    assert _option(text, "notifications") == ["true"]
    assert _option(text, "notification_topic") == [site_status_topic("plant-7")]
    # 2.0.11 ignores a single restart_timeout value; 2.0.15-2.0.19 expire the bridge's
    # restored session with persistent_client_expiration (docs/edge.md).
    assert len(_option(text, "restart_timeout")[0].split()) == 2
    assert not _option(text, "persistent_client_expiration")
    assert _option(text, "persistence") == ["true"]
    # No TLS unless asked for.
    assert not _option(text, "bridge_cafile")


def test_tls_to_the_cloud_and_local_places() -> None:
    text = render_site_conf(
        _site(
            cloud_cafile=Path("/etc/ca.crt"),
            port=21999,
            bind="127.0.0.1",
            data_dir=Path("/d"),
            auth_dir=Path("/a"),
            pid_file=Path("/p.pid"),
        )
    )
    assert _option(text, "bridge_cafile") == ["/etc/ca.crt"]
    assert _option(text, "bridge_insecure") == ["false"]
    assert _option(text, "listener") == ["21999 127.0.0.1"]
    assert _option(text, "persistence_location") == ["/d/"]
    assert _option(text, "password_file") == ["/a/passwd"]
    # Global options come before the bridge section.
    assert text.index("pid_file /p.pid") < text.index("connection cloud")


@pytest.mark.parametrize("bad", [{"site_id": "a/b"}, {"site_id": "+"}, {"site_password": "a b"}])
def test_a_site_that_would_break_the_config_is_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        _site(**bad)


def test_the_site_identity_publishes_only_for_its_robots_and_its_own_topics() -> None:
    site = Identity.site("plant-7", "hash", ["r1", "r2"])
    assert site.role is Role.SITE
    assert site.acl_lines() == [
        "user plant-7",
        "topic deny robots/plant-7/#",
        "topic write robots/r1/#",
        "topic write robots/r2/#",
        "topic write sites/plant-7/#",
    ]
    with pytest.raises(IdentityError):
        Identity.site("plant-7", "hash", [])
    with pytest.raises(IdentityError):
        Identity.site("plant.7", "hash", ["r1"])
    # The RoboSense bridges and operators read the sites' status.
    assert "topic read sites/+/status" in Identity("b", Role.BRIDGE, None).acl_lines()


def test_site_status_topics() -> None:
    assert parse_site_status_topic(site_status_topic("plant-7")) == "plant-7"
    assert parse_site_status_topic("sites/plant-7/broker/store") is None
    assert parse_site_status_topic("robots/r1/status") is None


def test_python_m_edge_conf_writes_an_owner_only_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    out = tmp_path / "site.conf"
    done = run_here(
        [sys.executable, "-m", "edge", "conf", "--site", "plant-7", "--cloud", "cloud:1884",
         "--password-file", str(tmp_path / "pw"), "--out", str(out)],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert "remote_password s3cret" in out.read_text()
