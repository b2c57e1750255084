"""The dead-letter table: every refused message or reading, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

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


async def delete_dead_letters_before(
    conn: Connection, *, cutoff: datetime, chunk: int = 10_000
) -> int:
    """Deletes dead letters received before `cutoff`, a chunk per statement (short locks, no
    long transaction); returns how many."""
    deleted = 0
    while True:
        status = await conn.execute(
            """DELETE FROM dead_letters WHERE id IN (
                   SELECT id FROM dead_letters WHERE received_at < $1 LIMIT $2)""",
            cutoff,
            chunk,
        )
        n = int(status.rsplit(" ", 1)[1])
        deleted += n
        if n < chunk:
            return deleted
