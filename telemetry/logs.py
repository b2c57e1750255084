"""Structured (JSON lines) logging for every RoboSense process, and how a log line names a
service it cannot reach (service, address, cause; never a password)."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pythonjsonlogger.json import JsonFormatter

# The port a URL without one means, per scheme.
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379, "mqtt": 1883}
_SERVICES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "redis": "redis",
    "rediss": "redis",
    "nats": "nats",
}


def configure_logging(*, level: str, process: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process": process},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    # A crash is a log line too (its traceback inside the JSON), not plain text on stderr.
    def log_uncaught(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        logging.getLogger(process).critical(
            "uncaught exception: %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb)
        )

    sys.excepthook = log_uncaught


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def service_address(url: str) -> str:
    """`host:port` of a service URL, with the scheme's default port when it has none."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    host = parts.hostname or "localhost"
    return f"{host}:{port}" if port else host


def unreachable(url: str, exc: BaseException | None = None, **extra: Any) -> dict[str, Any]:
    """The `extra` of a log line about a service that cannot be reached or refused us."""
    scheme = urlsplit(url).scheme
    fields: dict[str, Any] = {
        "service": _SERVICES.get(scheme, scheme),
        "address": service_address(url),
        "url": redact_url(url),
    }
    if exc is not None:
        fields["error"] = f"{type(exc).__name__}: {exc}".strip()
    return {**fields, **extra}
