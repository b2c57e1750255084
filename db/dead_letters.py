"""The dead-letter table: every refused message or reading, with its reason."""

from __future__ import annotations

from collections.abc import Sequence

from db import Connection
from telemetry.payload import Rejection, storable_text

_COLUMNS = ("received_at", "topic", "reason", "detail", "payload", "payload_size")


async def store_dead_letters(conn: Connection, rejections: Sequence[Rejection]) -> None:
    """The payload is stored as sent (bytea); topic and detail, which may quote anything the
    message held, are made storable (NUL and lone surrogates escaped) so that no content can
    make PostgreSQL refuse a dead letter."""
    if rejections:
        await conn.copy_records_to_table(
            "dead_letters",
            records=[
                (
                    r.received_at,
                    storable_text(r.topic),
                    str(r.reason),
                    storable_text(r.detail),
                    r.payload,
                    r.payload_size,
                )
                for r in rejections
            ],
            columns=_COLUMNS,
        )
