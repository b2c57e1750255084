"""/api/robots against the real database and Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from ingest.counters import Counters
from tests.api.conftest import IMU, now_ms


async def test_register_then_read_back(client: httpx.AsyncClient) -> None:
    body = {
        "id": "bot-7",
        "name": "Seven",
        "model": "X1",
        "status": "maintenance",
        "battery_level": 33.3,
        "metadata": {"site": "hall 2", "tags": ["a"]},
    }
    created = await client.post("/api/robots", json=body)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert {k: doc[k] for k in body} == body
    assert doc["connection"] == "unknown" and doc["last_seen"] is None
    fetched = await client.get("/api/robots/bot-7")
    assert fetched.status_code == 200
    assert fetched.json()["metadata"] == {"site": "hall 2", "tags": ["a"]}
    assert fetched.json()["latest"] == {}


async def test_generated_id_and_conflict(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/robots", json={"name": "anon"})
    assert created.status_code == 201
    robot_id = created.json()["id"]
    assert robot_id.startswith("robot-")
    again = await client.post("/api/robots", json={"id": robot_id})
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


@pytest.mark.parametrize(
    "body",
    [
        {"id": "bad id!"},
        {"id": "x" * 65},
        {"status": "flying"},
        {"battery_level": 101},
        {"battery_level": -1},
        {"battery_level": "full"},
        {"name": 5},
        {"name": "nul\u0000byte"},
        {"metadata": {"k": "nul\u0000"}},
        {"metadata": [1, 2]},
        {"unexpected": 1},
    ],
)
async def test_bad_fields_are_422_with_reason(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/robots", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"]


async def test_not_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/robots", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_a_body_not_declared_json_is_415(client: httpx.AsyncClient, method: str) -> None:
    path = "/api/robots" if method == "POST" else "/api/robots/r1"
    body = b'{"id": "r9", "name": "x", "model": "m", "status": "active"}'
    for headers in ({"content-type": "text/plain"}, {}):
        response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_media_type"
    assert (await client.get("/api/robots/r9")).status_code == 404
    assert (await client.get("/api/robots/r1")).json()["name"] == ""


async def test_unknown_robot_is_404(client: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        response = await client.request(method, "/api/robots/ghost")
        assert response.status_code == 404
        assert response.json() == {
            "error": "not_found",
            "detail": "robot 'ghost' not found",
            "kind": "robot",
            "key": "ghost",
        }
    assert (await client.patch("/api/robots/ghost", json={"name": "x"})).status_code == 404
    assert (await client.put("/api/robots/ghost", json={"name": "x"})).status_code == 404
    assert (await client.get("/api/robots/bad%20id")).status_code == 422


async def test_patch_changes_only_given_fields(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/robots", json={"id": "p1", "name": "before", "model": "M", "battery_level": 50}
    )
    patched = await client.patch(
        "/api/robots/p1", json={"status": "inactive", "battery_level": None}
    )
    assert patched.status_code == 200
    doc = patched.json()
    assert (doc["name"], doc["model"], doc["status"], doc["battery_level"]) == (
        "before",
        "M",
        "inactive",
        None,
    )
    assert (await client.patch("/api/robots/p1", json={"name": None})).status_code == 422
    assert (await client.patch("/api/robots/p1", json={"battery_level": 200})).status_code == 422


async def test_put_replaces_every_field(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/robots", json={"id": "p2", "name": "n", "model": "M", "metadata": {"a": 1}}
    )
    put = await client.put("/api/robots/p2", json={"name": "new", "battery_level": 10})
    assert put.status_code == 200
    doc = put.json()
    assert (doc["name"], doc["model"], doc["battery_level"], doc["metadata"]) == ("new", "", 10, {})


async def test_delete_keeps_readings_and_refuses_new_ones(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms()
    reading = {"robot_id": "r1", "sensor_type": "imu", "ts": ts, "data": IMU}
    assert (await client.post("/api/sensors", json=reading)).status_code == 201
    assert (await client.delete("/api/robots/r1")).status_code == 204
    assert (await client.get("/api/robots/r1")).status_code == 404
    page = await client.get("/api/sensors", params={"robot_id": "r1"})
    assert len(page.json()["items"]) == 1
    again = await client.post("/api/sensors", json={**reading, "ts": ts + 1})
    assert again.status_code == 422
    assert again.json()["error"] == "unknown_robot"


async def test_list_filters_and_walks_pages(client: httpx.AsyncClient) -> None:
    for i in range(25):
        status = "active" if i % 2 else "maintenance"
        r = await client.post(
            "/api/robots",
            json={"id": f"bot-{i:02d}", "status": status, "model": "A" if i % 3 else "B"},
        )
        assert r.status_code == 201
    seen: list[str] = []
    params: dict[str, Any] = {"status": "active", "limit": 4}
    while True:
        page = (await client.get("/api/robots", params=params)).json()
        seen.extend(item["id"] for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    # r1-r3 from the fixture are active too.
    expected = sorted([f"bot-{i:02d}" for i in range(25) if i % 2] + ["r1", "r2", "r3"])
    assert seen == expected
    both = (await client.get("/api/robots", params={"status": "active", "model": "B"})).json()
    assert [i["id"] for i in both["items"]] == [
        f"bot-{i:02d}" for i in range(25) if i % 2 and i % 3 == 0
    ]


async def test_cursor_of_another_filter_or_edited_is_400(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post("/api/robots", json={"id": f"c{i}", "status": "inactive"})
    page = (await client.get("/api/robots", params={"status": "inactive", "limit": 1})).json()
    cursor = page["next_cursor"]
    other = await client.get("/api/robots", params={"status": "active", "cursor": cursor})
    assert other.status_code == 400
    assert other.json()["error"] == "invalid_cursor"
    body, _, sig = cursor.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    for bad in (forged, "garbage", "a.b", "é.é", cursor + "x"):
        response = await client.get("/api/robots", params={"status": "inactive", "cursor": bad})
        assert response.status_code == 400, bad


async def test_live_fields_come_from_redis(client: httpx.AsyncClient, counters: Counters) -> None:
    await counters.set_statuses(
        [("r2", "online", 1_700_000_000_000), ("r3", "offline", 1_700_000_000_500)]
    )
    ts = now_ms()
    await client.post(
        "/api/sensors", json={"robot_id": "r2", "sensor_type": "imu", "ts": ts, "data": IMU}
    )
    items = {i["id"]: i for i in (await client.get("/api/robots")).json()["items"]}
    assert items["r2"]["connection"] == "online"
    assert items["r2"]["connection_changed_at"].startswith("2023-11-14T22:13:20")
    assert items["r2"]["last_seen"] is not None
    assert items["r3"]["connection"] == "offline"
    assert items["r1"]["connection"] == "unknown"
    detail = (await client.get("/api/robots/r2")).json()
    assert detail["latest"]["imu"]["data"] == IMU
    assert (
        detail["latest"]["imu"]["ts"][:19]
        == datetime.fromtimestamp(ts / 1000, UTC).isoformat()[:19]
    )


async def test_list_filters_on_the_live_connection_and_walks_pages(
    client: httpx.AsyncClient, counters: Counters
) -> None:
    for robot_id in ("r4", "r5"):
        assert (await client.post("/api/robots", json={"id": robot_id})).status_code == 201
    await counters.set_statuses([("r2", "online", 1), ("r3", "offline", 2), ("r5", "online", 3)])

    async def ids(**params: Any) -> tuple[list[str], str | None]:
        response = await client.get("/api/robots", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert all(i["connection"] == params["connection"] for i in body["items"])
        return [i["id"] for i in body["items"]], body["next_cursor"]

    assert await ids(connection="online") == (["r2", "r5"], None)
    assert await ids(connection="offline") == (["r3"], None)
    assert await ids(connection="unknown") == (["r1", "r4"], None)
    first, cursor = await ids(connection="online", limit=1)
    assert first == ["r2"] and cursor is not None
    assert await ids(connection="online", limit=1, cursor=cursor) == (["r5"], None)
    # A cursor belongs to its filter.
    other = await client.get("/api/robots", params={"connection": "offline", "cursor": cursor})
    assert other.status_code == 400
    bad = await client.get("/api/robots", params={"connection": "stale"})
    assert bad.status_code == 422


async def test_sequence_gaps_in_the_robot_and_the_metrics(client: httpx.AsyncClient) -> None:
    ts = now_ms()
    readings = [{"ts": ts + i, "seq": i, "data": IMU} for i in range(10) if i not in (2, 3, 7)]
    body = {"robot_id": "r1", "sensor_type": "imu", "readings": readings}
    assert (await client.post("/api/sensors", json=body)).status_code in (200, 201)
    no_seq = {"robot_id": "r2", "sensor_type": "imu", "ts": ts, "data": IMU}
    assert (await client.post("/api/sensors", json=no_seq)).status_code in (200, 201)
    assert (await client.get("/api/robots/r1")).json()["sequence_gaps"] == {"imu": 3}
    # A robot that sends no sequence numbers has no gaps to show, rather than zero.
    assert (await client.get("/api/robots/r2")).json()["sequence_gaps"] == {}
    metrics = (await client.get("/metrics")).text
    assert 'robosense_sequence_gaps{sensor_type="imu"} 3.0' in metrics
    late = {"robot_id": "r1", "sensor_type": "imu", "ts": ts + 7, "seq": 7, "data": IMU}
    assert (await client.post("/api/sensors", json=late)).status_code in (200, 201)
    assert (await client.get("/api/robots/r1")).json()["sequence_gaps"] == {"imu": 2}
    assert 'robosense_sequence_gaps{sensor_type="imu"} 2.0' in (await client.get("/metrics")).text
