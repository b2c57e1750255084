"""What bridges made of a benchmark's readings: every one stored exactly once, when, at what cost.

A `RunWatch` is started with the bridges, before the first publish, and read after the last:
- counts, exact: stored rows of the run, lost (published and acknowledged, not stored),
  duplicates (rows per identity can only be 1 by the primary key, so: redeliveries the bridges
  absorbed, each robot's seqs stored once, and Redis counts above the rows);
- commit times (loadtest.commits): publish-to-commit latency over every reading, the
  committed rate, and the per-second series that loadtest.sustained judges;
- CPU: the bridges' per message and the PostgreSQL cluster's per reading.
The publishers stamp each reading with its send time (loadtest.wire_publisher), so the rows
alone say what was offered when.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from harness.bridge import BridgeProcess
from harness.metrics import metric_total
from harness.procfs import cluster_cpu_seconds, cpu_seconds
from ingest.counters import Counters
from loadtest.ceilings import count_rows
from loadtest.commits import CommitPoller, commit_series, per_second


async def postgres_cpu_seconds(conn: asyncpg.Connection) -> float | None:
    """User + system CPU seconds of the whole PostgreSQL cluster so far (the server must run
    on this machine and its data directory be readable). None otherwise."""
    try:
        data_dir = await conn.fetchval("SHOW data_directory")
    except asyncpg.PostgresError:
        return None
    return cluster_cpu_seconds(Path(data_dir))


def _bridge_cpu_seconds(bridges: list[BridgeProcess]) -> float:
    total = 0.0
    for b in bridges:
        assert b.proc is not None
        total += cpu_seconds(b.proc.pid)
    return total


def _minutes(started: float, ended: float) -> list[int]:
    return list(range(int(started) // 60 * 60 - 60, int(ended) // 60 * 60 + 61, 60))


async def _redis_minus_rows(
    conn: asyncpg.Connection, counters: Counters, started: float, *, stored: int, keep_rows: bool
) -> int:
    """Readings Redis counted in the run's minutes minus the rows stored. With rows kept
    from before, Redis counts theirs too: compare with every row of the same minutes."""
    minutes = _minutes(started, time.time())
    window = await counters.window(minutes, top=0)
    redis_total = sum(m.get("*", 0) for m in window.totals)
    if not keep_rows:
        return redis_total - stored
    rows: int = await conn.fetchval(
        "SELECT count(*) FROM sensor_readings"
        " WHERE ts >= to_timestamp($1) AND ts < to_timestamp($2)",
        minutes[0],
        minutes[-1] + 60,
    )
    return redis_total - rows


@dataclass(slots=True)
class RunWatch:
    """`since`: epoch seconds before the run's first reading (rows from before are not its)."""

    dsn: str
    bridges: list[BridgeProcess]
    since: float
    _poller: CommitPoller | None = None
    _task: asyncio.Task[None] | None = None
    _cpu_at_start: float = 0.0
    _pg_cpu: list[float | None] = field(default_factory=list)
    _counted: dict[str, float] = field(default_factory=dict)

    async def start(self, conn: asyncpg.Connection) -> None:
        """Once the bridges run (their imports and connects are not the run's cost)."""
        self._cpu_at_start = _bridge_cpu_seconds(self.bridges)
        self._pg_cpu = [await postgres_cpu_seconds(conn)]
        self._poller = CommitPoller(dsn=self.dsn)
        self._task = asyncio.create_task(self._poller.run())

    async def wait_stored(self, published: int, settle_s: float) -> None:
        """Until the bridges stored everything (or, at QoS 0, stopped making progress)."""
        last, last_change = -1.0, time.monotonic()
        while True:
            inserted = sum(
                metric_total(b.metrics_port, "bridge_readings_inserted_total") for b in self.bridges
            )
            if inserted >= published:
                return
            if inserted != last:
                last, last_change = inserted, time.monotonic()
            elif time.monotonic() - last_change > settle_s:
                return
            await asyncio.sleep(0.1)

    async def stop(self, conn: asyncpg.Connection) -> None:
        """After the last reading is stored and while the bridges still run: their counters
        and CPU. Stop the bridges after this, then ask for `figures`."""
        await asyncio.sleep(0.1)  # a last poll after the last commit
        await self.close()
        bridges = self.bridges
        self._counted = {
            "duplicates_absorbed": sum(
                metric_total(b.metrics_port, "bridge_readings_duplicate_total") for b in bridges
            ),
            "rejected": sum(metric_total(b.metrics_port, "bridge_rejected_total") for b in bridges),
            "bridge_cpu_s": _bridge_cpu_seconds(bridges) - self._cpu_at_start,
        }
        self._pg_cpu.append(await postgres_cpu_seconds(conn))

    async def close(self) -> None:
        """Stops the commit poller (also on an error path)."""
        if self._poller is not None:
            self._poller.stop()
        if self._task is not None and not self._task.done():
            await self._task

    async def figures(
        self,
        conn: asyncpg.Connection,
        counters: Counters,
        *,
        published: int,
        messages: int,
        started: float,
        keep_rows: bool = False,
        seconds: bool = True,
    ) -> dict[str, Any]:
        """`started`: the first publish (epoch s); `seconds`: the per-second series too (for a
        paced run's verdict)."""
        assert self._poller is not None, "start() first"
        series = await commit_series(conn, self._poller, since=self.since)
        stored = await count_rows(conn, since=self.since)
        # Every published reading once: per robot, seqs 0..n-1 all there, none twice.
        distinct_ok = await conn.fetchval(
            "SELECT count(*) = count(DISTINCT (robot_id, seq)) FROM sensor_readings"
            " WHERE ts >= to_timestamp($1)",
            self.since,
        )
        last_commit = series.times[-1] if series.times else started
        redis_minus_rows = await _redis_minus_rows(
            conn, counters, started, stored=stored, keep_rows=keep_rows
        )
        per_s = await per_second(conn, started, since=self.since) if seconds else None
        pg_start, pg_end = self._pg_cpu[0], self._pg_cpu[-1]
        return {
            "stored": stored,
            "lost": published - stored,
            "duplicates_absorbed": int(self._counted["duplicates_absorbed"]),
            "redis_minus_rows": redis_minus_rows,
            "seq_identity_unique": bool(distinct_ok),
            "rejected": int(self._counted["rejected"]),
            # From the first publish to the last commit (and a few idle polls): bridges' CPU
            # per message, which machine load disturbs far less than their rate.
            "bridge_cpu_us_per_message": self._counted["bridge_cpu_s"] * 1e6 / max(messages, 1),
            # The whole PostgreSQL server's CPU (every process of the cluster) per stored
            # reading: exact only on a server that serves nothing else (a private cluster),
            # else an upper bound; None when the server's processes cannot be read here.
            "postgres_cpu_us_per_reading": (
                (pg_end - pg_start) * 1e6 / max(stored, 1)
                if pg_start is not None and pg_end is not None
                else None
            ),
            "sustained_readings_per_s": series.sustained_rate(),
            "overall_readings_per_s": stored / max(last_commit - started, 1e-9),
            "latency": asdict(series.latency) if series.latency else None,
            "rows_without_commit_time": series.unmatched,
            "commits": {"t": [t - started for t in series.times], "n": series.readings},
            "per_second": per_s,
        }
