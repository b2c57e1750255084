"""GET /api/alerts: filters, keyset pages newest first, the read scope."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from api.keys import Scope
from db.alerts import clear_alert, raise_alert


async def _seed(pool: asyncpg.Pool[Any]) -> list[int]:
    """Five alerts, oldest first: r1 offline (cleared), r1 battery, r2 offline, r2 gaps, r3."""
    await pool.execute("TRUNCATE alerts")
    ids = []
    for robot, kind in [
        ("r1", "offline"),
        ("r1", "battery_low"),
        ("r2", "offline"),
        ("r2", "sequence_gaps"),
        ("r3", "offline"),
    ]:
        row, new = await raise_alert(
            pool,
            kind=kind,
            severity="warning",
            robot_id=robot,
            raised_at_ms=1_700_000_000_000,
            message=f"{robot} {kind}",
            detail={"k": 1},
        )
        assert new
        ids.append(row.id)
    assert await clear_alert(pool, ids[0], cleared_at_ms=1_700_000_060_000) is not None
    return ids


async def test_lists_newest_first_in_keyset_pages(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ids = await _seed(clean_db)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/alerts", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) <= 2
        seen += [a["id"] for a in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)
    first = (await client.get("/api/alerts", params={"limit": 1})).json()["items"][0]
    assert first["robot_id"] == "r3" and first["kind"] == "offline"
    assert first["raised_at"] == 1_700_000_000_000 and first["cleared_at"] is None
    assert first["detail"] == {"k": 1}


async def test_filters(client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]) -> None:
    ids = await _seed(clean_db)

    async def listed(**params: Any) -> list[int]:
        r = await client.get("/api/alerts", params=params)
        assert r.status_code == 200, r.text
        return [a["id"] for a in r.json()["items"]]

    assert await listed(active="true") == [ids[4], ids[3], ids[2], ids[1]]
    assert await listed(active="false") == [ids[0]]
    cleared = (await client.get("/api/alerts", params={"active": "false"})).json()["items"][0]
    assert cleared["cleared_at"] == 1_700_000_060_000
    assert await listed(robot_id="r1") == [ids[1], ids[0]]
    assert await listed(kind="offline") == [ids[4], ids[2], ids[0]]
    assert await listed(kind="offline", active="true", robot_id="r2") == [ids[2]]
    assert (await client.get("/api/alerts", params={"kind": "nonsense"})).status_code == 422


async def test_a_cursor_belongs_to_its_filters(
    client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    await _seed(clean_db)
    page = (await client.get("/api/alerts", params={"limit": 1, "active": "true"})).json()
    other = await client.get(
        "/api/alerts", params={"limit": 1, "active": "false", "cursor": page["next_cursor"]}
    )
    assert other.status_code == 400


async def test_needs_the_read_scope(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, api_keys: dict[Scope, str]
) -> None:
    assert (await anonymous.get("/api/alerts")).status_code == 401
    ingest_only = await anonymous.get("/api/alerts", headers={"X-API-Key": api_keys[Scope.INGEST]})
    assert ingest_only.status_code == 403
    read = await anonymous.get("/api/alerts", headers={"X-API-Key": api_keys[Scope.READ]})
    assert read.status_code == 200
