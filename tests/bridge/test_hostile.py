"""Hostile input over MQTT: whatever a message holds, it is dead-lettered on its own and every
good reading around it is stored; the bridge stays up and never retries a message forever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from harness.bridge import BridgeProcess
from harness.publisher import Publisher
from harness.waiting import eventually

DEEP = 1000


def good(robot: str, ts: int, level: float = 50.0) -> tuple[str, bytes]:
    return f"robots/{robot}/sensors/battery", orjson.dumps({"ts": ts, "data": {"level": level}})


def hostile_cases(now: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason) of messages each refused as a whole with one dead letter."""
    battery = "robots/r1/sensors/battery"
    nested_list = b"[" * DEEP + b"1" + b"]" * DEEP
    nested_object = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    return [
        # Nesting that makes a recursive decoder exhaust the stack, in every position.
        (battery, b'{"readings":' + nested_list + b"}", "nesting_too_deep"),
        (battery, b'{"readings":[' + nested_list + b"]}", "nesting_too_deep"),
        (battery, b'{"ts":%d,"data":{"level":%s}}' % (now, nested_list), "nesting_too_deep"),
        (battery, b'{"ts":%d,"data":%s}' % (now, nested_object), "nesting_too_deep"),
        ("robots/r1/sensors/imu", b"[" * 100_000, "nesting_too_deep"),
        (
            battery,
            b'{"readings":[{"ts":%d,"data":' % now + nested_object + b"}]}",
            "nesting_too_deep",
        ),
        # NUL in a field name, a value, a timestamp, a nested key, a batch's reading, raw.
        (battery, b'{"ts":%d,"data":{"level":1,"\\u0000":1}}' % now, "invalid_schema"),
        (battery, b'{"ts":%d,"data":{"level":"\\u0000"}}' % now, "invalid_schema"),
        (battery, b'{"ts":"2026-01-01T00:00:00\\u0000Z","data":{"level":1}}', "invalid_schema"),
        (battery, b'{"ts":%d,"\\u0000data":{"level":1}}' % now, "invalid_schema"),
        (battery, b'{"readings":[{"ts":%d,"data":{"\\u0000":1}}]}' % now, "invalid_schema"),
        (battery, b'{"ts":%d,"data":{"level":1}}\x00' % now, "invalid_json"),
        (battery, b'{"ts":%d,"seq":"\\u0000","data":{"level":1}}' % now, "invalid_schema"),
        # A lone surrogate, which UTF-8 cannot encode, in a field name.
        (battery, b'{"ts":%d,"data":{"\\ud800":1}}' % now, "invalid_json"),
        # Not UTF-8.
        (battery, b'\xff\xfe{"ts":%d,"data":{"level":1}}' % now, "invalid_json"),
        (battery, b'{"ts":%d,"data":{"\xff\xfe":1}}' % now, "invalid_json"),
        # Huge: over the limit, and a large string inside the limit.
        (battery, b"[" * (300 * 1024), "payload_too_large"),
        (
            battery,
            b'{"ts":%d,"data":{"level":"%s"}}' % (now, b"\\u0000" * 40_000),
            "invalid_schema",
        ),
        # Wrong types everywhere.
        (battery, b"[]", "invalid_schema"),
        (battery, b'"reading"', "invalid_schema"),
        (battery, b"null", "invalid_schema"),
        (battery, b'{"ts":%d,"data":[1]}' % now, "invalid_schema"),
        (battery, b'{"ts":[],"data":{"level":1}}', "invalid_schema"),
        (battery, b'{"readings":{}}', "invalid_schema"),
        (battery, b'{"readings":"x"}', "invalid_schema"),
        (battery, b'{"ts":%d,"data":{"level":true}}' % now, "invalid_schema"),
    ]


