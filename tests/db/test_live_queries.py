"""The live service's SQL: alerts open once per robot and kind, battery follows the newest
reading, dead letters counted per robot since an id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from db.alerts import clear_alert, open_alerts, raise_alert
from db.dead_letters import newest_dead_letter_id, refused_by_robot_since, store_dead_letters
from db.robots import follow_battery_readings
from telemetry.errors import RejectReason
from telemetry.payload import Rejection


async def _raise(pool: asyncpg.Pool[Any], robot: str | None, kind: str = "offline") -> Any:
    return await raise_alert(
        pool,
        kind=kind,
        severity="critical",
        robot_id=robot,
        raised_at_ms=1_700_000_000_000,
        message="m",
        detail={},
    )


async def test_an_open_alert_is_raised_once(clean_db: asyncpg.Pool[Any]) -> None:
    await clean_db.execute("TRUNCATE alerts")
    first, new = await _raise(clean_db, "r1")
    again, new_again = await _raise(clean_db, "r1")
    assert new and not new_again and again.id == first.id
    other, _ = await _raise(clean_db, "r1", "battery_low")
    assert other.id != first.id
    assert [a.id for a in await open_alerts(clean_db)] == [first.id, other.id]
    cleared = await clear_alert(clean_db, first.id, cleared_at_ms=1_700_000_001_000)
    assert cleared is not None and cleared.cleared_at == 1_700_000_001_000
    assert await clear_alert(clean_db, first.id, cleared_at_ms=1_700_000_002_000) is None
    # Cleared: the same robot and kind can be raised anew.
    third, new_third = await _raise(clean_db, "r1")
    assert new_third and third.id not in (first.id, other.id)
    assert await clean_db.fetchval("SELECT count(*) FROM alerts") == 3


async def test_one_open_alert_per_site(clean_db: asyncpg.Pool[Any]) -> None:
    await clean_db.execute("TRUNCATE alerts")

    async def raise_site(site: str) -> Any:
        return await raise_alert(
            clean_db,
            kind="site_unreachable",
            severity="critical",
            robot_id=None,
            raised_at_ms=1_700_000_000_000,
            message="m",
            detail={},
            site_id=site,
        )

    a, new_a = await raise_site("site-a")
    b, new_b = await raise_site("site-b")
    again, new_again = await raise_site("site-a")
    assert new_a and new_b and not new_again
    assert a.id != b.id and again.id == a.id and again.site_id == "site-a"
    assert a.robot_id is None
    # A robot's alert of the same kind is another alert.
    robot, new_robot = await _raise(clean_db, "site-a", "site_unreachable")
    assert new_robot and robot.id not in (a.id, b.id) and robot.site_id is None
    assert {(r.robot_id, r.site_id) for r in await open_alerts(clean_db)} == {
        (None, "site-a"),
        (None, "site-b"),
        ("site-a", None),
    }


async def test_battery_follows_the_newest_reading(clean_db: asyncpg.Pool[Any]) -> None:
    await clean_db.execute("INSERT INTO robots (id) VALUES ('r1')")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert await follow_battery_readings(clean_db, [("r1", 80.0, t0)]) == 1
    # An older reading does not overwrite a newer one.
    assert await follow_battery_readings(clean_db, [("r1", 90.0, t0 - timedelta(seconds=1))]) == 0
    # A PATCH (battery_level alone) holds until a newer reading.
    await clean_db.execute("UPDATE robots SET battery_level = 33 WHERE id = 'r1'")
    assert await follow_battery_readings(clean_db, [("r1", 79.0, t0)]) == 0
    assert await clean_db.fetchval("SELECT battery_level FROM robots WHERE id = 'r1'") == 33
    assert await follow_battery_readings(clean_db, [("r1", 70.0, t0 + timedelta(seconds=1))]) == 1
    assert await clean_db.fetchval("SELECT battery_level FROM robots WHERE id = 'r1'") == 70


async def test_dead_letters_counted_per_robot_since_an_id(clean_db: asyncpg.Pool[Any]) -> None:
    start = await newest_dead_letter_id(clean_db)

    def rejection(topic: str) -> Rejection:
        return Rejection(
            received_at=datetime.now(UTC),
            topic=topic,
            reason=RejectReason.INVALID_JSON,
            detail="x",
            payload=b"{",
            payload_size=1,
        )

    async with clean_db.acquire() as conn:
        await store_dead_letters(
            conn,
            [rejection("robots/r1/sensors/imu")] * 3
            + [rejection("robots/r2/sensors/gps"), rejection("junk")],
        )
    counts, last = await refused_by_robot_since(clean_db, start)
    assert counts == {"r1": 3, "r2": 1, "": 1}
    assert last == await newest_dead_letter_id(clean_db)
    assert await refused_by_robot_since(clean_db, last) == ({}, last)
