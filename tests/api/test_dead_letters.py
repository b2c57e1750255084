"""GET /api/dead-letters: filters, signed keyset cursors, payloads shown safely."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api.keys import Scope
from db.dead_letters import store_dead_letters
from telemetry.errors import RejectReason
from telemetry.payload import DEAD_LETTER_PAYLOAD_CAP, Rejection

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


async def _store(pool: asyncpg.Pool[Any], rejections: list[Rejection]) -> None:
    async with pool.acquire() as conn:
        await store_dead_letters(conn, rejections)


def _letter(robot: str, reason: RejectReason, seconds: int, payload: bytes = b"{}") -> Rejection:
    return Rejection.of(
        T0 + timedelta(seconds=seconds),
        f"robots/{robot}/sensors/gps",
        reason,
        f"{robot} {reason} {seconds}",
        payload,
    )


async def _walk(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query = dict(params)
    while True:
        response = await client.get("/api/dead-letters", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


async def test_pages_filters_and_order(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    await _store(
        clean_db,
        [
            _letter(robot, reason, s)
            for s in range(12)
            for robot, reason in (
                ("r1", RejectReason.INVALID_JSON),
                ("r2", RejectReason.OUT_OF_RANGE),
            )
        ],
    )
    everything = await _walk(client, {"limit": 5})
    assert len(everything) == 24 and len({d["id"] for d in everything}) == 24
    times = [d["received_at"] for d in everything]
    assert times == sorted(times, reverse=True)

    r1 = await _walk(client, {"robot_id": "r1", "limit": 5})
    assert {d["robot_id"] for d in r1} == {"r1"} and len(r1) == 12
    assert {d["reason"] for d in r1} == {"invalid_json"}
    out_of_range = await _walk(client, {"reason": "out_of_range", "limit": 5})
    assert {d["robot_id"] for d in out_of_range} == {"r2"} and len(out_of_range) == 12
    window = {
        "since": (T0 + timedelta(seconds=3)).isoformat(),
        "until": (T0 + timedelta(seconds=6)).isoformat(),
    }
    both = await _walk(client, {**window, "robot_id": "r2", "limit": 2})
    assert [d["detail"] for d in both] == [f"r2 out_of_range {s}" for s in (5, 4, 3)]


async def test_payloads_are_text_or_base64_and_say_which(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    markup = b'<script>alert("x")</script>\x00\n'
    binary = b"\xff\xfe\x00garbage"
    large = b"x" * (DEAD_LETTER_PAYLOAD_CAP + 10)
    await _store(
        clean_db,
        [
            _letter("r1", RejectReason.INVALID_SCHEMA, 1, markup),
            _letter("r1", RejectReason.INVALID_JSON, 2, binary),
            _letter("r1", RejectReason.PAYLOAD_TOO_LARGE, 3, large),
        ],
    )
    response = await client.get("/api/dead-letters")
    assert response.headers["content-type"].startswith("application/json")
    too_large, not_utf8, text = response.json()["items"]
    assert (text["payload"], text["payload_encoding"]) == (markup.decode(), "utf-8")
    assert not text["payload_truncated"]
    assert not_utf8["payload_encoding"] == "base64"
    assert base64.b64decode(not_utf8["payload"]) == binary
    assert too_large["payload_truncated"] and too_large["payload_size"] == len(large)
    assert len(too_large["payload"]) == DEAD_LETTER_PAYLOAD_CAP


async def test_a_topic_without_a_robot_has_none(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    await _store(
        clean_db, [Rejection.of(T0, "elsewhere", RejectReason.BAD_TOPIC, "bad topic", b"1")]
    )
    [item] = (await client.get("/api/dead-letters")).json()["items"]
    assert (item["topic"], item["robot_id"]) == ("elsewhere", None)


async def test_cursor_is_bound_to_its_filters(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    await _store(clean_db, [_letter("r1", RejectReason.INVALID_JSON, s) for s in range(3)])
    first = (await client.get("/api/dead-letters", params={"limit": 1})).json()
    cursor = first["next_cursor"]
    assert cursor
    other = await client.get(
        "/api/dead-letters", params={"limit": 1, "robot_id": "r1", "cursor": cursor}
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_cursor"
    body, _, sig = cursor.partition(".")
    tampered = await client.get(
        "/api/dead-letters", params={"limit": 1, "cursor": f"{body}x.{sig}"}
    )
    assert tampered.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"reason": "not_a_reason"},
        {"robot_id": "bad id!"},
        {"limit": 0},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    ],
)
async def test_bad_queries_are_refused(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get("/api/dead-letters", params=params)
    assert response.status_code in (400, 422), response.text


async def test_read_scope_is_enough_and_a_key_is_needed(
    anonymous: httpx.AsyncClient, api_keys: dict[Scope, str], clean_db: asyncpg.Pool[Any]
) -> None:
    assert (await anonymous.get("/api/dead-letters")).status_code == 401
    read = await anonymous.get("/api/dead-letters", headers={"X-API-Key": api_keys[Scope.READ]})
    assert read.status_code == 200
    ingest = await anonymous.get("/api/dead-letters", headers={"X-API-Key": api_keys[Scope.INGEST]})
    assert ingest.status_code == 403
