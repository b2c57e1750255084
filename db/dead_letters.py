"""The dead-letter table: every refused message or reading, with its reason."""

from __future__ import annotations

from collections.abc import Sequence

from db import Connection
from telemetry.payload import Rejection

_COLUMNS = ("received_at", "topic", "reason", "detail", "payload", "payload_size")


async def store_dead_letters(conn: Connection, rejections: Sequence[Rejection]) -> None:
    if rejections:
        await conn.copy_records_to_table(
            "dead_letters",
            records=[
                (r.received_at, r.topic, str(r.reason), r.detail, r.payload, r.payload_size)
                for r in rejections
            ],
            columns=_COLUMNS,
        )
