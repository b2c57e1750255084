"""Hostile input over HTTP: every bad body gets a 4xx with a reason (never a 500), and every
good request around it is stored in full."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import orjson

from tests.api.conftest import IMU, now_ms

DEEP = 1000
NESTED_LIST = b"[" * DEEP + b"1" + b"]" * DEEP
NESTED_OBJECT = b'{"a":' * DEEP + b"1" + b"}" * DEEP


def sensor_cases(ts: int) -> list[tuple[bytes, int, str]]:
    """(body, status, error) of POST /api/sensors bodies refused as a whole."""
    one = b'"robot_id":"r1","sensor_type":"battery"'
    return [
        # Nesting deep enough to exhaust a recursive decoder, in every position.
        (b'{%s,"readings":%s}' % (one, NESTED_LIST), 422, "nesting_too_deep"),
        (b'{%s,"ts":%d,"data":%s}' % (one, ts, NESTED_OBJECT), 422, "nesting_too_deep"),
        (
            b'{"robot_id":"r1","timestamp":%d,"sensors":%s}' % (ts, NESTED_LIST),
            422,
            "nesting_too_deep",
        ),
        (b'{"robot_id":%s}' % NESTED_LIST, 422, "nesting_too_deep"),
        (b"[" * 60_000, 422, "nesting_too_deep"),
        # NUL in the robot id, the sensor type, a field name, a value, the timestamp.
        (
            b'{"robot_id":"r1\\u0000","sensor_type":"battery","ts":%d,"data":{"level":1}}' % ts,
            422,
            "invalid_schema",
        ),
        (
            b'{"robot_id":"r1","sensor_type":"batt\\u0000ery","ts":%d,"data":{"level":1}}' % ts,
            422,
            "unknown_sensor_type",
        ),
        (b'{%s,"ts":%d,"data":{"level":1,"\\u0000":1}}' % (one, ts), 422, "readings_rejected"),
        (b'{%s,"ts":%d,"data":{"level":"\\u0000"}}' % (one, ts), 422, "readings_rejected"),
        (
            b'{%s,"ts":"2026-01-01T00:00:00\\u0000Z","data":{"level":1}}' % one,
            422,
            "readings_rejected",
        ),
        (b'{%s,"\\u0000":1}' % one, 422, "invalid_schema"),
        (
            b'{"robot_id":"r1","timestamp":%d,"sensors":[{"sensor_type":"\\u0000","data":{}}]}'
            % ts,
            422,
            "readings_rejected",
        ),
        # Not UTF-8, in the envelope and in a reading.
        (b'{"robot_id":"r1","\xff":1}', 422, "invalid_json"),
        (b'\xff\xfe{"robot_id":"r1"}', 422, "invalid_json"),
        (b'{%s,"ts":%d,"data":{"\xff\xfe":1}}' % (one, ts), 422, "readings_rejected"),
        (
            b'{"robot_id":"r1","timestamp":%d,"sensors":[{"sensor_type":"GPS","data":{"\xff":1}}]}'
            % ts,
            422,
            "invalid_json",
        ),
        (
            b'{"robot_id":"r1","timestamp":%d,"sensors":[{"sensor_type":"GPS","\xff":1}]}' % ts,
            422,
            "invalid_json",
        ),
        (
            b'{"robot_id":"r1","timestamp":%d,"sensors":[{"sensor_type":"\xff","data":{}}]}' % ts,
            422,
            "invalid_json",
        ),
        # Huge (the test app's limit is 64 KiB).
        (b'{"robot_id":"r1","x":"%s"}' % (b"a" * 70_000), 413, "payload_too_large"),
        # Wrong types.
        (b"[]", 422, "invalid_schema"),
        (b"null", 422, "invalid_schema"),
        (b'{"robot_id":1}', 422, "invalid_schema"),
        (b'{%s,"readings":{}}' % one, 422, "readings_rejected"),
        (b'{%s,"ts":%d,"data":{"level":true}}' % (one, ts), 422, "readings_rejected"),
    ]


async def test_hostile_sensor_bodies_between_good_ones(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = now_ms() - 60_000
    cases = sensor_cases(ts)
    headers = {"content-type": "application/json"}
    for i, (body, status, error) in enumerate(cases):
        before = await client.post(
            "/api/sensors",
            json={"robot_id": "r2", "sensor_type": "imu", "ts": ts + i, "data": IMU},
        )
        assert before.status_code == 201, before.text
        response = await client.post("/api/sensors", content=body, headers=headers)
        assert (response.status_code, response.json()["error"]) == (status, error), (
            i,
            response.text[:300],
        )
        after = await client.post(
            "/api/sensors",
            json={
                "robot_id": "r3",
                "sensor_type": "battery",
                "readings": [{"ts": ts + i, "data": {"level": 1}}],
            },
        )
        assert after.status_code == 201, after.text
    stored = await clean_db.fetchval("SELECT count(*) FROM sensor_readings")
    assert stored == 2 * len(cases)
    assert (
        await clean_db.fetchval("SELECT count(*) FROM sensor_readings WHERE robot_id = 'r1'") == 0
    )


async def test_hostile_robot_bodies(client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]) -> None:
    """NUL, deep nesting and non-UTF-8 in a robot's name and metadata: 4xx, and the registry
    keeps working."""
    headers = {"content-type": "application/json"}
    bodies = [
        b'{"id":"n1","name":"a\\u0000b"}',
        b'{"id":"n2","model":"\\u0000"}',
        b'{"id":"n3","metadata":{"k":"\\u0000"}}',
        b'{"id":"n4","metadata":{"\\u0000":1}}',
        b'{"id":"n5","metadata":%s}' % NESTED_OBJECT,
        b'{"id":"n6","metadata":{"a":%s}}' % NESTED_LIST,
        b'{"id":"n7","name":"\xff"}',
        b'{"id":"n8","name":"\\ud800"}',
    ]
    for body in bodies:
        response = await client.post("/api/robots", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (body[:40], response.status_code, response.text)
    ok = await client.post("/api/robots", json={"id": "n9", "name": "fine", "metadata": {"a": 1}})
    assert ok.status_code == 201, ok.text
    ids = await clean_db.fetch("SELECT id FROM robots WHERE id LIKE 'n%' ORDER BY id")
    assert [r["id"] for r in ids] == ["n9"]
    listed = await client.get("/api/robots")
    assert listed.status_code == 200
    assert orjson.loads(listed.content)
