"""The counter journal: Redis counter updates, committed with the rows they count."""

from __future__ import annotations

from collections.abc import Sequence

from db import Connection


def add_entry_statement(*, entry: str, retire: str, ctes: str = "", only_if: str = "true") -> str:
    """The statement that adds an entry (the text parameter `entry`) and deletes the ids in the
    bigint[] parameter `retire` (entries already applied to Redis), returning the new id.

    `ctes` are a caller's own common table expressions (each followed by a comma), so that
    its rows and the entry counting them commit in one statement; `only_if` is a condition
    on them: when false, the statement adds and deletes nothing and returns no row."""
    return f"""WITH {ctes}retired AS (
    DELETE FROM counter_journal WHERE id = ANY({retire}::bigint[]) AND {only_if}
)
INSERT INTO counter_journal (entry) SELECT {entry}::text WHERE {only_if} RETURNING id"""


_ADD_ENTRY = add_entry_statement(entry="$1", retire="$2")


async def add_journal_entry(conn: Connection, entry: str, *, retire: Sequence[int] = ()) -> int:
    """Adds an entry and, in the same statement, deletes the ids in `retire` (entries already
    applied to Redis): one round trip per commit instead of two."""
    entry_id: int = await conn.fetchval(_ADD_ENTRY, entry, list(retire))
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
