"""What a run published, counted when each message is handed to MQTT, so tests check exactly.

Counts are per robot and sensor type:
- `valid_readings`: readings the pipeline must store, each a distinct identity
  (robot_id, sensor_type, ts); `seq_first`/`seq_last` and `ts_first_ms`/`ts_last_ms` bound them.
- `messages`: every message sent on the stream's behalf (valid, duplicate, out of window,
  malformed).
- `duplicate_messages`/`duplicate_readings`: resends of valid messages (stored once).
- `rejected_readings`: readings of clock-skewed robots outside the time window, by reason
  (one dead letter per reading).
- `malformed`: malformed messages by the reason they must be refused for (one dead letter
  each).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson


class Tally:
    """One robot and sensor type. Plain attributes: incremented per message in the hot loop."""

    __slots__ = (
        "duplicate_messages",
        "duplicate_readings",
        "malformed",
        "messages",
        "rejected_readings",
        "seq_first",
        "seq_last",
        "ts_first_ms",
        "ts_last_ms",
        "valid_readings",
    )

    def __init__(self) -> None:
        self.messages = 0
        self.valid_readings = 0
        self.duplicate_messages = 0
        self.duplicate_readings = 0
        self.malformed: Counter[str] = Counter()
        self.rejected_readings: Counter[str] = Counter()
        self.seq_first: int | None = None
        self.seq_last: int | None = None
        self.ts_first_ms: int | None = None
        self.ts_last_ms: int | None = None

    def valid(self, n: int, seq_first: int, seq_last: int, ts_first: int, ts_last: int) -> None:
        self.messages += 1
        self.valid_readings += n
        # Out-of-order and late messages arrive after later ones: keep the bounds, not the last.
        if self.seq_first is None or seq_first < self.seq_first:
            self.seq_first = seq_first
        if self.seq_last is None or seq_last > self.seq_last:
            self.seq_last = seq_last
        if self.ts_first_ms is None or ts_first < self.ts_first_ms:
            self.ts_first_ms = ts_first
        if self.ts_last_ms is None or ts_last > self.ts_last_ms:
            self.ts_last_ms = ts_last

    def to_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "valid_readings": self.valid_readings,
            "duplicate_messages": self.duplicate_messages,
            "duplicate_readings": self.duplicate_readings,
            "rejected_readings": dict(sorted(self.rejected_readings.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "seq_first": self.seq_first,
            "seq_last": self.seq_last,
            "ts_first_ms": self.ts_first_ms,
            "ts_last_ms": self.ts_last_ms,
        }


@dataclass(slots=True, kw_only=True)
class Summary:
    seed: int
    start_ts_ms: int
    qos: int
    partition: str
    robots: list[str]
    requested_readings_per_s: float
    requested_messages_per_s: float
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    elapsed_s: float = 0.0
    max_lag_s: float = 0.0
    interrupted: bool = False
    unacknowledged: int = 0
    drops: list[dict[str, Any]] = field(default_factory=list)

    def tally(self, robot_id: str, sensor_type: str) -> Tally:
        key = (robot_id, sensor_type)
        t = self.tallies.get(key)
        if t is None:
            t = self.tallies[key] = Tally()
        return t

    def totals(self) -> dict[str, Any]:
        malformed: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        by_type: dict[str, int] = {}
        messages = valid = dup_messages = dup_readings = 0
        for (_, sensor_type), t in self.tallies.items():
            messages += t.messages
            valid += t.valid_readings
            dup_messages += t.duplicate_messages
            dup_readings += t.duplicate_readings
            malformed.update(t.malformed)
            rejected.update(t.rejected_readings)
            by_type[sensor_type] = by_type.get(sensor_type, 0) + t.valid_readings
        dead_letters = malformed + rejected
        return {
            "messages": messages,
            "valid_readings": valid,
            "valid_readings_by_sensor_type": dict(sorted(by_type.items())),
            "duplicate_messages": dup_messages,
            "duplicate_readings": dup_readings,
            "malformed": dict(sorted(malformed.items())),
            "rejected_readings": dict(sorted(rejected.items())),
            "expected_dead_letters": dict(sorted(dead_letters.items())),
        }

    def to_json(self) -> dict[str, Any]:
        totals = self.totals()
        elapsed = self.elapsed_s or 1e-9
        per_robot: dict[str, dict[str, Any]] = {}
        for (robot_id, sensor_type), t in sorted(self.tallies.items()):
            per_robot.setdefault(robot_id, {})[sensor_type] = t.to_json()
        readings_sent = (
            totals["valid_readings"]
            + totals["duplicate_readings"]
            + sum(totals["rejected_readings"].values())
        )
        return {
            "seed": self.seed,
            "start_ts_ms": self.start_ts_ms,
            "qos": self.qos,
            "partition": self.partition,
            "robots": self.robots,
            "interrupted": self.interrupted,
            "unacknowledged": self.unacknowledged,
            "elapsed_s": round(self.elapsed_s, 3),
            "requested": {
                "readings_per_s": round(self.requested_readings_per_s, 1),
                "messages_per_s": round(self.requested_messages_per_s, 1),
            },
            "achieved": {
                "messages_per_s": round(totals["messages"] / elapsed, 1),
                "readings_per_s": round(readings_sent / elapsed, 1),
            },
            "max_lag_s": round(self.max_lag_s, 3),
            "drops": self.drops,
            "totals": totals,
            "per_robot": per_robot,
        }

    def write(self, path: Path) -> None:
        data = orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def print(self, out: TextIO = sys.stdout) -> None:
        doc = self.to_json()
        t = doc["totals"]
        lines = [
            f"robots {len(self.robots)} (partition {self.partition}), qos {self.qos}, "
            f"seed {self.seed}, {doc['elapsed_s']} s"
            + (" [interrupted]" if self.interrupted else ""),
            f"messages {t['messages']}, valid readings {t['valid_readings']} "
            f"{t['valid_readings_by_sensor_type']}",
            f"duplicates {t['duplicate_messages']} messages / {t['duplicate_readings']} readings",
            f"malformed {t['malformed']}, rejected readings {t['rejected_readings']}",
            f"rate: requested {doc['requested']['messages_per_s']} msg/s "
            f"{doc['requested']['readings_per_s']} readings/s, achieved "
            f"{doc['achieved']['messages_per_s']} msg/s {doc['achieved']['readings_per_s']} "
            f"readings/s, max lag {doc['max_lag_s']} s",
        ]
        if self.unacknowledged:
            lines.append(f"UNACKNOWLEDGED by the broker: {self.unacknowledged} messages")
        print("\n".join(lines), file=out)
