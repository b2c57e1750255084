"""The identity store: one JSON file, rendered into Mosquitto's password and ACL files.

`identities.json` is the truth; `passwd` and `acl` are rewritten from it on every change
(atomically: readers see the old file or the new one) and the broker is told with SIGHUP,
which makes Mosquitto 2.0 re-read both files, check every connected client against them and
disconnect those whose password no longer matches, keeping everyone else connected. Several
processes (API workers, the CLI) may change the store at once: a lock file serialises them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from mqtt_auth.identities import Identity, IdentityError, render_acl_file, render_password_file

log = logging.getLogger(__name__)

STATE_FILE = "identities.json"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
_LOCK_FILE = ".lock"


class BrokerSignalError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class AuthFiles:
    """Where the files live and how to reach the broker that reads them."""

    directory: Path
    # Mosquitto's pid file (`pid_file` in its config), to send SIGHUP after a change. None: the
    # broker is elsewhere (or not started yet) and reloads some other way (docs/security.md).
    pid_file: Path | None = None

    @property
    def password_file(self) -> Path:
        return self.directory / PASSWORD_FILE

    @property
    def acl_file(self) -> Path:
        return self.directory / ACL_FILE


class IdentityStore:
    def __init__(self, files: AuthFiles) -> None:
        self.files = files
        files.directory.mkdir(parents=True, exist_ok=True)

    def identities(self) -> list[Identity]:
        return list(self._load().values())

    def get(self, username: str) -> Identity | None:
        return self._load().get(username)

    def put(self, *identities: Identity) -> None:
        """Adds or replaces identities (a new password rotates the old one out). An identity
        never replaces one of another role: a robot registered as `bridge-1` must not take
        over the bridge's identity, its client id and its session."""
        with self._changing() as current:
            for identity in identities:
                existing = current.get(identity.username)
                if existing is not None and existing.role is not identity.role:
                    raise IdentityError(
                        f"{identity.username!r} is already a {existing.role}, not a {identity.role}"
                    )
                current[identity.username] = identity

    def remove(self, usernames: Iterable[str]) -> list[str]:
        """Removes identities; returns those that existed. The broker drops their sessions."""
        wanted = set(usernames)
        with self._changing() as current:
            removed = [u for u in wanted if u in current]
            for username in removed:
                del current[username]
        return sorted(removed)

    def render(self) -> None:
        """Writes passwd and acl from the state (e.g. before the broker first starts)."""
        with self._changing():
            pass

    def reload_broker(self) -> bool:
        """SIGHUP to the broker of the pid file; False when there is none to tell.

        A broker that is not running (no pid file, or a stale one) reads the files when it
        starts, so that is not an error; a pid file that cannot be read or signalled is."""
        pid_file = self.files.pid_file
        if pid_file is None:
            return False
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (FileNotFoundError, ProcessLookupError):
            log.warning(
                "broker not running; it reads the files when it starts",
                extra={"pid_file": str(pid_file)},
            )
            return False
        except (OSError, ValueError) as exc:
            raise BrokerSignalError(f"cannot signal the broker of {pid_file}: {exc}") from exc
        return True

    @contextmanager
    def _changing(self) -> Iterator[dict[str, Identity]]:
        with self._locked():
            current = self._load()
            yield current
            ordered = [current[u] for u in sorted(current)]
            state = {i.username: i.to_json() for i in ordered}
            _write_atomic(
                self.files.directory / STATE_FILE,
                orjson.dumps(state, option=orjson.OPT_INDENT_2).decode() + "\n",
                mode=0o600,
            )
            _write_atomic(self.files.password_file, render_password_file(ordered))
            _write_atomic(self.files.acl_file, render_acl_file(ordered))
        self.reload_broker()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.files.directory / _LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Identity]:
        return load_identities(self.files.directory)


def load_identities(directory: Path) -> dict[str, Identity]:
    """The identities of a store, read only (no lock: the state file is replaced atomically);
    none when it has no state file yet."""
    try:
        raw = orjson.loads((directory / STATE_FILE).read_bytes())
    except FileNotFoundError:
        return {}
    return {username: Identity.from_json(username, data) for username, data in raw.items()}


def _write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        # Mosquitto may run as another user (it drops root to `mosquitto`) and must read passwd
        # and acl (hashes only); the state file is for this module alone.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


SHARE_GROUP_FILE = "share-group"


def share_group(files: AuthFiles) -> str:
    """The bridges' share group name, made once per store.

    Mosquitto 2.0's ACL file cannot refuse a SUBSCRIBE (it checks reads at delivery), and a
    client that joins a share group without read access still takes its turn and drops the
    message: the group's name is therefore a secret that only bridges are given
    (docs/security.md)."""
    path = files.directory / SHARE_GROUP_FILE
    files.directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(f"robosense-{secrets.token_hex(12)}\n")
    return path.read_text().strip()
