"""Writing readings: when nothing in the batch is stored yet (the common case), a small batch
is inserted with its journal entry in one statement and a large one is COPYed straight into the
table; else COPY into a per-connection staging table and an idempotent merge."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from db import Connection
from db.errors import StoredAlreadyError
from db.journal import add_entry_statement
from telemetry.payload import Reading

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A minute's readings are also counted in parts of this many seconds (a group's `slots`), so
# that a bucket aggregate reads the open minute's last part, not the whole minute so far
# (api/aggregates.py).
SLOT_SECONDS = 10
SLOTS_PER_MINUTE = 60 // SLOT_SECONDS
_SLOT = timedelta(seconds=SLOT_SECONDS)

_STAGING_COLUMNS = ("robot_id", "sensor_type", "ts", "received_at", "seq", "data")

# ON COMMIT DELETE ROWS empties it at every commit or rollback: no cleanup, and it never grows.
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS staging_readings (
    robot_id text, sensor_type text, ts timestamptz, received_at timestamptz, seq bigint, data jsonb
) ON COMMIT DELETE ROWS
"""

_REGISTER_UNKNOWN = """
INSERT INTO robots (id) SELECT DISTINCT robot_id FROM staging_readings ON CONFLICT DO NOTHING
"""

_REGISTER = "INSERT INTO robots (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"

_COUNT_REGISTERED = "SELECT count(*) FROM robots WHERE id = ANY($1::text[])"

# Up to this many readings, `insert_all_new` costs PostgreSQL and the client less than the
# transaction around a COPY; past it, COPY's page-at-a-time insert wins (BENCHMARKS.md,
# "Issue 15, round 5").
ONE_STATEMENT_MAX_READINGS = 200

# Every reading and the journal entry counting them, in one statement and so one transaction
# of its own: one round trip instead of six (BEGIN, registration check, COPY's two, journal,
# COMMIT). Nothing is written when a robot is not registered.
_INSERT_ALL_NEW = add_entry_statement(
    ctes="""known AS (
    SELECT count(*) = cardinality($7::text[]) AS all_registered FROM robots
    WHERE id = ANY($7::text[])
), inserted AS (
    INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                         $5::bigint[], $6::jsonb[])
    WHERE (SELECT all_registered FROM known)
), """,
    only_if="(SELECT all_registered FROM known)",
    entry="$8",
    retire="$9",
)

# One row per (robot, sensor type, minute of reading time): what the counters are made of.
# Without the slots (a comparison of minute counts needs none): GROUP_BY_MINUTE_COUNTS.
GROUP_BY_MINUTE_COUNTS = """
SELECT robot_id, sensor_type,
       (extract(epoch FROM date_trunc('minute', ts)))::bigint AS minute,
       count(*)::int AS n, count(seq)::int AS seq_n, min(seq) AS seq_min, max(seq) AS seq_max
"""
GROUP_BY_MINUTE = (
    GROUP_BY_MINUTE_COUNTS.rstrip()
    + """,
       ARRAY["""
    + ", ".join(
        f"count(*) FILTER (WHERE date_part('second', ts) >= {i * SLOT_SECONDS}"
        f" AND date_part('second', ts) < {(i + 1) * SLOT_SECONDS})"
        for i in range(SLOTS_PER_MINUTE)
    )
    + """]::int[] AS slots
"""
)

# The merge returns those rows for what it really inserted, so the counters never count a
# duplicate, and then one row per unregistered robot (sensor_type NULL) whose readings it
# refused. One statement, one round trip: a commit's latency is mostly round trips.
_MERGE = (
    """
WITH unknown AS (
    SELECT DISTINCT s.robot_id FROM staging_readings s
    WHERE NOT EXISTS (SELECT 1 FROM robots r WHERE r.id = s.robot_id)
), inserted AS (
    INSERT INTO sensor_readings (robot_id, sensor_type, ts, received_at, seq, data)
    SELECT s.robot_id, s.sensor_type, s.ts, s.received_at, s.seq, s.data
    FROM staging_readings s
    WHERE EXISTS (SELECT 1 FROM robots r WHERE r.id = s.robot_id)
    ON CONFLICT DO NOTHING
    RETURNING robot_id, sensor_type, ts, seq
)
"""
    + GROUP_BY_MINUTE
    + """FROM inserted GROUP BY 1, 2, 3
UNION ALL
SELECT robot_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM unknown"""
)


