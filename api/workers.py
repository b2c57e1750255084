"""Several uvicorn workers, each listening on a socket of its own (SO_REUSEPORT).

uvicorn's workers share the one socket their parent bound, and whichever worker wakes first
accepts every connection waiting: 32 connections opened at once all landed on one worker,
which ran at ~90 % of a core while the other idled (issue 15). With a socket per worker, all
bound to the same address with SO_REUSEPORT, the kernel picks the worker of each new
connection by a hash of its addresses, so connections spread evenly whatever their timing.

The supervisor is uvicorn's own (restarts, signals, health pings); only its worker differs:
it closes the socket the parent passes (bound, never listening, it only holds the port and
says which one) and listens on a new one. A dead worker's socket dies with it; its
replacement binds a new one.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import multiprocess


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not listening yet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _OwnSocketWorker(multiprocess.Process):
    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        for placeholder in sockets or ():
            placeholder.close()
        super().target([reuseport_socket(self.config.host, self.config.port)])


def run_workers(config: uvicorn.Config) -> None:
    """Runs `config.workers` workers of `config` (an import string app), one socket each."""
    placeholder = reuseport_socket(config.host, config.port)
    config.port = placeholder.getsockname()[1]  # port 0: every worker on the one picked here
    # uvicorn's supervisor makes its workers by this module-level name (pinned version).
    multiprocess.Process = _OwnSocketWorker  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[placeholder]).run()
    finally:
        placeholder.close()
