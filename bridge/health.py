"""The bridge's HTTP surface: `/metrics` (Prometheus), `/healthz` (alive) and `/readyz`.

Ready means: subscribed to the broker, and not stalled. Stalled means messages have been
waiting longer than `stall_after_s` and nothing was committed meanwhile: a database that stays
away, or any bug that keeps the flusher from committing. The server runs in its own thread and
reads the pipeline's state directly, so it still answers when the event loop is stuck.

A port already in use (a previous bridge still stopping) must not stop ingest: the bridge says
so once, runs without this surface, and binds as soon as the port is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from bridge import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]
    stalled_s: float


class ReadinessProbe:
    """Decides readiness from the subscriber's and the pipeline's state (any thread)."""

    def __init__(
        self,
        *,
        subscribed: Callable[[], bool],
        oldest_waiting: Callable[[], float | None],
        last_commit: Callable[[], float],
        waiting: Callable[[], int],
        stall_after_s: float,
    ) -> None:
        self._subscribed = subscribed
        self._oldest_waiting = oldest_waiting
        self._last_commit = last_commit
        self._waiting = waiting
        self.stall_after_s = stall_after_s

    def check(self, now: float | None = None) -> Readiness:
        now = time.time() if now is None else now
        reasons: list[str] = []
        if not self._subscribed():
            reasons.append("not subscribed to the broker")
        oldest = self._oldest_waiting()
        # Time without progress while messages wait: since the oldest arrived, or since the
        # last commit if that came later.
        stalled_s = 0.0 if oldest is None else max(now - max(oldest, self._last_commit()), 0.0)
        if stalled_s > self.stall_after_s:
            reasons.append(
                f"stalled: no commit for {stalled_s:.0f} s while {self._waiting()} messages wait"
            )
        return Readiness(not reasons, tuple(reasons), stalled_s)


async def watch_readiness(
    probe: ReadinessProbe, *, stopping: asyncio.Event, interval_s: float = 1.0
) -> None:
    """Publishes readiness as metrics and logs each change, with its reasons, from the first
    time the bridge is ready on (until then it is starting: app.py logs that)."""
    was_ready: bool | None = None
    while not stopping.is_set():
        state = probe.check()
        metrics.READY.set(1 if state.ready else 0)
        metrics.STALLED_SECONDS.set(state.stalled_s)
        if was_ready is not None and state.ready != was_ready:
            if state.ready:
                log.info("bridge ready again")
            else:
                log.warning("bridge not ready", extra={"reasons": list(state.reasons)})
        if state.ready or was_ready is not None:
            was_ready = state.ready
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval_s)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every second would flood the log."""


def _json(start_response: Callable[..., Any], status: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _app(probe: ReadinessProbe) -> Callable[..., Iterable[bytes]]:
    prometheus = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, "200 OK", b'{"alive":true}')
        if path == "/readyz":
            state = probe.check()
            body = orjson.dumps({"ready": state.ready, "reasons": list(state.reasons)})
            return _json(
                start_response, "200 OK" if state.ready else "503 Service Unavailable", body
            )
        result: Iterable[bytes] = prometheus(environ, start_response)
        return result

    return app


class HealthServer:
    """Serves the surface from a thread; `serve` binds it, retrying while the port is busy."""

    def __init__(self, *, host: str, port: int, probe: ReadinessProbe) -> None:
        self.host = host
        self.port = port
        self._app = _app(probe)
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def try_bind(self) -> bool:
        try:
            server = make_server(
                self.host,
                self.port,
                self._app,
                server_class=_ThreadingWSGIServer,
                handler_class=_QuietHandler,
            )
        except OSError:
            return False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
        self._thread.start()
        return True

    async def serve(self, *, stopping: asyncio.Event, retry_s: float = 5.0) -> None:
        """Binds now or, if the port is taken, keeps trying in the background; warns once."""
        if self.try_bind():
            return
        log.warning(
            "metrics port in use; ingest goes on without /metrics and /readyz until it is free",
            extra={"host": self.host, "port": self.port},
        )
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), retry_s)
            if not stopping.is_set() and self.try_bind():
                log.info("metrics port bound", extra={"port": self.port})
                return

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
