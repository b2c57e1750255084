"""Live-stream clients for the benchmarks, run in processes of their own.

One process that publishes, measures and parses 200 streams falls behind its own schedule and
becomes what a benchmark measures (BENCHMARKS.md, "Live view", the earlier runs). So the
clients run in `processes` separate processes (multiprocessing, spawn), each an event loop of
raw HTTP/1.1 readers; the parent tells them when the measuring window opens and closes and
gets their counts back.

Each client counts, from the start (for the accounting: every summary published for the
robots it watches is either delivered or told as missed) and within the window (for rates and
latency):
- `summary` events, and latency: now minus the publish time the benchmark put in the summary
  (`"t_pub":`, loadtest.live_stream), or minus the newest reading's `ts` in it (`ts` mode:
  the reading's publish time, loadtest.live);
- the `missed` of its `dropped` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvloop

_MARK = b'"t_pub":'


@dataclass
class ClientStats:
    summaries: int = 0
    missed: int = 0
    window_summaries: int = 0
    window_missed: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Reader:
    """One client on a raw HTTP/1.1 connection (httpx's per-chunk cost, times 200 clients,
    made the measuring process the bottleneck); events are counted from the raw bytes."""

    port: int
    query: str
    latency: str  # "t_pub" or "ts"
    stats: ClientStats = field(default_factory=ClientStats)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, measuring: multiprocessing.synchronize.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET /api/live?{self.query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"stream refused: {head[:200]!r}")
            self.opened.set()
            buffer = b""
            while chunk := await reader.read(262144):
                now = time.time()
                buffer += chunk
                # Chunked framing puts each event's size line before it: `in`, not startswith.
                *events, buffer = buffer.split(b"\r\n\r\n")
                self._count(events, now, measuring.is_set())
        finally:
            writer.close()

    def _count(self, events: list[bytes], now: float, in_window: bool) -> None:
        stats = self.stats
        for event in events:
            if b"event: summary" in event:
                stats.summaries += 1
                if not in_window:
                    continue
                stats.window_summaries += 1
                sent = self._sent_at(event)
                if sent is not None:
                    stats.latencies.append(now - sent)
            elif b"event: dropped" in event:
                missed = orjson.loads(event.split(b"data: ", 1)[1])["missed"]
                stats.missed += missed
                if in_window:
                    stats.window_missed += missed

    def _sent_at(self, event: bytes) -> float | None:
        if self.latency == "t_pub":
            start = event.find(_MARK)
            if start < 0:
                return None
            start += len(_MARK)
            return float(event[start : event.find(b"}", start)])
        doc = orjson.loads(event.split(b"data: ", 1)[1].split(b"\r\n", 1)[0])
        stamps = [s["ts"] for s in doc["sensors"].values()]
        return max(stamps) / 1000 if stamps else None


def _process_main(  # noqa: PLR0917 (multiprocessing passes arguments by position)
    port: int,
    queries: list[str],
    latency: str,
    opened: Any,
    measuring: multiprocessing.synchronize.Event,
    stopping: multiprocessing.synchronize.Event,
    results: Any,
) -> None:
    async def main() -> None:
        readers = [Reader(port, q, latency) for q in queries]
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(r.run(measuring)) for r in readers]
            await asyncio.wait_for(asyncio.gather(*(r.opened.wait() for r in readers)), 120)
            opened.put(len(readers))
            # A multiprocessing event, waited for in a thread: the loop keeps reading.
            await asyncio.to_thread(stopping.wait)
            for task in running:
                task.cancel()
        results.put([r.stats.__dict__ for r in readers])

    with contextlib.suppress(asyncio.CancelledError):
        uvloop.run(main())


class ClientProcesses:
    """`queries` (one per client) spread over `processes` processes; a context manager."""

    def __init__(self, *, port: int, queries: list[str], processes: int, latency: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.measuring = ctx.Event()
        self._stopping = ctx.Event()
        self._opened = ctx.Queue()
        self._results = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=_process_main,
                args=(
                    port,
                    queries[i::processes],
                    latency,
                    self._opened,
                    self.measuring,
                    self._stopping,
                    self._results,
                ),
                daemon=True,
            )
            for i in range(processes)
        ]

    def __enter__(self) -> ClientProcesses:
        for p in self._procs:
            p.start()
        for _ in self._procs:
            self._opened.get(timeout=180)
        return self

    def stop(self) -> list[ClientStats]:
        """Ends every client; their counts."""
        self._stopping.set()
        stats = []
        for _ in self._procs:
            stats += [ClientStats(**s) for s in self._results.get(timeout=120)]
        return stats

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
