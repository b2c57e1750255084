from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_auth.identities import ROBOT_PATTERN, Identity, IdentityError, Role
from mqtt_auth.passwords import hash_password, verify_password
from mqtt_auth.store import AuthFiles, IdentityStore


def test_files_follow_the_store(tmp_path: Path) -> None:
    store = IdentityStore(AuthFiles(tmp_path))
    store.put(
        Identity.robot("r1", hash_password("p1")),
        Identity.gateway("gw-1", hash_password("g"), ["r2", "r3"]),
        Identity("op", Role.OPERATOR, hash_password("o")),
        Identity.robot("cert-only", None),
        Identity.gateway("r4", hash_password("g"), ["r4", "r4.bad"]),
    )
    passwd = dict(line.split(":", 1) for line in store.files.password_file.read_text().split())
    assert sorted(passwd) == ["gw-1", "op", "r1", "r4"]  # certificate-only robots have no password
    assert verify_password("p1", passwd["r1"])
    acl = store.files.acl_file.read_text()
    assert ROBOT_PATTERN in acl
    assert "user r1" not in acl  # the pattern covers robots
    assert "user gw-1\ntopic deny robots/gw-1/#\ntopic write robots/r2/#\n" in acl
    assert "user op\ntopic deny robots/op/#\ntopic read robots/#\n" in acl
    # A gateway named after one of its robots may publish as that robot.
    assert "user r4\ntopic write robots/r4/#\ntopic write robots/r4.bad/#\n" in acl
    assert store.remove(["r1", "nobody"]) == ["r1"]
    assert "r1:" not in store.files.password_file.read_text()


def test_a_robot_never_replaces_another_role(tmp_path: Path) -> None:
    store = IdentityStore(AuthFiles(tmp_path))
    store.put(Identity("bridge-1", Role.BRIDGE, hash_password("b")))
    with pytest.raises(IdentityError):
        store.put(Identity.robot("bridge-1", hash_password("mine now")))
    identity = store.get("bridge-1")
    assert identity is not None and identity.role is Role.BRIDGE


@pytest.mark.parametrize("name", ["a/b", "a+b", "a#", "", "x" * 65, "a b", "a:b"])
def test_usernames_that_would_break_the_files_or_the_acl_are_refused(name: str) -> None:
    with pytest.raises(IdentityError):
        Identity(name, Role.OPERATOR, None)
