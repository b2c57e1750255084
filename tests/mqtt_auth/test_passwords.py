from __future__ import annotations

import subprocess
from pathlib import Path

from mqtt_auth.passwords import derive_password, hash_password, verify_password


def test_a_hash_verifies_its_password_only() -> None:
    encoded = hash_password("s3cret")
    assert encoded.startswith("$7$101$")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert hash_password("s3cret") != encoded  # salted


def test_we_read_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), "alice", "pa:ss"], check=True)
    encoded = path.read_text().strip().split(":", 1)[1]
    assert verify_password("pa:ss", encoded)
    assert not verify_password("pass", encoded)


def test_derived_passwords_differ_by_identity_and_secret() -> None:
    assert derive_password("k", "r1") == derive_password("k", "r1")
    assert derive_password("k", "r1") != derive_password("k", "r2")
    assert derive_password("k", "r1") != derive_password("k2", "r1")
