"""Bucket aggregates added up from minutes kept in Redis: the same answer as the rows give,
kept minutes used while the counters say they still hold, read again once written since."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from db.readings import SLOT_SECONDS, SLOTS_PER_MINUTE
from db.sensor_aggregates import AggregateFn, MinutePartial, bucket_aggregate
from ingest.counters import Counters
from tests.api.conftest import now_ms

Answer = list[tuple[str, float | None, int]]


async def post_battery(client: httpx.AsyncClient, robot: str, ts_ms: int, i: int) -> None:
    data: dict[str, float] = {"level": float(i % 97)}
    if i % 3:  # a third of the readings lack the field: readings and samples differ
        data["temperature"] = 20.0 + (i * 7) % 13 / 4
    body = {"robot_id": robot, "sensor_type": "battery", "ts": ts_ms, "data": data}
    response = await client.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
async def minutes(client: httpx.AsyncClient) -> int:
    """Readings of r1 and r2 over the six minutes before the current one, every 10 s (r2's
    5 s later); the first of those minutes, in epoch ms."""
    first = now_ms() // 60_000 * 60_000 - 6 * 60_000
    for i in range(36):
        await post_battery(client, "r1", first + i * 10_000, i)
        await post_battery(client, "r2", first + i * 10_000 + 5_000, i + 50)
    return first


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def answer(client: httpx.AsyncClient, params: dict[str, Any]) -> Answer:
    response = await client.get(
        "/api/sensors/aggregate", params={"sensor_type": "battery", **params}
    )
    assert response.status_code == 200, response.text
    return [(b["start"], b["value"], b["samples"]) for b in response.json()["buckets"]]


async def rows_answer(pool: asyncpg.Pool[Any], params: dict[str, Any]) -> Answer:
    """What the one SQL statement over the rows answers."""
    rows = await bucket_aggregate(
        pool,
        sensor_type="battery",
        path=[params["field"]],
        fn=AggregateFn(params["fn"]),
        bucket=timedelta(seconds=int(params["bucket"].removesuffix("m")) * 60),
        since=datetime.fromisoformat(params["since"]),
        until=datetime.fromisoformat(params["until"]),
        robot_id=params.get("robot_id"),
    )
    return [(r["bucket"].isoformat(), r["value"], r["samples"]) for r in rows]


def same_answer(a: Answer, b: Answer) -> bool:
    return len(a) == len(b) and all(
        s1 == s2 and n1 == n2 and (v1 == v2 or v1 == pytest.approx(v2))
        for (s1, v1, n1), (s2, v2, n2) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("robot_id", ["r1", None])
@pytest.mark.parametrize("fn", list(AggregateFn))
async def test_kept_minutes_answer_as_the_rows_do(
    client: httpx.AsyncClient,
    clean_db: asyncpg.Pool[Any],
    counters: Counters,
    minutes: int,
    fn: AggregateFn,
    robot_id: str | None,
) -> None:
    """Cut minutes at both ends, buckets of one and two minutes, a field some readings lack:
    the first answer (minutes read, then kept) and the second (kept minutes) are the rows'."""
    for bucket, field in (("1m", "level"), ("2m", "temperature")):
        params = {
            "field": field,
            "fn": fn.value,
            "bucket": bucket,
            "since": iso(minutes + 13_000),
            "until": iso(minutes + 5 * 60_000 + 27_000),
        }
        if robot_id:
            params["robot_id"] = robot_id
        expected = await rows_answer(clean_db, params)
        assert len(expected) >= 3
        first = await answer(client, params)
        kept, _ = await counters.kept_partials(
            sensor_type="battery",
            path=[field],
            robot_id=robot_id,
            minutes=[minutes // 1000 + 60 * k for k in range(1, 5)],
        )
        assert len(kept) == 4 and all(p is not None and p.readings for p in kept.values()), kept
        second = await answer(client, params)
        assert same_answer(first, expected), (first, expected)
        assert same_answer(second, expected), (second, expected)


async def test_a_minute_written_since_is_read_again(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], counters: Counters, minutes: int
) -> None:
    """A kept minute is what the answer is made of while the counters' count of the minute is
    the one it was made from; a new reading in it changes the count, and the minute is read
    from the rows again."""
    params = {
        "field": "level",
        "fn": "sum",
        "bucket": "1m",
        "robot_id": "r1",
        "since": iso(minutes),
        "until": iso(minutes + 6 * 60_000),
    }
    await answer(client, params)
    third = minutes // 1000 + 120
    kept = (
        await counters.kept_partials(
            sensor_type="battery", path=["level"], robot_id="r1", minutes=[third]
        )
    )[0][third]
    assert kept is not None and kept.readings == 6
    # Only the kept minute, not the rows, can make the answer say this.
    await counters.store_partials(
        sensor_type="battery",
        path=["level"],
        robot_id="r1",
        minutes={third: MinutePartial(kept.readings, kept.samples, 1e9, 0.0, 1e9)},
    )
    assert (1e9) in [v for _, v, _ in await answer(client, params)]

    await post_battery(client, "r1", third * 1000 + 1_234, 1)
    again = await answer(client, params)
    assert same_answer(again, await rows_answer(clean_db, params)), again
    assert 1e9 not in [v for _, v, _ in again]


