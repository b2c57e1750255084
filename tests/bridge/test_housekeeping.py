"""What the bridge bounds and repairs: statuses of unregistered robots, dead letters, counters
after Redis comes back stale."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from harness.bridge import BridgeProcess
from harness.publisher import Publisher, battery_messages
from harness.services import RedisServer
from harness.waiting import eventually
from ingest.counters import Counters
from tests.conftest import StartBridge


def retained_status(publisher: Publisher, robot_ids: list[str], status: bytes) -> None:
    infos = [
        publisher.client.publish(f"robots/{r}/status", status, qos=1, retain=True)
        for r in robot_ids
    ]
    for info in infos:
        info.wait_for_publish(timeout=30)


async def status_of(counters: Counters, robot_id: str) -> dict[str, Any]:
    """A robot's status document through the public read API ({} when it has none)."""
    [status], _ = await counters.robot_live([robot_id])
    return orjson.loads(status) if status is not None else {}


async def metric(bridge: BridgeProcess, name: str) -> float:
    try:
        return bridge.metric(name)
    except KeyError:
        return 0.0


async def test_statuses_of_unregistered_robots_are_not_tracked(
    bridge: BridgeProcess, publisher: Publisher, counters: Counters, registered: asyncpg.Pool[Any]
) -> None:
    fakes = [f"fake-{i}" for i in range(300)]
    retained_status(publisher, [*fakes, "r1"], b"online")

    async def online() -> Any:
        return (await status_of(counters, "r1")).get("status")

    assert await eventually(online, "online") == "online"
    assert await eventually(lambda: metric(bridge, "bridge_statuses_ignored_total"), 300.0) == 300
    assert await counters.status_robot_ids() == ["r1"]


async def test_stale_statuses_are_pruned_and_late_registrations_get_theirs(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    publisher: Publisher,
    counters: Counters,
) -> None:
    # Left by an older bridge that tracked any id (in counters that exist: no rebuild).
    await counters.mark_built(datetime.now(UTC) - timedelta(hours=1))
    await counters.set_statuses([(f"junk-{i}", "online", 1) for i in range(500)])
    await counters.set_statuses([("r2", "offline", 1)])
    retained_status(publisher, ["late"], b"online")  # not registered yet
    bridge = start_bridge(partition_interval_s="1")

    async def tracked() -> list[str]:
        return sorted(await counters.status_robot_ids())

    assert await eventually(tracked, ["r2"]) == ["r2"]
    assert await metric(bridge, "bridge_statuses_pruned_total") == 500
    await registered.execute("INSERT INTO robots (id) VALUES ('late')")
    # The hourly (here: every second) refresh brings the retained status of `late` again.
    assert await eventually(tracked, ["late", "r2"]) == ["late", "r2"]
    # Later refreshes resend it; when it changed stays when it changed.
    first = await status_of(counters, "late")
    received = await metric(bridge, "bridge_messages_received_total")
    await asyncio.sleep(2.5)
    assert await metric(bridge, "bridge_messages_received_total") > received  # resent
    assert await status_of(counters, "late") == first
    assert first["status"] == "online"


async def test_the_bridge_starts_when_it_creates_partitions(
    clean_db: asyncpg.Pool[Any], start_bridge: StartBridge
) -> None:
    """Partitions further ahead than the session's database has: the bridge creates them at
    start and logs it (that log line once made the bridge exit: `created` is a LogRecord
    attribute)."""
    ahead = (datetime.now(UTC) + timedelta(days=9)).strftime("%Y%m%d")
    bridge = start_bridge(partition_days_ahead="9")
    assert bridge.running
    assert '"partitions maintained"' in bridge.log_path.read_text()
    tables = await clean_db.fetch("SELECT relname FROM pg_class WHERE relname LIKE $1", f"%{ahead}")
    assert len(tables) == 1


async def test_old_dead_letters_are_deleted(
    registered: asyncpg.Pool[Any], start_bridge: StartBridge
) -> None:
    now = datetime.now(UTC)
    await registered.executemany(
        "INSERT INTO dead_letters (received_at, topic, reason, detail, payload, payload_size) "
        "VALUES ($1, 'robots/x/sensors/imu', 'invalid_json', '', ''::bytea, 0)",
        [(now - timedelta(days=age),) for age in (0, 1, 6.9, 7.1, 8, 30, 30)],
    )
    bridge = start_bridge(dead_letter_retention_days="7")

    async def ages() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM dead_letters")
        return n

    assert await eventually(ages, 3) == 3
    assert (
        await registered.fetchval(
            "SELECT count(*) FROM dead_letters WHERE received_at < now() - interval '7 days'"
        )
        == 0
    )
    assert await eventually(lambda: metric(bridge, "bridge_dead_letters_expired_total"), 4.0) == 4


