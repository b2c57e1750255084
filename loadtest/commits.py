"""When each reading was committed, without touching the code under test.

The bridge commits one transaction per batch, and every row keeps its inserting transaction id
(`xmin`). A poller records `pg_current_snapshot()` every few milliseconds; a transaction's
commit time is the first poll whose snapshot sees it as committed. That bounds the commit time
from above by the poll interval (10 ms by default) plus one round trip, costs PostgreSQL one
trivial query per poll, and needs no server setting (track_commit_timestamp needs a restart).
Each reading's `ts` is its send time (loadtest.wire_publisher), so publish-to-commit latency is
`commit time - ts`, computed in SQL over every row.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # epoch seconds, taken after the answer arrived (an upper bound)
    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, at: float, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(at, int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid: int) -> bool:
        return xid < self.xmin or (xid < self.xmax and xid not in self.in_progress)


@dataclass(slots=True)
class CommitPoller:
    dsn: str
    interval_s: float = 0.01
    snapshots: list[Snapshot] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                text = await conn.fetchval("SELECT pg_current_snapshot()::text")
                self.snapshots.append(Snapshot.parse(time.time(), text))
                await asyncio.sleep(self.interval_s)
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()

    def commit_times(self, xids: list[int]) -> dict[int, float]:
        """xid (32-bit, as in xmin) -> first time a snapshot saw it committed."""
        if not self.snapshots:
            return {}
        epoch = self.snapshots[-1].xmax >> 32
        out: dict[int, float] = {}
        for xid32 in sorted(xids):
            xid = (epoch << 32) | xid32
            if xid > self.snapshots[-1].xmax:  # wrapped during the run
                xid -= 1 << 32
            lo, hi = 0, len(self.snapshots)  # snapshots only ever see more: bisect
            while lo < hi:
                mid = (lo + hi) // 2
                if self.snapshots[mid].sees(xid):
                    hi = mid
                else:
                    lo = mid + 1
            if lo < len(self.snapshots):
                out[xid32] = self.snapshots[lo].at
        return out


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    receive_p50_ms: float  # publish -> the bridge's paho thread (received_at)
    receive_p99_ms: float


@dataclass(frozen=True, slots=True)
class CommitSeries:
    times: list[float]  # commit time of each committed batch, ascending
    readings: list[int]  # readings in that batch
    latency: Latency | None
    unmatched: int  # rows whose transaction no snapshot saw (none expected)

    def sustained_rate(self, *, low: float = 0.1, high: float = 0.9) -> float:
        """Readings/s between the commits of the `low` and `high` fractions of all readings."""
        total = sum(self.readings)
        if total == 0 or len(self.times) < 2:
            return 0.0
        cumulative = 0
        t_low = t_high = self.times[0]
        n_low = n_high = 0
        for t, n in zip(self.times, self.readings, strict=True):
            before = cumulative
            cumulative += n
            if before < low * total <= cumulative:
                t_low, n_low = t, cumulative
            if before < high * total <= cumulative:
                t_high, n_high = t, cumulative
        if t_high <= t_low:
            return 0.0
        return (n_high - n_low) / (t_high - t_low)


async def commit_series(
    conn: asyncpg.Connection, poller: CommitPoller, *, since: float = 0.0
) -> CommitSeries:
    """Commit times of the rows whose `ts` is `since` (epoch s) or later: a run's own rows in
    a table that may hold others (loadtest.scratch.fill_readings)."""
    rows = await conn.fetch(
        "SELECT xmin::text::bigint AS xid, count(*) AS n FROM sensor_readings"
        " WHERE ts >= to_timestamp($1) GROUP BY 1",
        since,
    )
    times = poller.commit_times([r["xid"] for r in rows])
    matched = [(times[r["xid"]], int(r["n"])) for r in rows if r["xid"] in times]
    unmatched = sum(int(r["n"]) for r in rows if r["xid"] not in times)
    matched.sort()
    latency = None
    if matched:
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_commits (xid bigint, at timestamptz)"
        )
        await conn.execute("TRUNCATE bench_commits")
        await conn.copy_records_to_table(
            "bench_commits",
            records=[(x, datetime.fromtimestamp(t, UTC)) for x, t in times.items()],
        )
        row = await conn.fetchrow(
            """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY lat) AS p,
                      max(lat) AS mx,
                      percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY recv) AS rp
               FROM (SELECT extract(epoch FROM c.at - r.ts) * 1000 AS lat,
                            extract(epoch FROM r.received_at - r.ts) * 1000 AS recv
                     FROM sensor_readings r JOIN bench_commits c ON c.xid = r.xmin::text::bigint
                     WHERE r.ts >= to_timestamp($1)) l""",
            since,
        )
        assert row is not None
        p, rp = row["p"], row["rp"]
        latency = Latency(p[0], p[1], p[2], float(row["mx"]), rp[0], rp[1])
    return CommitSeries(
        times=[t for t, _ in matched],
        readings=[n for _, n in matched],
        latency=latency,
        unmatched=unmatched,
    )


async def per_second(
    conn: asyncpg.Connection, started: float, *, since: float = 0.0
) -> dict[str, list[Any]]:
    """Per second since `started` (epoch s): readings sent (by their `ts`, the send time),
    committed, and the p99 publish-to-commit lag of those committed. Call after
    `commit_series` on the same connection (it fills the commit times' table)."""
    sent = await conn.fetch(
        """SELECT floor(extract(epoch FROM ts) - $1)::int AS s, count(*) AS n
           FROM sensor_readings WHERE ts >= to_timestamp($2) GROUP BY 1 ORDER BY 1""",
        started,
        since,
    )
    done = await conn.fetch(
        """SELECT floor(extract(epoch FROM c.at) - $1)::int AS s, count(*) AS n,
                  percentile_cont(0.99) WITHIN GROUP (
                      ORDER BY extract(epoch FROM c.at - r.ts) * 1000) AS p99
           FROM sensor_readings r JOIN bench_commits c ON c.xid = r.xmin::text::bigint
           WHERE r.ts >= to_timestamp($2)
           GROUP BY 1 ORDER BY 1""",
        started,
        since,
    )
    last = max([r["s"] for r in sent] + [r["s"] for r in done] + [0])
    out: dict[str, list[Any]] = {
        "offered": [0] * (last + 1),
        "done": [0] * (last + 1),
        "lag_p99_ms": [None] * (last + 1),
    }
    for r in sent:
        out["offered"][max(r["s"], 0)] += int(r["n"])
    for r in done:
        out["done"][max(r["s"], 0)] += int(r["n"])
        out["lag_p99_ms"][max(r["s"], 0)] = float(r["p99"])
    return out
