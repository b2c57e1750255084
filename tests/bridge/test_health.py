"""The bridge's /readyz: false, with a metric and a log line naming why, while it stalls; and a
metrics port in use never stops ingest."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import asyncpg
import orjson

from bridge.health import Readiness, ReadinessProbe
from harness.bridge import BridgeProcess
from harness.publisher import Publisher, battery_messages
from harness.waiting import eventually
from tests.bridge.test_faults import cut_off_bridges
from tests.conftest import HARNESS, StartBridge


def readyz(bridge: BridgeProcess) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{bridge.metrics_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def ready_state(bridge: BridgeProcess) -> tuple[int, bool]:
    """(status, ready), or (0, False) while nothing listens."""
    try:
        status, body = await asyncio.to_thread(readyz, bridge)
    except urllib.error.URLError:
        return 0, False
    return status, body["ready"]


async def test_readyz_turns_false_while_commits_stall_and_back(
    start_bridge: StartBridge,
    publisher: Publisher,
    registered: asyncpg.Pool[Any],
    database_url: str,
) -> None:
    bridge = start_bridge(stall_after_s="2")
    assert await eventually(lambda: ready_state(bridge), (200, True)) == (200, True)
    database = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{HARNESS.postgres_url}/postgres")
    try:
        await cut_off_bridges(admin, database)
        publisher.publish_all(battery_messages("r1", 100))
        assert await eventually(lambda: ready_state(bridge), (503, False)) == (503, False)
        _, body = await asyncio.to_thread(readyz, bridge)
        assert len(body["reasons"]) == 1
        assert body["reasons"][0].startswith("stalled: no commit for ")
        assert body["reasons"][0].endswith(" s while 100 messages wait")
        assert await eventually(lambda: asyncio.to_thread(bridge.metric, "bridge_ready"), 0.0) == 0
        assert bridge.metric("bridge_stalled_seconds") > 2
        log = bridge.log_path.read_text()
        assert '"bridge not ready"' in log
        assert "stalled: no commit for" in log
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        assert await eventually(lambda: ready_state(bridge), (200, True)) == (200, True)
        stored = await eventually(
            lambda: registered.fetchval("SELECT count(*) FROM sensor_readings"), 100
        )
        assert stored == 100
        assert await eventually(lambda: asyncio.to_thread(bridge.metric, "bridge_ready"), 1.0) == 1
        assert '"bridge ready again"' in bridge.log_path.read_text()
    finally:
        await admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
        await admin.close()


async def test_idle_bridge_stays_ready(
    start_bridge: StartBridge, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    """No commit for longer than the stall time is fine when nothing waits."""
    bridge = start_bridge(stall_after_s="1")
    publisher.publish_all(battery_messages("r1", 10))
    assert (
        await eventually(lambda: registered.fetchval("SELECT count(*) FROM sensor_readings"), 10)
        == 10
    )
    await asyncio.sleep(2.5)
    assert await ready_state(bridge) == (200, True)
    publisher.publish_all(battery_messages("r1", 10, start_ms=1))
    assert await ready_state(bridge) == (200, True)


async def test_metrics_port_in_use_does_not_stop_ingest(
    start_bridge: StartBridge, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    """A second bridge whose metrics port is still held (by the first, stopping): it ingests,
    says so once, and serves /readyz as soon as the port is free."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        bridge = start_bridge(metrics_port=str(port))
        bridge.metrics_port = port
        publisher.publish_all(battery_messages("r1", 50))
        assert (
            await eventually(
                lambda: registered.fetchval("SELECT count(*) FROM sensor_readings"), 50
            )
            == 50
        )
        assert bridge.running
    finally:
        holder.close()
    assert await eventually(lambda: ready_state(bridge), (200, True)) == (200, True)
    log = bridge.log_path.read_text()
    assert log.count("metrics port in use") == 1
    assert '"metrics port bound"' in log


def test_readiness_probe_counts_only_time_without_commit_while_messages_wait() -> None:
    state: dict[str, Any] = {"oldest": None, "last_commit": 0.0, "subscribed": True}
    probe = ReadinessProbe(
        subscribed=lambda: state["subscribed"],
        oldest_waiting=lambda: state["oldest"],
        last_commit=lambda: state["last_commit"],
        waiting=lambda: 7,
        stall_after_s=30,
    )
    # Idle for long: nothing waits, ready.
    assert probe.check(now=1000.0).ready
    # A message arrived after a long idle time: its own age counts, not the idle time.
    state["oldest"] = 995.0
    assert probe.check(now=1000.0) == Readiness(True, (), 5.0)
    # Waiting 40 s without a commit: stalled, with the reason.
    state["oldest"] = 960.0
    assert probe.check(now=1000.0) == Readiness(
        False, ("stalled: no commit for 40 s while 7 messages wait",), 40.0
    )
    # A backlog older than the stall time, but commits keep coming: ready.
    state["last_commit"] = 990.0
    assert probe.check(now=1000.0).ready
    state["subscribed"] = False
    assert probe.check(now=1000.0).reasons == ("not subscribed to the broker",)
