"""The app factories: the one `python -m api` serves, and the one tests and tools build."""

from __future__ import annotations

import os
import sys

from harness.services import run_here
from tests.conftest import HARNESS

# Runs each factory's lifespan in a fresh interpreter (a test process must keep its own
# collector) and prints the collector's settings once started.
_SCRIPT = """
import asyncio, gc
from api.app import create_app, serve

async def started(app):
    async with app.router.lifespan_context(app):
        print(gc.get_threshold(), gc.get_freeze_count() > 0, flush=True)

asyncio.run(started(create_app()))
asyncio.run(started(serve()))
"""


def test_only_the_served_app_tunes_its_process_garbage_collector(
    database_url: str, redis_prefix: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": HARNESS.redis_url,
        "REDIS_PREFIX": f"{redis_prefix}gc:",
        "GC_YOUNG_THRESHOLD": "54321",
    }
    done = run_here([sys.executable, "-c", _SCRIPT], env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(700, 10, 10) False", "(54321, 20, 20) True"]