async def test_a_flooding_source_keeps_its_quota_of_dead_letters(
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    publisher: Publisher,
    counters: Counters,
) -> None:
    bridge = start_bridge(dead_letters_per_source_per_minute="50")
    # The quota is per minute: start early in one, so the flood does not straddle two.
    if time.time() % 60 > 30:
        await asyncio.sleep(60.5 - time.time() % 60)
    start = int(time.time() * 1000) - 5_000
    publisher.publish_all(
        battery_messages("stranger", 600, start_ms=start)
        + battery_messages("visitor", 20, start_ms=start)
        + battery_messages("r1", 100, start_ms=start)
    )

    async def stored() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(stored, 100) == 100

    async def dropped() -> float:
        return await metric(bridge, "bridge_dead_letters_over_quota_total")

    assert await eventually(dropped, 550.0) == 550.0
    rows = dict(
        await registered.fetch(
            "SELECT split_part(topic, '/', 2), count(*) FROM dead_letters GROUP BY 1"
        )
    )
    assert rows == {"stranger": 50, "visitor": 20}
    # Every refusal is still counted.
    assert bridge.metric('bridge_rejected_total{reason="unknown_robot"}') == 620


@pytest.mark.parametrize("bridge_running", [True, False], ids=["bridge-running", "bridge-down"])
async def test_counters_and_statuses_recover_when_redis_comes_back_stale(
    bridge_running: bool,
    registered: asyncpg.Pool[Any],
    start_bridge: StartBridge,
    redis_prefix: str,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    with RedisServer(workdir=tmp_path / "redis") as redis_server:
        bridge = start_bridge(redis_url=redis_server.url, journal_replay_interval_s="0.5")
        client = Redis.from_url(redis_server.url)
        counters = Counters(redis=client, prefix=redis_prefix)
        start = int(time.time() * 1000) - 30_000
        minutes = sorted({(start + i) // 60000 * 60 for i in range(0, 5001, 500)})

        async def counted() -> int:
            return sum(m.get("*", 0) for m in (await counters.window(minutes, top=0)).totals)

        async def status(robot: str) -> Any:
            return (await status_of(counters, robot)).get("status")

        try:
            retained_status(publisher, ["r1"], b"online")
            publisher.publish_all(battery_messages("r1", 2000, start_ms=start, per_message=50))
            assert await eventually(counted, 2000) == 2000
            assert await eventually(lambda: status("r1"), "online") == "online"
            await client.save()  # the snapshot Redis will come back with
            retained_status(publisher, ["r2"], b"online")
            publisher.publish_all(
                battery_messages("r2", 3000, start_ms=start + 2000, per_message=50)
            )
            assert await eventually(counted, 5000) == 5000
            assert await eventually(lambda: status("r2"), "online") == "online"
            # One more commit retires the journal entries of those 3,000: replay cannot bring
            # them back, only the reconciliation can.
            publisher.publish_all(battery_messages("r3", 1, start_ms=start + 5000))
            assert await eventually(counted, 5001) == 5001

            if not bridge_running:
                bridge.terminate()
            redis_server.kill()
            redis_server.start()  # loads the snapshot: stale, not empty
            await client.aclose()
            client = Redis.from_url(redis_server.url)
            counters = Counters(redis=client, prefix=redis_prefix)
            assert await counted() < 5001  # the fault: stale
            if not bridge_running:
                bridge.start()
            # The bridge sees the restart (the snapshot holds the run_id it saw before),
            # reconciles every counted minute and has the broker resend the retained statuses
            # (a bridge that starts subscribes, which does the same).
            assert await eventually(counted, 5001) == 5001
            assert await eventually(lambda: status("r2"), "online") == "online"
            assert await metric(bridge, "bridge_counter_repairs_total") >= 1
            assert await metric(bridge, "bridge_counter_drift_readings_total") == 3000
            if bridge_running:
                assert '"Redis lost or restarted' in bridge.log_path.read_text()
            [latest] = await counters.latest(["r1"])
            assert orjson.loads(latest["battery"])["seq"] == 1999
        finally:
            bridge.stop()
            await client.aclose()