async def test_buckets_of_seconds_read_the_rows(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], counters: Counters, minutes: int
) -> None:
    params = {
        "sensor_type": "battery",
        "field": "level",
        "bucket": "30s",
        "since": iso(minutes),
        "until": iso(minutes + 6 * 60_000),
    }
    response = await client.get("/api/sensors/aggregate", params=params)
    assert response.status_code == 200, response.text
    assert len(response.json()["buckets"]) == 12
    kept, _ = await counters.kept_partials(
        sensor_type="battery", path=["level"], robot_id=None, minutes=[minutes // 1000]
    )
    assert kept == {minutes // 1000: None}


async def test_a_recent_minute_is_kept_by_slots(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], counters: Counters
) -> None:
    """The minute before the current one is still being written (late readings): it is kept
    in slots, each trusted while its slot count is the one it was made from, so a reading
    in one slot has that slot read again, not the minute; the minute is kept whole as well,
    for when it is no longer recent."""
    if time.time() % 60 > 45:  # the minute before must stay recent throughout
        await asyncio.sleep(61 - time.time() % 60)
    before = int(time.time()) // 60 * 60 - 60
    for i in range(12):
        await post_battery(client, "r1", (before + 5 * i) * 1000, i)
    params = {
        "field": "level",
        "fn": "sum",
        "bucket": "1m",
        "robot_id": "r1",
        "since": iso((before - 60) * 1000),
        "until": datetime.now(UTC).isoformat(),
    }
    assert same_answer(await answer(client, params), await rows_answer(clean_db, params))
    slots = [before + SLOT_SECONDS * k for k in range(SLOTS_PER_MINUTE)]
    minutes, kept = await counters.kept_partials(
        sensor_type="battery", path=["level"], robot_id="r1", minutes=[before], slots=slots
    )
    assert [p.readings if p else None for p in kept.values()] == [2] * SLOTS_PER_MINUTE, kept
    whole = minutes[before]
    assert whole is not None and whole.readings == 12

    third = kept[slots[2]]
    assert third is not None
    # Only the kept slot, not the rows, can make the answer say this.
    await counters.store_partials(
        sensor_type="battery",
        path=["level"],
        robot_id="r1",
        minutes={},
        slots={slots[2]: MinutePartial(third.readings, third.samples, 1e9, 0.0, 1e9)},
    )
    assert [v for _, v, _ in await answer(client, params)] == [pytest.approx(1e9, rel=1e-6)]

    await post_battery(client, "r1", slots[2] * 1000 + 1_234, 1)
    again = await answer(client, params)
    assert same_answer(again, await rows_answer(clean_db, params)), again
    assert again[0][2] == 13


async def test_a_range_reaching_ahead_of_the_clock_answers_as_the_rows_do(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    """Recent minutes go by slots, minutes ahead of the clock (readings stamped ahead, a range
    ending tomorrow) by minutes: together, the rows' answer."""
    now = int(time.time())
    for i, at in enumerate((now - 70, now - 5, now + 65, now + 130)):
        await post_battery(client, "r1", at * 1000, i)
    for fn in ("count", "sum"):
        params = {
            "field": "level",
            "fn": fn,
            "bucket": "1m",
            "robot_id": "r1",
            "since": iso((now - 3600) * 1000),
            "until": iso((now + 86_400) * 1000),
        }
        got = await answer(client, params)
        assert len(got) >= 3 and same_answer(got, await rows_answer(clean_db, params)), got
