"""Private PostgreSQL clusters for the read-replica tests: a streaming replica made with
`pg_basebackup -R`, and, when the machine's server does not allow replication connections, a
primary of our own made with `initdb`. Both live in a temporary directory on a free port and
run the machine's PostgreSQL 15 binaries; the machine's server and its configuration are only
ever read.

PostgreSQL refuses to run as root: as root, the server commands run as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.lifecycle import Lifecycle
from harness.services import free_port

_SERVER_USER = "postgres"


class ReplicationRefused(RuntimeError):
    """The primary refuses a replication connection (pg_hba.conf has no `replication` line,
    or wal_level / max_wal_senders forbid it): a setting of the primary would have to change."""


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", _SERVER_USER, "--", *command]
    return command


def _run(command: list[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=timeout, check=False
    )


def _private_dir(prefix: str) -> Path:
    """A directory the server user owns, under a path it can reach (pytest's tmp_path is
    private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(path, _SERVER_USER, _SERVER_USER)
    return path


class LocalPostgres(Lifecycle):
    """A PostgreSQL cluster in `data_dir`, on 127.0.0.1:`port`, its socket in its directory."""

    def __init__(self, *, base: Path, port: int, pg_bin: Path) -> None:
        self.pg_bin = pg_bin
        self.base = base
        self.data_dir = base / "data"
        self.port = port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.base}"
        )
        done = _run(
            [
                str(self.pg_bin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.base / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        if done.returncode != 0:
            log = (self.base / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}{done.stdout}\n{log}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            _run(
                [str(self.pg_bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def end(self) -> None:
        self.remove()


def new_primary(*, pg_bin: Path) -> LocalPostgres:
    """An empty primary of our own (trust for local and 127.0.0.1, replication included:
    initdb's pg_hba.conf with --auth=trust; wal_level `replica` is the default)."""
    server = LocalPostgres(base=_private_dir("rs-pg-primary-"), port=free_port(), pg_bin=pg_bin)
    done = _run(
        [str(pg_bin / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "--auth=trust"]
    )
    if done.returncode != 0:
        server.remove()
        raise RuntimeError(f"initdb failed: {done.stderr}")
    return server


def new_replica(*, primary_host: str, primary_port: int, pg_bin: Path) -> LocalPostgres:
    """A streaming replica of the primary at host:port: `pg_basebackup -R` (a standby.signal
    and primary_conninfo), WAL streamed during the copy."""
    replica = LocalPostgres(base=_private_dir("rs-pg-replica-"), port=free_port(), pg_bin=pg_bin)
    done = _run(
        [
            str(pg_bin / "pg_basebackup"),
            "-h",
            primary_host,
            "-p",
            str(primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica.data_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ]
    )
    if done.returncode != 0:
        replica.remove()
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
        if "pg_hba.conf" in reason or "replication" in reason or "wal_level" in reason:
            raise ReplicationRefused(reason)
        raise RuntimeError(f"pg_basebackup failed: {done.stderr}")
    # Debian keeps postgresql.conf and pg_hba.conf outside the data directory (/etc), so a
    # copy of its cluster has none: give the replica minimal ones of its own.
    written = []
    if not (replica.data_dir / "postgresql.conf").exists():
        written.append(("postgresql.conf", "hot_standby = on\n"))
    if not (replica.data_dir / "pg_hba.conf").exists():
        written.append(("pg_hba.conf", "local all all trust\nhost all all 127.0.0.1/32 trust\n"))
    if not (replica.data_dir / "pg_ident.conf").exists():
        written.append(("pg_ident.conf", ""))
    for name, text in written:
        path = replica.data_dir / name
        path.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(path, _SERVER_USER, _SERVER_USER)
    return replica