# After the merge, staging rows whose identity is stored with different data: a second,
# different reading for the same (robot, sensor type, ts), which the merge skipped. Only run when
# the merge skipped rows. LATERAL ... LIMIT 1 keeps it one primary-key probe per staging row
# (the temp table has no statistics; a plain join could be planned as a scan of every partition).
_CONFLICTS = """
SELECT s.robot_id, s.sensor_type, s.ts, s.received_at, s.seq, s.data::text AS data,
       k.data::text AS stored
FROM staging_readings s
CROSS JOIN LATERAL (
    SELECT r.data FROM sensor_readings r
    WHERE r.robot_id = s.robot_id AND r.sensor_type = s.sensor_type AND r.ts = s.ts
    LIMIT 1
) k
WHERE k.data <> s.data
"""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reading skipped because a different one with its identity is stored."""

    reading: Reading
    stored_data: str


@dataclass(frozen=True, slots=True)
class InsertedGroup:
    """What one merge inserted for one robot, sensor type and minute of reading time."""

    robot_id: str
    sensor_type: str
    minute: int
    count: int
    seq_count: int
    seq_min: int | None
    seq_max: int | None
    # Readings in each SLOT_SECONDS of the minute, the first first; empty from
    # GROUP_BY_MINUTE_COUNTS.
    slots: tuple[int, ...]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> InsertedGroup:
        return cls(
            r["robot_id"],
            r["sensor_type"],
            r["minute"],
            r["n"],
            r["seq_n"],
            r["seq_min"],
            r["seq_max"],
            tuple(r.get("slots") or ()),
        )


@dataclass(frozen=True, slots=True)
class MergeResult:
    groups: list[InsertedGroup]
    unknown_robots: frozenset[str]
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def inserted(self) -> int:
        return sum(g.count for g in self.groups)


async def prepare_connection(conn: Connection) -> None:
    await conn.execute(_CREATE_STAGING)


async def merge_readings(
    conn: Connection, readings: Sequence[Reading], *, register_unknown: bool, savepoint: bool = True
) -> MergeResult:
    """Inserts readings not stored yet, from registered robots (or registering them), and
    finds the skipped ones that differ from the stored reading of the same identity.

    Must run inside a transaction: the staging rows live until its end. With
    `savepoint=False` the fast path's COPY runs without a savepoint (two round trips and a
    PostgreSQL subtransaction less per batch), so a reading stored already costs the whole
    transaction: StoredAlreadyError is raised, and the caller runs the transaction again with
    `merge_via_staging`.
    """
    if not readings:
        return MergeResult([], frozenset())
    if await _copy_if_all_new(
        conn, readings, register_unknown=register_unknown, savepoint=savepoint
    ):
        return MergeResult(new_groups(readings), frozenset())
    return await merge_via_staging(conn, readings, register_unknown=register_unknown)


async def _copy_if_all_new(
    conn: Connection, readings: Sequence[Reading], *, register_unknown: bool, savepoint: bool
) -> bool:
    """The fast path: when every robot is registered, COPY the batch straight into the table.
    The primary key refuses the whole COPY if any reading is stored already (a redelivery) or
    twice in the batch; under a savepoint, it is then rolled back and the caller merges.
    COPY into the table inserts rows a page at a time and skips the merge's per-row conflict
    check: about 40 % less PostgreSQL CPU and 20 % less WAL per reading (loadtest.merge_cost)."""
    robots = list({r.robot_id for r in readings})
    if register_unknown:
        await conn.execute(_REGISTER, robots)
    elif await conn.fetchval(_COUNT_REGISTERED, robots) != len(robots):
        return False
    try:
        async with conn.transaction() if savepoint else contextlib.nullcontext():
            await conn.copy_records_to_table(
                "sensor_readings", records=readings, columns=_STAGING_COLUMNS
            )
    except asyncpg.UniqueViolationError as exc:
        if not savepoint:
            raise StoredAlreadyError(str(exc)) from exc
        return False
    return True


async def insert_all_new(
    conn: Connection, readings: Sequence[Reading], *, journal_entry: str, retire: Sequence[int]
) -> int | None:
    """Inserts every reading and adds `journal_entry` (retiring `retire`, as add_journal_entry
    does) in one statement, outside any transaction: the statement is its own. Returns the
    entry's id; None when a robot of the batch is not registered (nothing written then).

    Raises StoredAlreadyError when a reading is stored already or is twice in the batch
    (nothing written): the caller merges instead. For batches up to ONE_STATEMENT_MAX_READINGS.
    """
    robot_ids, sensor_types, ts, received_at, seq, data = zip(*readings, strict=True)
    try:
        entry_id: int | None = await conn.fetchval(
            _INSERT_ALL_NEW,
            robot_ids,
            sensor_types,
            ts,
            received_at,
            seq,
            data,
            list(set(robot_ids)),
            journal_entry,
            list(retire),
        )
    except asyncpg.UniqueViolationError as exc:
        raise StoredAlreadyError(str(exc)) from exc
    return entry_id


def new_groups(readings: Sequence[Reading]) -> list[InsertedGroup]:
    """What the merge's GROUP_BY_MINUTE returns when it inserted every reading.

    A message's readings come one after another, of one robot and sensor type and mostly of
    one slot of a minute: the group found for a reading serves the next ones while they fall
    into the same slot (two datetime comparisons instead of a timestamp, a key and a lookup).
    Slots are then gathered into their minutes."""
    acc: dict[tuple[str, str, int], list[int]] = {}
    robot = sensor = ""
    lo = hi = _EPOCH
    g: list[int] = []
    for r in readings:
        ts = r.ts
        if r.robot_id != robot or r.sensor_type != sensor or not lo <= ts < hi:
            robot, sensor = r.robot_id, r.sensor_type
            slot = math.floor(ts.timestamp()) // SLOT_SECONDS * SLOT_SECONDS
            lo = datetime.fromtimestamp(slot, UTC)
            hi = lo + _SLOT
            key = (robot, sensor, slot)
            found = acc.get(key)
            if found is None:
                found = acc[key] = [0, 0, 0, 0]  # count, seq count, seq min, seq max
            g = found
        g[0] += 1
        seq = r.seq
        if seq is not None:
            if g[1] == 0:
                g[2] = g[3] = seq
            elif seq < g[2]:
                g[2] = seq
            elif seq > g[3]:
                g[3] = seq
            g[1] += 1
    minutes: dict[tuple[str, str, int], list[int]] = {}
    slots: dict[tuple[str, str, int], list[int]] = {}
    for (robot, sensor, slot), (n, sn, lo_seq, hi_seq) in acc.items():
        key = (robot, sensor, slot - slot % 60)
        m = minutes.get(key)
        if m is None:
            m = minutes[key] = [0, 0, 0, 0]
            slots[key] = [0] * SLOTS_PER_MINUTE
        slots[key][slot % 60 // SLOT_SECONDS] = n
        m[0] += n
        if sn:
            m[2] = lo_seq if not m[1] else min(m[2], lo_seq)
            m[3] = hi_seq if not m[1] else max(m[3], hi_seq)
            m[1] += sn
    return [
        InsertedGroup(
            robot,
            sensor,
            minute,
            n,
            sn,
            lo_seq if sn else None,
            hi_seq if sn else None,
            tuple(slots[robot, sensor, minute]),
        )
        for (robot, sensor, minute), (n, sn, lo_seq, hi_seq) in minutes.items()
    ]


async def merge_via_staging(
    conn: Connection, readings: Sequence[Reading], *, register_unknown: bool
) -> MergeResult:
    await conn.copy_records_to_table("staging_readings", records=readings, columns=_STAGING_COLUMNS)
    if register_unknown:
        await conn.execute(_REGISTER_UNKNOWN)
    rows = await conn.fetch(_MERGE)
    groups = [InsertedGroup.from_record(r) for r in rows if r["sensor_type"] is not None]
    unknown = frozenset(r["robot_id"] for r in rows if r["sensor_type"] is None)
    skipped = len(readings) - sum(g.count for g in groups)
    if unknown:
        skipped -= sum(1 for r in readings if r.robot_id in unknown)
    conflicts = []
    if skipped > 0:
        conflicts = [
            Conflict(
                Reading(
                    r["robot_id"], r["sensor_type"], r["ts"], r["received_at"], r["seq"], r["data"]
                ),
                r["stored"],
            )
            for r in await conn.fetch(_CONFLICTS)
        ]
    return MergeResult(groups, unknown, conflicts)
