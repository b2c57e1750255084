"""What both Locust mixes share (ours in locustfile.py, the older clients' in
locustfile_older.py): a clock that never repeats, and the registration of the fleet."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

import httpx


class UniqueClock:
    """Every POST is a new reading (a repeated timestamp would be a no-op duplicate): each
    call is at least a microsecond after the last. One Locust process, one clock."""

    def __init__(self) -> None:
        self._last_us = 0

    def now(self) -> datetime:
        self._last_us = max(int(time.time() * 1e6), self._last_us + 1)
        return datetime.fromtimestamp(self._last_us / 1e6, UTC)


def register_robots(
    host: str | None, *, api_key: str, robot_ids: Iterable[object], model: str
) -> None:
    """Registers the mix's robots (ids as strings) before the load starts."""
    with httpx.Client(
        base_url=host or "http://127.0.0.1:8000", headers={"X-API-Key": api_key}
    ) as client:
        for r in robot_ids:
            client.post("/api/robots", json={"id": str(r), "name": f"robot {r}", "model": model})
