"""Response documents shared by the routes: a robot with its live fields, latest readings,
a stored reading."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson


def ms_to_datetime(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def robot_doc(
    row: asyncpg.Record, live: tuple[bytes | None, float | None] | None
) -> dict[str, Any]:
    """The robot's registry row with its live fields; `live` None: Redis was unavailable."""
    status, seen_ms = live or (None, None)
    state = orjson.loads(status) if status else {}
    connection = state.get("status")
    battery = row["battery_level"]
    return {
        "id": row["id"],
        "name": row["name"],
        "model": row["model"],
        "status": row["status"],
        # real holds ~7 digits: do not show float4 noise such as 33.29999923706055.
        "battery_level": None if battery is None else round(battery, 4),
        "metadata": orjson.Fragment(row["metadata"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "connection": (
            None
            if live is None
            else connection
            if connection in ("online", "offline")
            else "unknown"
        ),
        "connection_changed_at": ms_to_datetime(state.get("at")) if connection else None,
        "last_seen": ms_to_datetime(seen_ms),
        "live_unavailable": live is None,
    }


def latest_docs(
    latest: dict[str, bytes], sensor_types: frozenset[str] | None = None
) -> dict[str, Any]:
    return {
        sensor: orjson.Fragment(reading)
        for sensor, reading in latest.items()
        if sensor_types is None or sensor in sensor_types
    }


def reading_doc(row: Any) -> dict[str, Any]:
    return {
        "robot_id": row["robot_id"],
        "sensor_type": row["sensor_type"],
        "ts": row["ts"],
        "received_at": row["received_at"],
        "seq": row["seq"],
        "data": orjson.Fragment(row["data"]),
    }
