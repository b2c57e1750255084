"""Writing readings: COPY into a per-connection staging table, then an idempotent merge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from db import Connection
from telemetry.payload import Reading

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

# One row per (robot, sensor type, minute of reading time): what the counters are made of.
GROUP_BY_MINUTE = """
SELECT robot_id, sensor_type,
       (extract(epoch FROM date_trunc('minute', ts)))::bigint AS minute,
       count(*)::int AS n, count(seq)::int AS seq_n, min(seq) AS seq_min, max(seq) AS seq_max
"""

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
SELECT robot_id, NULL, NULL, NULL, NULL, NULL, NULL FROM unknown"""
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
    conn: Connection, readings: Sequence[Reading], *, register_unknown: bool
) -> MergeResult:
    """Inserts readings not stored yet, from registered robots (or registering them), and
    finds the skipped ones that differ from the stored reading of the same identity.

    Must run inside a transaction: the staging rows live until its end.
    """
    if not readings:
        return MergeResult([], frozenset())
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