async def test_hostile_messages_at_volume(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    """The issue's run: 3,000 good readings with a hostile message after every tenth."""
    now = int(time.time() * 1000)
    cases = hostile_cases(now)
    messages: list[tuple[str, bytes]] = []
    for i in range(3000):
        messages.append(good(f"r{i % 5 + 1}", now - 60_000 + i))
        if i % 10 == 9:
            topic, payload, _ = cases[(i // 10) % len(cases)]
            messages.append((topic, payload))
    publisher.publish_all(messages)

    async def counts() -> tuple[int, int]:
        """Readings stored; refusals dead-lettered, or counted past a source's quota."""
        row = await registered.fetchrow(
            "SELECT (SELECT count(*) FROM sensor_readings) AS readings, "
            "(SELECT count(*) FROM dead_letters) AS dead"
        )
        assert row is not None
        over_quota = bridge.metric_total("bridge_dead_letters_over_quota_total")
        return row["readings"], row["dead"] + int(over_quota)

    assert await eventually(counts, (3000, 300)) == (3000, 300)
    assert bridge.running
    assert "commit failed" not in bridge.log_path.read_text()


@pytest.fixture
async def check_dead_letters_topic(registered: asyncpg.Pool[Any]) -> AsyncIterator[None]:
    """A real refusal of a dead letter by PostgreSQL: no non-ASCII topics (removed after)."""
    await registered.execute(
        "ALTER TABLE dead_letters ADD CONSTRAINT test_ascii_topic CHECK (topic ~ '^[ -~]*$')"
    )
    try:
        yield
    finally:
        await registered.execute("ALTER TABLE dead_letters DROP CONSTRAINT test_ascii_topic")


async def test_hostile_messages_between_good_ones(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    now = int(time.time() * 1000)
    cases = hostile_cases(now)
    messages: list[tuple[str, bytes]] = []
    for i, (topic, payload, _) in enumerate(cases):
        messages.append(good("r1", now - 10_000 + i))
        messages.append((topic, payload))
        messages.append(good("r2", now - 10_000 + i))
    publisher.publish_all(messages)
    expected_good = 2 * len(cases)

    async def rows() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    async def reasons() -> list[str]:
        found = await registered.fetch("SELECT reason FROM dead_letters ORDER BY reason")
        return [r["reason"] for r in found]

    expected_reasons = sorted(reason for _, _, reason in cases)
    assert await eventually(rows, expected_good) == expected_good
    assert await eventually(reasons, expected_reasons) == expected_reasons

    # Text is stored with NUL escaped; the payload as sent.
    stored = await registered.fetch("SELECT detail, payload FROM dead_letters")
    nul_field = [
        r for r in stored if r["payload"] == b'{"ts":%d,"data":{"level":1,"\\u0000":1}}' % now
    ]
    assert len(nul_field) == 1
    assert nul_field[0]["detail"] == "Object contains unknown field `\\u0000` - at `$.data`"
    assert sum(b"\x00" in r["payload"] for r in stored) == 1
    deep = await registered.fetchval(
        "SELECT count(*) FROM dead_letters WHERE reason = 'nesting_too_deep' "
        "AND detail LIKE '%deeper than 16 levels%'"
    )
    assert deep == 6
    assert bridge.running
    assert bridge.metric('bridge_rejected_total{reason="nesting_too_deep"}') == 6.0
    # Nothing was retried: every refusal was the message's, none the service's.
    assert "commit failed" not in bridge.log_path.read_text()


@pytest.mark.usefixtures("check_dead_letters_topic")
async def test_dead_letter_refused_by_the_database_is_isolated(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    """PostgreSQL refuses the dead letter itself (a CHECK on its topic): it is stored again
    with ASCII text instead of being retried forever, and the good readings land."""
    now = int(time.time() * 1000)
    messages = [good("r1", now - 3), ("robots/r1/sensors/bätterie", b"{}"), good("r1", now - 2)]
    messages += [good("r2", now - 1000 + i) for i in range(200)]
    publisher.publish_all(messages)

    async def rows() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(rows, 202) == 202

    async def dead_letters() -> list[tuple[str, str]]:
        found = await registered.fetch("SELECT topic, reason FROM dead_letters")
        return [(r["topic"], r["reason"]) for r in found]

    expected = [("'robots/r1/sensors/b\\xe4tterie'", "unknown_sensor_type")]
    assert await eventually(dead_letters, expected) == expected
    stored = await registered.fetch("SELECT detail FROM dead_letters")
    assert stored[0]["detail"].startswith("dead letter refused by the database")
    assert bridge.metric('bridge_db_errors_total{kind="data"}') >= 1.0
    assert "commit failed" not in bridge.log_path.read_text()
    assert bridge.running


@pytest.fixture
async def poisoned_readings(registered: asyncpg.Pool[Any]) -> AsyncIterator[None]:
    """A real refusal of a reading by PostgreSQL: a CHECK no contract reading breaks but one
    sequence number (removed after)."""
    await registered.execute(
        "ALTER TABLE sensor_readings ADD CONSTRAINT test_poison CHECK (seq IS DISTINCT FROM 666)"
    )
    try:
        yield
    finally:
        await registered.execute("ALTER TABLE sensor_readings DROP CONSTRAINT test_poison")


@pytest.mark.usefixtures("poisoned_readings", "check_dead_letters_topic")
async def test_refused_reading_and_refused_dead_letter_in_one_batch(
    start_bridge: Any, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    """A batch where PostgreSQL refuses a reading and, separately, a dead letter: each is
    isolated; every other reading of the batch is stored."""
    bridge = start_bridge(batch_max_delay_ms="500", batch_min_delay_ms="400")
    now = int(time.time() * 1000)
    readings = [{"ts": now - 500 + i, "seq": 600 + i, "data": {"level": 1}} for i in range(100)]
    messages = [
        ("robots/r3/sensors/battery", orjson.dumps({"readings": readings})),
        ("robots/r3/sensors/ßonar", b"{}"),
        *[good("r4", now - 2000 + i) for i in range(50)],
    ]
    publisher.publish_all(messages)

    async def rows() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(rows, 149) == 149

    async def reasons() -> list[str]:
        found = await registered.fetch("SELECT reason FROM dead_letters ORDER BY reason")
        return [r["reason"] for r in found]

    assert await eventually(reasons, ["rejected_by_database", "unknown_sensor_type"]) == [
        "rejected_by_database",
        "unknown_sensor_type",
    ]
    assert await registered.fetchval("SELECT count(*) FROM sensor_readings WHERE seq = 666") == 0
    assert bridge.running


async def test_retained_junk_is_dead_lettered_once_not_at_each_restart(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    now = int(time.time() * 1000)
    for topic, payload in [
        ("robots/r1/sensors/battery", b"junk"),
        good("r2", now - 5000),
    ]:
        info = publisher.client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    async def counts() -> tuple[int, int]:
        row = await registered.fetchrow(
            "SELECT (SELECT count(*) FROM sensor_readings) AS readings, "
            "(SELECT count(*) FROM dead_letters) AS dead"
        )
        assert row is not None
        return row["readings"], row["dead"]

    assert await eventually(counts, (1, 1)) == (1, 1)
    for restart in range(2):
        bridge.terminate()
        bridge.start()
        # A live reading after the restart: once it is stored, the retained copies the broker
        # sent at subscription were handled too (one session, in order).
        publisher.publish_all([good("r3", now - 1000 + restart)])
        assert await eventually(counts, (2 + restart, 1)) == (2 + restart, 1)
        assert bridge.metric("bridge_retained_readings_ignored_total") == 2.0
    reasons = await registered.fetch("SELECT reason FROM dead_letters")
    assert [r["reason"] for r in reasons] == ["invalid_json"]


async def test_conflicting_duplicates_counted_apart_from_redeliveries(
    bridge: BridgeProcess, publisher: Publisher, registered: asyncpg.Pool[Any]
) -> None:
    now = int(time.time() * 1000)
    publisher.publish_all([good("r1", now - 100, level=10)])

    async def rows() -> int:
        n: int = await registered.fetchval("SELECT count(*) FROM sensor_readings")
        return n

    assert await eventually(rows, 1) == 1
    # A resend (same data), two conflicting readings, and one in a batch with a new reading.
    publisher.publish_all(
        [
            good("r1", now - 100, level=10),
            good("r1", now - 100, level=11),
            (
                "robots/r1/sensors/battery",
                orjson.dumps(
                    {
                        "readings": [
                            {"ts": now - 100, "data": {"level": 12}},
                            {"ts": now - 99, "data": {"level": 13}},
                        ]
                    }
                ),
            ),
        ]
    )
    assert await eventually(rows, 2) == 2

    async def conflicts() -> int:
        n: int = await registered.fetchval(
            "SELECT count(*) FROM dead_letters WHERE reason = 'conflicting_duplicate'"
        )
        return n

    assert await eventually(conflicts, 2) == 2

    async def conflicting_metric() -> float:
        return bridge.metric("bridge_readings_conflicting_total")

    assert await eventually(conflicting_metric, 2.0) == 2.0
    assert bridge.metric("bridge_readings_duplicate_total") == 1.0
    assert bridge.metric('bridge_rejected_total{reason="conflicting_duplicate"}') == 2.0
