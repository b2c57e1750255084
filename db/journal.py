"""The counter journal: Redis counter updates, committed with the rows they count."""

from __future__ import annotations

from collections.abc import Sequence

from db import Connection


async def add_journal_entry(conn: Connection, entry: str, *, retire: Sequence[int] = ()) -> int:
    """Adds an entry and, in the same statement, deletes the ids in `retire` (entries already
    applied to Redis): one round trip per commit instead of two."""
    entry_id: int = await conn.fetchval(
        """WITH retired AS (DELETE FROM counter_journal WHERE id = ANY($2::bigint[]))
           INSERT INTO counter_journal (entry) VALUES ($1::jsonb) RETURNING id""",
        entry,
        list(retire),
    )
    return entry_id


async def delete_journal_entries(conn: Connection, ids: Sequence[int]) -> None:
    if ids:
        await conn.execute("DELETE FROM counter_journal WHERE id = ANY($1::bigint[])", list(ids))


async def pending_journal_entries(
    conn: Connection, *, older_than_s: float = 0.0, limit: int = 1000
) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT id, entry::text AS entry FROM counter_journal "
        "WHERE created_at <= now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
        older_than_s,
        limit,
    )
    return [(r["id"], r["entry"]) for r in rows]


async def take_all_journal_entries(conn: Connection) -> list[int]:
    """Deletes every pending entry (a rebuild from the tables supersedes them)."""
    rows = await conn.fetch("DELETE FROM counter_journal RETURNING id")
    return [r["id"] for r in rows]


async def journal_entries_up_to(conn: Connection, *, limit: int) -> list[tuple[int, str]] | None:
    """Every pending entry, or None when there are more than `limit` (Redis is behind)."""
    rows = await conn.fetch(
        "SELECT id, entry::text AS entry FROM counter_journal ORDER BY id LIMIT $1", limit + 1
    )
    if len(rows) > limit:
        return None
    return [(r["id"], r["entry"]) for r in rows]
