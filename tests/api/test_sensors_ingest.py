"""POST /api/sensors: the bridge's validation and write path, over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest

from db.partitions import partition_name
from tests.api.conftest import GPS, IMU, LIDAR, now_ms

JSON = {"content-type": "application/json"}


async def count(pool: asyncpg.Pool[Any], robot_id: str | None = None) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE $1::text IS NULL OR robot_id = $1", robot_id
    )
    return n


async def test_one_reading_of_the_contract(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms()
    response = await client.post(
        "/api/sensors",
        json={"robot_id": "r1", "sensor_type": "imu", "ts": ts, "seq": 7, "data": IMU},
    )
    assert response.status_code == 201, response.text
    assert response.json() == {
        "accepted": 1,
        "rejected": [],
        "status": "success",
        "inserted_count": 1,
        "robot_id": "r1",
    }
    row = await clean_db.fetchrow(
        "SELECT sensor_type, seq, data::text AS data FROM sensor_readings"
    )
    assert row is not None
    assert (row["sensor_type"], row["seq"]) == ("imu", 7)


async def test_batch_and_older_spellings(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms()
    batch = {
        "robot_id": "r2",
        "sensor_type": "LiDAR",
        "readings": [{"ts": ts + i, "seq": i, "data": LIDAR} for i in range(50)],
    }
    response = await client.post("/api/sensors", json=batch)
    assert response.status_code == 201
    assert response.json()["accepted"] == 50
    types = await clean_db.fetch("SELECT DISTINCT sensor_type FROM sensor_readings")
    assert [r["sensor_type"] for r in types] == ["lidar"]


async def test_older_shape_refuses_null_data_but_keeps_siblings(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    body = {
        "robot_id": "r1",
        "timestamp": now_ms(),
        "sensors": [
            {"sensor_type": "IMU", "data": IMU},
            {"sensor_type": "GPS", "data": None},
            {"sensor_type": "LiDAR", "data": LIDAR},
            {"sensor_type": "sonar", "data": {"x": 1}},
        ],
    }
    response = await client.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text
    doc = response.json()
    assert doc["accepted"] == 2
    refused = {(r["index"], r["sensor_type"], r["reason"]) for r in doc["rejected"]}
    assert refused == {(1, "gps", "invalid_schema"), (3, "sonar", "unknown_sensor_type")}
    assert await count(clean_db) == 2


async def test_same_request_twice_stores_once(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    body = {
        "robot_id": "r1",
        "timestamp": now_ms(),
        "sensors": [{"sensor_type": "imu", "data": IMU}, {"sensor_type": "gps", "data": GPS}],
    }
    for _ in range(2):
        response = await client.post("/api/sensors", json=body)
        assert response.status_code == 201
        assert response.json()["accepted"] == 2
    assert await count(clean_db) == 2


async def test_concurrent_requests_share_commits(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms()

    async def post(i: int) -> int:
        body = {
            "robot_id": f"r{i % 3 + 1}",
            "timestamp": ts + i,
            "sensors": [
                {"sensor_type": "imu", "data": IMU},
                {"sensor_type": "gps", "data": GPS},
                {"sensor_type": "lidar", "data": LIDAR},
            ],
        }
        return (await client.post("/api/sensors", json=body)).status_code

    statuses = await asyncio.gather(*(post(i) for i in range(300)))
    assert statuses == [201] * 300
    # Every 201 was sent after its commit: all rows are there the moment the last answer is.
    assert await count(clean_db) == 900
    commits = await clean_db.fetchval("SELECT count(*) FROM counter_journal")
    assert commits < 300  # entries of applied batches are deleted lazily; fewer than requests


async def test_unknown_robot_is_refused(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    response = await client.post(
        "/api/sensors",
        json={"robot_id": "ghost", "sensor_type": "gps", "ts": now_ms(), "data": GPS},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_robot"
    assert "ghost" in response.json()["detail"]
    assert await count(clean_db) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            {"robot_id": "r1", "sensor_type": "imu", "ts": "yesterday", "data": IMU},
            "invalid_schema",
        ),
        (
            {"robot_id": "r1", "sensor_type": "gps", "ts": 1, "data": {"lat": 91, "lon": 0}},
            "out_of_range",
        ),
        (
            {"robot_id": "r1", "sensor_type": "battery", "ts": 1, "data": {"level": "full"}},
            "invalid_schema",
        ),
        ({"robot_id": "r1", "sensor_type": "battery", "ts": 0, "data": {"level": 5}}, "ts_too_old"),
        (
            {
                "robot_id": "r1",
                "sensor_type": "battery",
                "ts": 9_999_999_999_999,
                "data": {"level": 5},
            },
            "out_of_range",
        ),
        (
            {
                "robot_id": "r1",
                "sensor_type": "battery",
                "ts": "2999-01-01T00:00:00Z",
                "data": {"level": 5},
            },
            "ts_in_future",
        ),
        (
            {"robot_id": "r1", "sensor_type": "battery", "ts": 1, "data": {"level": 5, "typo": 1}},
            "invalid_schema",
        ),
        ({"robot_id": "r1", "sensor_type": "battery", "readings": []}, "invalid_schema"),
    ],
)
async def test_every_reading_refused_is_422_with_reasons(
    client: httpx.AsyncClient, body: dict[str, Any], reason: str
) -> None:
    response = await client.post("/api/sensors", json=body)
    assert response.status_code == 422, response.text
    doc = response.json()
    assert doc["error"] == "readings_rejected"
    assert [r["reason"] for r in doc["rejected"]] == [reason]
    assert doc["rejected"][0]["detail"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not json", "invalid_json"),
        (b"[]", "invalid_schema"),
        (b'{"sensor_type": "imu"}', "invalid_schema"),
        (b'{"robot_id": "bad id", "sensor_type": "imu", "ts": 1, "data": {}}', "invalid_schema"),
        (b'{"robot_id": "r1", "sensor_type": "sonar", "ts": 1, "data": {}}', "unknown_sensor_type"),
        (b'{"robot_id": "r1", "ts": 1, "data": {}}', "invalid_schema"),
        (
            b'{"robot_id": "r1", "sensor_type": "imu", "ts": 1, "data": {}, "readings": [1]}',
            "invalid_schema",
        ),
        (
            b'{"robot_id": "r1", "sensors": [{"sensor_type": "imu", "data": null}]}',
            "invalid_schema",
        ),
        (b'{"robot_id": "r1", "timestamp": 1, "sensors": []}', "invalid_schema"),
        (
            b'{"robot_id": "r1", "sensor_type": "imu", "timestamp": 1, '
            b'"sensors": [{"sensor_type": "imu"}]}',
            "invalid_schema",
        ),
    ],
)
async def test_unusable_body_is_422(client: httpx.AsyncClient, content: bytes, error: str) -> None:
    response = await client.post("/api/sensors", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == error
    assert response.json()["detail"]


async def test_body_over_the_limit_is_413(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms()
    big = {
        "robot_id": "r1",
        "sensor_type": "imu",
        "readings": [{"ts": ts + i, "data": IMU} for i in range(1000)],
    }
    response = await client.post("/api/sensors", json=big)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    chunked = await client.post("/api/sensors", content=chunks(), headers=JSON)
    assert chunked.status_code == 413
    assert await count(clean_db) == 0


async def test_chunked_body_under_the_limit_is_read(client: httpx.AsyncClient) -> None:
    body = f'{{"robot_id":"r1","sensor_type":"gps","ts":{now_ms()},"data":{{"lat":1,"lon":2}}}}'

    async def chunks() -> Any:
        yield body[:10].encode()
        yield body[10:].encode()

    response = await client.post("/api/sensors", content=chunks(), headers=JSON)
    assert response.status_code == 201, response.text


async def test_database_refusal_is_isolated_to_its_request(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    """A reading PostgreSQL refuses (here: no partition for its day) fails its own request
    only, even when it shared a group commit with good ones."""
    ts = now_ms()
    old_day = ts - 6 * 86_400_000
    day = datetime.fromtimestamp(old_day / 1000, UTC).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    partition = partition_name(day)
    await clean_db.execute(f"ALTER TABLE sensor_readings DETACH PARTITION {partition}")
    try:
        good = [
            client.post(
                "/api/sensors",
                json={"robot_id": "r1", "sensor_type": "gps", "ts": ts + i, "data": GPS},
            )
            for i in range(20)
        ]
        bad = client.post(
            "/api/sensors",
            json={"robot_id": "r2", "sensor_type": "gps", "ts": old_day, "data": GPS},
        )
        *goods, refused = await asyncio.gather(*good, bad)
    finally:
        await clean_db.execute(
            f"ALTER TABLE sensor_readings ATTACH PARTITION {partition} "
            f"FOR VALUES FROM ('{start.isoformat()}') "
            f"TO ('{(start + timedelta(days=1)).isoformat()}')"
        )
    assert [g.status_code for g in goods] == [201] * 20
    assert refused.status_code == 422
    assert refused.json()["error"] == "rejected_by_database"
    assert await count(clean_db) == 20


async def test_database_down_is_503_for_the_whole_batch(
    client: httpx.AsyncClient, app: Any, clean_db: asyncpg.Pool[Any]
) -> None:
    # Taking the shared PostgreSQL down is not ours to do: fake the lost connection.
    async def lost(*_: Any) -> None:
        raise ConnectionResetError("connection lost")

    with mock.patch.object(app.state.resources.writer, "write", lost):
        response = await client.post(
            "/api/sensors",
            json={"robot_id": "r1", "sensor_type": "gps", "ts": now_ms(), "data": GPS},
        )
    assert response.status_code == 503
    assert response.json() == {
        "error": "unavailable",
        "detail": "postgresql is unavailable",
        "service": "postgresql",
    }


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"content-type": "text/plain"}, None),
        ({"content-type": "application/x-www-form-urlencoded"}, None),
        ({"content-type": "multipart/form-data; boundary=x"}, None),
        ({}, None),
        ({"content-type": "text/plain"}, "form"),
    ],
    ids=["text-plain", "form-urlencoded", "multipart", "untyped", "form-fields"],
)
async def test_a_body_that_is_not_declared_json_is_415_and_stores_nothing(
    client: httpx.AsyncClient,
    clean_db: asyncpg.Pool[Any],
    headers: dict[str, str],
    content: str | None,
) -> None:
    """What a cross-site page can make a browser send without a preflight is refused."""
    body = f'{{"robot_id":"r1","sensor_type":"gps","ts":{now_ms()},"data":{{"lat":1,"lon":2}}}}'
    if content == "form":
        # A browser form posting the JSON as a field's name: `name=value` pairs.
        response = await client.post("/api/sensors", data={body: ""})
    else:
        response = await client.post("/api/sensors", content=body.encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type"
    assert await count(clean_db) == 0
    # The same body declared as JSON is stored: the 415 was about the type alone.
    stored = await client.post("/api/sensors", content=body.encode(), headers=JSON)
    assert stored.status_code == 201, stored.text
    assert await count(clean_db) == 1


async def test_json_with_charset_and_json_suffix_types_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.robosense+json"):
        body = f'{{"robot_id":"r1","sensor_type":"gps","ts":{now_ms()},"data":{{"lat":1,"lon":2}}}}'
        response = await client.post(
            "/api/sensors", content=body.encode(), headers={"content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)
