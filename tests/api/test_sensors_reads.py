"""GET /api/sensors, /latest and /aggregate against real rows."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api.conftest import GPS, IMU, now_ms

Key = tuple[str, str, str]  # ts, robot_id, sensor_type

# 3 robots x 4 types, 500 instants each; every instant is shared by all 12 series, so the
# tie-breaks on robot_id and sensor_type decide most of the order.
_FILL = """
INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)
SELECT r, t, $1::timestamptz - g * interval '7 seconds', now(), g,
       CASE t WHEN 'imu' THEN $2::jsonb WHEN 'gps' THEN $3::jsonb
              WHEN 'lidar' THEN '{"distance": 1, "angle": 2}'::jsonb
              ELSE jsonb_build_object('level', g % 100) END
FROM unnest(ARRAY['r1', 'r2', 'r3']) r, unnest(ARRAY['imu', 'gps', 'lidar', 'battery']) t,
     generate_series(1, 500) g
"""


@pytest.fixture
async def filled(client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]) -> datetime:
    import orjson

    newest = datetime.now(UTC).replace(microsecond=123456)
    await clean_db.execute(_FILL, newest, orjson.dumps(IMU).decode(), orjson.dumps(GPS).decode())
    return newest


async def expected_keys(pool: asyncpg.Pool[Any], params: dict[str, Any], asc: bool) -> list[Key]:
    order = "ASC" if asc else "DESC"
    rows = await pool.fetch(
        f"""SELECT ts, robot_id, sensor_type FROM sensor_readings
            WHERE ($1::text[] IS NULL OR robot_id = ANY($1))
              AND ($2::text IS NULL OR sensor_type = $2)
              AND ($3::timestamptz IS NULL OR ts >= $3) AND ($4::timestamptz IS NULL OR ts < $4)
            ORDER BY ts {order}, robot_id {order}, sensor_type {order}""",
        params.get("robot_id"),
        params.get("sensor_type"),
        params.get("since"),
        params.get("until"),
    )
    return [(r["ts"].isoformat(), r["robot_id"], r["sensor_type"]) for r in rows]


async def walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[Key]:
    keys: list[Key] = []
    query = dict(params)
    while True:
        response = await client.get("/api/sensors", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        keys.extend((i["ts"], i["robot_id"], i["sensor_type"]) for i in page["items"])
        if page["next_cursor"] is None:
            return keys
        assert len(page["items"]) == query.get("limit", 100)
        query["cursor"] = page["next_cursor"]


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"robot_id": ["r2"]},
        {"robot_id": ["r1", "r3"]},
        {"sensor_type": "gps"},
        {"robot_id": ["r3"], "sensor_type": "battery"},
        {"robot_id": ["r1", "r2"], "sensor_type": "imu", "window": True},
        {"window": True},
    ],
    ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()) or "all",
)
async def test_walk_has_no_duplicates_and_no_gaps(
    client: httpx.AsyncClient,
    clean_db: asyncpg.Pool[Any],
    filled: datetime,
    filters: dict[str, Any],
    order: str,
) -> None:
    params: dict[str, Any] = {k: v for k, v in filters.items() if k != "window"}
    sql_params = dict(params)
    if filters.get("window"):
        since, until = filled - timedelta(minutes=40), filled - timedelta(minutes=10)
        params |= {"since": since.isoformat(), "until": until.isoformat()}
        sql_params |= {"since": since, "until": until}
    expected = await expected_keys(clean_db, sql_params, order == "asc")
    assert expected  # the filter selects something
    got = await walk(client, {**params, "order": order, "limit": 97})
    assert got == [(datetime.fromisoformat(t).isoformat(), r, s) for t, r, s in expected]


async def test_walk_while_rows_arrive(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], filled: datetime
) -> None:
    """Rows inserted during a walk, anywhere in time, never make it repeat or skip a row
    that was there when it started."""
    before = set(await expected_keys(clean_db, {}, asc=True))
    stop = asyncio.Event()

    async def insert() -> int:
        sent = 0
        rng = random.Random(7)
        while not stop.is_set():
            ts = now_ms() - rng.randint(0, 3_600_000)
            body = {
                "robot_id": rng.choice(["r1", "r2", "r3"]),
                "sensor_type": "gps",
                "ts": ts,
                "data": GPS,
            }
            assert (await client.post("/api/sensors", json=body)).status_code == 201
            sent += 1
            await asyncio.sleep(0)
        return sent

    for order in ("asc", "desc"):
        stop.clear()
        writer = asyncio.create_task(insert())
        got = await walk(client, {"order": order, "limit": 150})
        stop.set()
        assert await writer > 0
        assert len(got) == len(set(got)), "a row came twice"
        normalized = [(datetime.fromisoformat(t), r, s) for t, r, s in got]
        assert normalized == sorted(normalized, reverse=order == "desc")
        assert {(t.isoformat(), r, s) for t, r, s in normalized} >= before, "a row was skipped"


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"limit": 1001}, 422, "invalid_request"),
        ({"limit": 0}, 422, "invalid_request"),
        ({"limit": "many"}, 422, "invalid_request"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "invalid_query"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "invalid_query"),
        ({"since": "not a time"}, 422, "invalid_request"),
        ({"since": "0001-01-01T00:00:00+05:00"}, 422, "invalid_query"),
        ({"sensor_type": "sonar"}, 422, "invalid_query"),
        ({"robot_id": "bad id"}, 422, "invalid_query"),
        ({"robot_id": ",".join(f"r{i}" for i in range(11))}, 422, "invalid_query"),
        ({"order": "sideways"}, 422, "invalid_request"),
        ({"cursor": "x"}, 400, "invalid_cursor"),
        ({"cursor": "e30.AAAA"}, 400, "invalid_cursor"),
    ],
)
async def test_bad_queries_are_4xx_with_reason(
    client: httpx.AsyncClient, params: dict[str, Any], status: int, error: str
) -> None:
    response = await client.get("/api/sensors", params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


async def test_cursor_is_bound_to_its_query_and_signed(
    client: httpx.AsyncClient, filled: datetime
) -> None:
    first = (await client.get("/api/sensors", params={"robot_id": "r1", "limit": 5})).json()
    cursor = first["next_cursor"]
    assert (
        await client.get("/api/sensors", params={"robot_id": "r1", "cursor": cursor})
    ).status_code == 200
    for params in ({"robot_id": "r2"}, {"robot_id": "r1", "order": "asc"}, {"sensor_type": "imu"}):
        response = await client.get("/api/sensors", params={**params, "cursor": cursor})
        assert response.status_code == 400
    body, _, sig = cursor.partition(".")
    flipped = "A" if body[5] != "A" else "B"
    tampered = f"{body[:5]}{flipped}{body[6:]}.{sig}"
    response = await client.get("/api/sensors", params={"robot_id": "r1", "cursor": tampered})
    assert response.status_code == 400
    assert "signature" in response.json()["detail"]


async def test_items_carry_the_stored_reading(client: httpx.AsyncClient, filled: datetime) -> None:
    [item] = (
        await client.get(
            "/api/sensors", params={"robot_id": "r1", "sensor_type": "imu", "limit": 1}
        )
    ).json()["items"]
    assert item["data"] == IMU
    assert item["seq"] == 1
    assert datetime.fromisoformat(item["ts"]) == filled - timedelta(seconds=7)


async def test_latest_from_redis(client: httpx.AsyncClient) -> None:
    ts = now_ms()
    for i, robot in enumerate(["r1", "r2"]):
        body = {
            "robot_id": robot,
            "timestamp": ts + i,
            "sensors": [{"sensor_type": "imu", "data": IMU}, {"sensor_type": "gps", "data": GPS}],
        }
        await client.post("/api/sensors", json=body)
        older = {
            "robot_id": robot,
            "sensor_type": "gps",
            "ts": ts - 5000,
            "data": {"lat": 0, "lon": 0},
        }
        await client.post("/api/sensors", json=older)
    one = (await client.get("/api/sensors/latest", params={"robot_id": "r1"})).json()
    assert one["items"][0]["robot_id"] == "r1"
    assert one["items"][0]["sensors"]["gps"]["data"] == GPS  # the newest, not the last sent
    only_imu = (await client.get("/api/sensors/latest", params={"sensor_type": "IMU"})).json()
    assert [i["robot_id"] for i in only_imu["items"]] == ["r2", "r1"]  # most recently seen first
    assert all(set(i["sensors"]) == {"imu"} for i in only_imu["items"])
    none = (await client.get("/api/sensors/latest", params={"robot_id": "r3"})).json()
    assert none == {"items": [{"robot_id": "r3", "sensors": {}}]}
    assert (await client.get("/api/sensors/latest", params={"sensor_type": "x"})).status_code == 422


async def test_bucket_aggregates(client: httpx.AsyncClient) -> None:
    minute = now_ms() // 60_000 * 60_000 - 120_000
    levels = [10, 20, 30, 40]
    for i, level in enumerate(levels):  # two in each of two minutes
        body = {
            "robot_id": "r1",
            "sensor_type": "battery",
            "ts": minute + i * 30_000,
            "data": {"level": level},
        }
        assert (await client.post("/api/sensors", json=body)).status_code == 201
    since = datetime.fromtimestamp(minute / 1000, UTC).isoformat()
    until = datetime.fromtimestamp((minute + 120_000) / 1000, UTC).isoformat()
    results = {}
    for fn in ("avg", "min", "max", "sum", "count"):
        response = await client.get(
            "/api/sensors/aggregate",
            params={
                "sensor_type": "battery",
                "field": "level",
                "fn": fn,
                "bucket": "1m",
                "since": since,
                "until": until,
                "robot_id": "r1",
            },
        )
        assert response.status_code == 200, response.text
        results[fn] = [(b["value"], b["samples"]) for b in response.json()["buckets"]]
    assert results["avg"] == [(15, 2), (35, 2)]
    assert results["min"] == [(10, 2), (30, 2)]
    assert results["max"] == [(20, 2), (40, 2)]
    assert results["sum"] == [(30, 2), (70, 2)]
    assert results["count"] == [(2, 2), (2, 2)]
    default = (
        await client.get(
            "/api/sensors/aggregate", params={"sensor_type": "battery", "field": "level"}
        )
    ).json()
    assert sum(b["samples"] for b in default["buckets"]) == 4


async def test_buckets_are_aligned_to_the_clock(client: httpx.AsyncClient) -> None:
    """Bucket boundaries are multiples of the bucket size from the epoch, whatever `since` is,
    so two requests over overlapping ranges report the same buckets."""
    minute = now_ms() // 60_000 * 60_000 - 180_000
    for i, offset_s in enumerate((20, 40, 70)):
        body = {
            "robot_id": "r1",
            "sensor_type": "battery",
            "ts": minute + offset_s * 1000,
            "data": {"level": 10 * (i + 1)},
        }
        assert (await client.post("/api/sensors", json=body)).status_code == 201
    until = datetime.fromtimestamp((minute + 150_000) / 1000, UTC).isoformat()
    answers = []
    for since_s in (5, 13):
        since = datetime.fromtimestamp((minute + since_s * 1000) / 1000, UTC).isoformat()
        response = await client.get(
            "/api/sensors/aggregate",
            params={
                "sensor_type": "battery",
                "field": "level",
                "bucket": "1m",
                "since": since,
                "until": until,
                "robot_id": "r1",
            },
        )
        assert response.status_code == 200, response.text
        answers.append([(b["start"], b["value"], b["samples"]) for b in response.json()["buckets"]])
    assert answers[0] == answers[1]
    starts = [datetime.fromisoformat(start) for start, _, _ in answers[0]]
    assert [int(s.timestamp() * 1000) for s in starts] == [minute, minute + 60_000]
    assert [(v, n) for _, v, n in answers[0]] == [(15, 2), (30, 1)]


async def test_moving_average(client: httpx.AsyncClient) -> None:
    ts = now_ms() - 60_000
    body = {
        "robot_id": "r2",
        "sensor_type": "imu",
        "readings": [
            {"ts": ts + i, "data": {**IMU, "accel": {"x": float(i), "y": 0, "z": 0}}}
            for i in range(10)
        ],
    }
    assert (await client.post("/api/sensors", json=body)).status_code == 201
    response = await client.get(
        "/api/sensors/aggregate",
        params={
            "sensor_type": "imu",
            "field": "accel.x",
            "window": 3,
            "limit": 4,
            "robot_id": "r2",
        },
    )
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert [p["value"] for p in points] == [6, 7, 8, 9]
    assert [p["moving_avg"] for p in points] == [5, 6, 7, 8]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sensor_type": "imu", "field": "accel.w"}, "invalid_query"),
        ({"sensor_type": "battery", "field": "charging"}, "invalid_query"),
        ({"sensor_type": "imu,gps", "field": "lat"}, "invalid_query"),
        ({"sensor_type": "sonar", "field": "x"}, "invalid_query"),
        ({"sensor_type": "gps", "field": "lat", "bucket": "5 minutes"}, "invalid_query"),
        ({"sensor_type": "gps", "field": "lat", "bucket": "2d"}, "invalid_query"),
        (
            {
                "sensor_type": "gps",
                "field": "lat",
                "bucket": "1s",
                "since": "2026-01-01T00:00:00Z",
                "until": "2026-01-02T00:00:00Z",
            },
            "invalid_query",
        ),
        ({"sensor_type": "gps", "field": "lat", "fn": "median"}, "invalid_request"),
        ({"sensor_type": "gps", "field": "lat", "window": 0}, "invalid_request"),
        ({"sensor_type": "gps", "field": "lat", "until": "0001-01-01T00:00:00Z"}, "invalid_query"),
        ({"field": "lat"}, "invalid_request"),
    ],
)
async def test_bad_aggregates_are_422(
    client: httpx.AsyncClient, params: dict[str, Any], error: str
) -> None:
    response = await client.get("/api/sensors/aggregate", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == error
