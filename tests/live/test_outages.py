"""The live service through a Redis outage: it says so once, retries with backoff, and ticks
again when Redis is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.live import LiveProcess
from harness.services import Mosquitto, RedisServer
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role

pytestmark = pytest.mark.slow


async def test_redis_outage_is_reported_and_survived(
    clean_db: asyncpg.Pool[Any], mosquitto: Mosquitto, database_url: str, tmp_path: Path
) -> None:
    mosquitto.add(Identity("live", Role.LIVE, None))
    redis = RedisServer(workdir=tmp_path / "redis")
    redis.start()
    live = LiveProcess(
        database_url=database_url,
        redis_prefix="rs-outage:",
        redis_url=redis.url,
        mqtt_url=mosquitto.url_for("live"),
        log_path=tmp_path / "live.log",
        live_summary_hz="5",
    )
    try:
        live.start()

        async def said(text: str) -> int:
            return live.log_path.read_text().count(text)

        redis.kill()
        await eventually(lambda: said("live tick failed; retrying with backoff"), 1, timeout=30)
        redis.start()
        await eventually(lambda: said("live tick succeeds again"), 1, timeout=30)
        assert live.running
        # Said once per outage, not once per failed tick.
        assert await said("live tick failed; retrying with backoff") == 1
    finally:
        live.stop()
        redis.stop()
