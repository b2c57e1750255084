"""GET /api/stats equals what the table holds for the same window."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from ingest.counters import Counters
from tests.api.conftest import GPS, IMU, LIDAR, now_ms

_DATA = {"imu": IMU, "gps": GPS, "lidar": LIDAR}


async def ingest_spread(client: httpx.AsyncClient, *, minutes: int, n: int, seed: int) -> None:
    """n requests of the older shape, spread over the last `minutes` of reading time, with
    some resent (duplicates) and some GPS data null (refused)."""
    rng = random.Random(seed)
    now = now_ms()
    sent: list[dict[str, Any]] = []
    for _ in range(n):
        body = {
            "robot_id": rng.choice(["r1", "r2", "r3"]),
            "timestamp": now - rng.randint(0, minutes * 60_000),
            "sensors": [
                {"sensor_type": t.upper(), "data": None if t == "gps" and rng.random() < 0.1 else d}
                for t, d in _DATA.items()
            ],
        }
        sent.append(body)
        assert (await client.post("/api/sensors", json=body)).status_code == 201
    for body in rng.sample(sent, n // 10):
        assert (await client.post("/api/sensors", json=body)).status_code == 201


async def table_counts(pool: asyncpg.Pool[Any], since: datetime, until: datetime) -> dict[str, Any]:
    total = await pool.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE ts >= $1 AND ts < $2", since, until
    )
    by_type = await pool.fetch(
        "SELECT sensor_type, count(*) AS n FROM sensor_readings WHERE ts >= $1 AND ts < $2 "
        "GROUP BY 1",
        since,
        until,
    )
    by_robot = await pool.fetch(
        "SELECT robot_id, count(*) AS n FROM sensor_readings WHERE ts >= $1 AND ts < $2 "
        "GROUP BY 1 ORDER BY 2 DESC, 1 DESC",
        since,
        until,
    )
    return {
        "total": total,
        "by_type": {r["sensor_type"]: r["n"] for r in by_type},
        "by_robot": [(r["robot_id"], r["n"]) for r in by_robot],
    }


@pytest.mark.parametrize("window", ["1h", "15m", "24h"])
async def test_stats_equal_count_over_the_same_window(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], window: str
) -> None:
    # Readings from the last 90 minutes: a 1h or 15m window holds only some of them.
    await ingest_spread(client, minutes=90, n=150, seed=len(window))
    response = await client.get("/api/stats", params={"window": window, "top": 3})
    assert response.status_code == 200, response.text
    stats = response.json()
    since, until = datetime.fromisoformat(stats["since"]), datetime.fromisoformat(stats["until"])
    expected = await table_counts(clean_db, since, until)
    assert stats["total_readings"] == expected["total"] > 0
    assert stats["by_sensor_type"] == expected["by_type"]
    assert sorted(stats["top_robots"], key=lambda r: (-r["readings"], r["robot_id"])) == sorted(
        ({"robot_id": r, "readings": n} for r, n in expected["by_robot"]),
        key=lambda r: (-r["readings"], r["robot_id"]),
    )
    assert sum(m["readings"] for m in stats["per_minute"]) == expected["total"]
    assert len(stats["per_minute"]) == (until - since).total_seconds() // 60
    assert stats["rejected"]["invalid_schema"] > 0  # the null GPS data, counted by reason
    assert stats["readings_per_second"] >= 0


async def test_robots_online_from_the_status_hash(
    client: httpx.AsyncClient, counters: Counters
) -> None:
    await counters.set_statuses([("r1", "online", 1), ("r2", "online", 2), ("r3", "offline", 3)])
    stats = (await client.get("/api/stats")).json()
    assert (stats["robots_online"], stats["robots_with_status"]) == (2, 3)
    assert stats["total_readings"] == 0
    assert len(stats["per_minute"]) == 60


async def test_unknown_robot_and_bad_requests_are_counted(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/sensors",
        json={"robot_id": "ghost", "sensor_type": "gps", "ts": now_ms(), "data": GPS},
    )
    await client.post(
        "/api/sensors", content=b"{broken", headers={"content-type": "application/json"}
    )
    stats = (await client.get("/api/stats", params={"window": "5m"})).json()
    assert stats["rejected"].get("unknown_robot") == 1
    # Refusals without readings ride on the next commit: one more request flushes them.
    await client.post(
        "/api/sensors", json={"robot_id": "r1", "sensor_type": "gps", "ts": now_ms(), "data": GPS}
    )
    stats = (await client.get("/api/stats", params={"window": "5m"})).json()
    assert stats["rejected"].get("invalid_json") == 1


@pytest.mark.parametrize("window", ["0m", "30s", "25h", "1y", "", "60"])
async def test_bad_window_is_422(client: httpx.AsyncClient, window: str) -> None:
    response = await client.get("/api/stats", params={"window": window})
    assert response.status_code == 422
    assert response.json()["error"] in ("invalid_query", "invalid_request")
    assert (await client.get("/api/stats", params={"top": 101})).status_code == 422


async def test_conflicting_duplicates_are_counted_apart_in_stats(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    """Same (robot, type, ts) with different data: the first stays, the others are counted
    as conflicting_duplicate; a true resend is not counted at all."""
    ts = now_ms() - 1000
    for level in (10, 10, 20, 30):
        body = {"robot_id": "r1", "sensor_type": "battery", "ts": ts, "data": {"level": level}}
        assert (await client.post("/api/sensors", json=body)).status_code == 201
    doc = (await client.get("/api/stats?window=15m")).json()
    assert doc["total_readings"] == 1
    assert doc["rejected"] == {"conflicting_duplicate": 2}
    stored = await clean_db.fetchval("SELECT (data->>'level')::float FROM sensor_readings")
    assert stored == 10.0
