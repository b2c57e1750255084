"""The counter journal's entry: the Redis counter updates one commit implies.

Built by the write path (`ingest/write.py`) in the transaction it describes, by the rebuild
(`ingest/rebuild.py`) from the tables, stored in `counter_journal`, and applied by the Lua
script in `ingest/counters.py`, which reads these field names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import orjson

from db.readings import InsertedGroup
from telemetry.payload import Reading


class MinuteCount(msgspec.Struct, frozen=True):
    """Readings inserted for one robot, sensor type and minute of reading time."""

    robot: str
    sensor: str
    minute: int  # epoch seconds of the minute's start
    count: int
    seq_count: int  # of those, readings with a seq; seq_min/max are 0 when there are none
    seq_min: int
    seq_max: int
    # Of `count`, readings in each slot of the minute (db.readings.SLOT_SECONDS); empty in
    # entries written before slots were counted.
    slots: list[int] = []


class MinuteRejections(msgspec.Struct, frozen=True):
    """Refusals for one reason in one minute of receipt."""

    minute: int
    reason: str
    count: int


class LatestReading(msgspec.Struct, frozen=True):
    """A candidate for a robot's newest reading of a sensor type (kept if newer)."""

    robot: str
    sensor: str
    ts_ms: int
    reading: str  # the reading as JSON (reading_json)


class LastSeen(msgspec.Struct, frozen=True):
    robot: str
    at_ms: int  # when a reading of the robot was last received


class JournalEntry(msgspec.Struct, frozen=True):
    groups: list[MinuteCount] = []
    rejected: list[MinuteRejections] = []
    latest: list[LatestReading] = []
    last_seen: list[LastSeen] = []

    def to_json(self) -> str:
        return _ENCODER.encode(self).decode()


_ENCODER = msgspec.json.Encoder()


def epoch_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def epoch_minute(dt: datetime) -> int:
    return int(dt.timestamp()) // 60 * 60


def reading_json(*, ts: datetime, received_at: datetime | None, seq: int | None, data: str) -> str:
    """A reading as JSON, the one form the counters keep; `data` is already JSON, so it is
    spliced in rather than re-encoded."""
    received = f'"received_at":"{received_at.isoformat()}",' if received_at else ""
    seq_text = "null" if seq is None else seq
    return f'{{"ts":"{ts.isoformat()}",{received}"seq":{seq_text},"data":{data}}}'


def minute_count(g: InsertedGroup) -> MinuteCount:
    return MinuteCount(
        g.robot_id,
        g.sensor_type,
        g.minute,
        g.count,
        g.seq_count,
        g.seq_min or 0,
        g.seq_max or 0,
        list(g.slots),
    )


def latest_reading(r: Reading) -> LatestReading:
    return LatestReading(
        r.robot_id,
        r.sensor_type,
        epoch_ms(r.ts),
        reading_json(ts=r.ts, received_at=r.received_at, seq=r.seq, data=r.data),
    )


def upgrade_legacy_entry(text: str) -> str:
    """An entry in the positional form written before named fields (`g`, `x`, `l`, `s`),
    as a JournalEntry; other entries unchanged. Such entries can wait in the journal across
    an upgrade (Redis was away), and the Lua script reads only the named form."""
    old: dict[str, Any] = orjson.loads(text)
    if not old.keys() & {"g", "x", "l", "s"}:
        return text
    return JournalEntry(
        groups=[MinuteCount(*g) for g in old.get("g", [])],
        rejected=[MinuteRejections(*x) for x in old.get("x", [])],
        latest=[LatestReading(*item) for item in old.get("l", [])],
        last_seen=[LastSeen(*s) for s in old.get("s", [])],
    ).to_json()


def decode_entry(text: str) -> JournalEntry:
    """A stored entry (either form) as a JournalEntry."""
    return _DECODER.decode(upgrade_legacy_entry(text))


_DECODER = msgspec.json.Decoder(JournalEntry)
