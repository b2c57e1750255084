"""API CPU per request, by request shape, optionally against a previous commit in the same run:

    python -m loadtest.api_cost                              # ingest3, ingest100, mix; 1 worker
    python -m loadtest.api_cost --baseline main --rounds 3   # each shape: baseline, this tree, ...
    python -m loadtest.api_cost --workers 2 --shapes mix --profile loadtest/results/profiles

Rates are what a shared machine disturbs most; the CPU seconds the API's processes spent per
request (user + system, from /proc, over a fixed number of requests) much less. Each round sends
`--requests` requests of one shape over `--connections` keep-alive connections (the lean driver
of loadtest.rest) to a real `python -m api` on a scratch database, after a warm-up, and reads
the CPU time of every API process before and after: the figure is that difference divided by
the requests, and, with several workers, each worker's share (both should be busy).

Shapes: `ingest3`, the older clients' body (one robot, IMU + GPS + LiDAR; loadtest.rest);
`ingest100`, the contract's batch of 100 IMU readings; `mix`, loadtest.rest's REST mix.
`--profile DIR` samples each worker with py-spy (100 Hz) during the last round of each shape
and tree, and writes the collapsed stacks and a summary of the hottest functions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from harness.procfs import children
from harness.settings import BenchSettings
from loadtest import report
from loadtest.baseline import describe
from loadtest.baseline import trees as baseline_trees
from loadtest.rest import ApiProcess, HttpConnection, Request, _Clock, ingest_body, mix, register
from loadtest.scratch import scratch_counters, scratch_database

ROBOTS = [str(i) for i in range(1, 11)]
_IMU = {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0.01, "y": 0.02, "z": 0.03}}


class _Seqs:
    """Each robot's next timestamp (epoch ms, from an hour back): a batch's readings never
    repeat an earlier batch's. Overlapping batches committed concurrently deadlocked in
    PostgreSQL (each waiting for the other's uncommitted duplicates; `deadlock_timeout` 1 s,
    then a retry), which made the 100-reading figures measure deadlocks."""

    def __init__(self) -> None:
        start = int(time.time() * 1000) - 3_600_000
        self.next = dict.fromkeys(ROBOTS, start)

    def take(self, robot_id: str, n: int) -> int:
        first = self.next[robot_id]
        self.next[robot_id] = first + n
        return first


def batch_body(rng: random.Random, seqs: _Seqs, n: int = 100) -> bytes:
    robot_id = rng.choice(ROBOTS)
    first = seqs.take(robot_id, n)
    return orjson.dumps(
        {
            "robot_id": robot_id,
            "sensor_type": "imu",
            "readings": [{"ts": first + i, "seq": first + i, "data": _IMU} for i in range(n)],
        }
    )


class GranianApi(ApiProcess):
    """The same app under Granian (Rust HTTP server, its own workers), for comparison only:
    our uvicorn protocol's header limits and connection cap do not apply under it."""

    def command(self) -> list[str]:
        workers = self.env["API_WORKERS"]
        self.env["API_WORKERS"] = "1"  # Granian makes the workers; the app must not
        self.env["GRANIAN_WORKERS"] = workers
        self.env.setdefault("CURSOR_SECRET", "granian-comparison-" + self.key[-16:])
        return [
            str(Path(sys.executable).with_name("granian")),
            *("--interface", "asgi", "--loop", "uvloop", "--no-access-log"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            "loadtest.granian_app:app",
        ]


def shape_maker(shape: str) -> Callable[[random.Random], Request]:
    clock, seqs = _Clock(), _Seqs()
    if shape == "ingest3":
        return lambda rng: ("POST /api/sensors", "POST /api/sensors", ingest_body(rng, clock))
    if shape == "ingest100":
        return lambda rng: ("POST /api/sensors", "POST /api/sensors", batch_body(rng, seqs))
    if shape == "mix":
        weighted = mix()
        makers = [m for _, m in weighted]
        weights = [w for w, _ in weighted]
        return lambda rng: rng.choices(makers, weights)[0](rng, clock)
    raise ValueError(shape)


async def send(
    *, port: int, key: str, make: Callable[[random.Random], Request], requests: int, conns: int
) -> dict[str, int]:
    """`requests` requests over `conns` connections as fast as answered; statuses counted."""
    connections = [await HttpConnection.open(port, key) for _ in range(conns)]
    statuses: Counter[str] = Counter()
    left = requests

    async def worker(k: int) -> None:
        nonlocal left
        rng = random.Random(k)
        while left > 0:
            left -= 1
            label, line, body = make(rng)
            status, _ = await connections[k].request(line, body)
            statuses[f"{label.split(' ', 1)[0]} {status}"] += 1

    try:
        await asyncio.gather(*(worker(k) for k in range(conns)))
    finally:
        for c in connections:
            c.close()
    return dict(statuses)


@contextmanager
def py_spy(pids: list[int], out: Path, name: str) -> Iterator[list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}-worker{i}.txt" for i in range(len(pids))]
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                *("record", "--format", "raw", "--rate", "100", "--nonblocking"),
                *("--output", str(f), "--pid", str(pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, f in zip(pids, files, strict=True)
    ]
    time.sleep(0.5)  # py-spy attaches
    try:
        yield files
    finally:
        for s in spies:
            s.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for s in spies:
            s.wait(timeout=30)


def summarize(files: list[Path], top: int = 30) -> str:
    """Hottest functions by inclusive share of samples (a frame counted once per stack)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [_frame(fr) for fr in stack.split(";")]
            total += n
            for fr in set(frames):
                inclusive[fr] += n
            own[frames[-1]] += n
    if not total:
        return "(no samples)\n"
    lines = [f"{total} samples; inclusive % / own % / function"]
    for fr, n in inclusive.most_common(top):
        lines.append(f"{100 * n / total:5.1f} {100 * own[fr] / total:5.1f}  {fr}")
    lines.append("-- by own samples --")
    for fr, n in own.most_common(top):
        lines.append(f"{100 * inclusive[fr] / total:5.1f} {100 * n / total:5.1f}  {fr}")
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = "/".join(path.split("/")[-2:])
    return f"{name} ({path})"


async def measure(
    *,
    root: Path,
    label: str,
    shapes: list[str],
    args: argparse.Namespace,
    dsn: str,
    redis_url: str,
    prefix: str,
    profile_to: Path | None,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    server = GranianApi if args.server == "granian" else ApiProcess
    with server(
        dsn=dsn,
        redis_url=redis_url,
        redis_prefix=prefix,
        workers=args.workers,
        log_path=Path(args.workdir) / f"api-{label}.log",
        root=root,
    ) as api:
        await register(api.port, api.key)
        await asyncio.sleep(1.0)  # workers past their start-up
        for shape in shapes:
            make = shape_maker(shape)
            await send(
                port=api.port,
                key=api.key,
                make=make,
                requests=args.requests // 5,
                conns=args.connections,
            )
            before = api.cpu_by_process()
            with ExitStack() as stack:
                files = None
                if profile_to is not None:
                    workers = _workers(api, before)
                    files = stack.enter_context(py_spy(workers, profile_to, f"api-{shape}-{label}"))
                    before = api.cpu_by_process()
                t0 = time.monotonic()
                statuses = await send(
                    port=api.port,
                    key=api.key,
                    make=make,
                    requests=args.requests,
                    conns=args.connections,
                )
                seconds = time.monotonic() - t0
                after = api.cpu_by_process()
            per_worker = {
                pid: after[pid] - before.get(pid, 0.0)
                for pid in _workers(api, after)
                if pid in after
            }
            total_cpu = sum(after.values()) - sum(before.get(p, 0.0) for p in after)
            result = {
                "cpu_ms_per_request": total_cpu * 1000 / args.requests,
                "worker_cpu_s": sorted(per_worker.values(), reverse=True),
                "requests_per_s": args.requests / seconds,
                "statuses": statuses,
            }
            if files is not None:
                summary = summarize(files)
                summary_path = files[0].with_name(f"api-{shape}-{label}-summary.txt")
                summary_path.write_text(summary)
                result["profile"] = str(summary_path)
            out[shape] = result
            print(
                f"  {label:>8} {shape:>9}: {result['cpu_ms_per_request']:.3f} ms CPU/request; "
                f"workers' CPU s {[round(x, 2) for x in result['worker_cpu_s']]}; "
                f"{result['requests_per_s']:,.0f} req/s; {statuses}",
                flush=True,
            )
    return out


def _workers(api: ApiProcess, cpu: dict[int, float]) -> list[int]:
    """The processes serving requests: the children of `python -m api` with several
    workers (uvicorn's supervisor and multiprocessing's helper idle), else itself."""
    assert api.proc is not None
    if len(cpu) == 1:
        return [api.proc.pid]
    pids = children(api.proc.pid)
    cmdline = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in pids}
    return [p for p in pids if b"resource_tracker" not in cmdline[p]]


async def main_async(args: argparse.Namespace, servers: BenchSettings) -> None:
    data: dict[str, Any] = {
        **report.header("api_cost", args),
        "rounds": [],
    }
    with ExitStack() as stack:
        trees = baseline_trees(stack, args.baseline)
        data["trees"] = {label: describe(root) for label, root in trees}
        async with (
            scratch_database(servers, label="apicost") as dsn,
            scratch_counters(servers, label="apicost") as counters,
        ):
            for r in range(args.rounds):
                print(f"round {r + 1} of {args.rounds}", flush=True)
                for label, tree in trees:  # interleaved: machine load hits both alike
                    last = r == args.rounds - 1
                    data["rounds"].append(
                        {
                            "tree": label,
                            "shapes": await measure(
                                root=tree,
                                label=label,
                                shapes=args.shapes,
                                args=args,
                                dsn=dsn,
                                redis_url=servers.redis_url,
                                prefix=counters.prefix,
                                profile_to=args.profile if last else None,
                            ),
                        }
                    )
    rows = []
    for label, _ in trees:
        for shape in args.shapes:
            runs = [x["shapes"][shape] for x in data["rounds"] if x["tree"] == label]
            cpu = [x["cpu_ms_per_request"] for x in runs]
            rows.append(
                {
                    "tree": f"{label} ({data['trees'][label].split(' ')[0]})",
                    "shape": shape,
                    "CPU ms/request (median)": f"{statistics.median(cpu):.3f}",
                    "runs": ", ".join(f"{c:.3f}" for c in cpu),
                    "req/s (median)": statistics.median(x["requests_per_s"] for x in runs),
                }
            )
    markdown = (
        f"## API CPU per request, {data['started_at']} ({args.workers} worker(s), "
        f"{args.connections} connections, {args.requests} requests per round; "
        f"load average at start {data['machine']['load_average_at_start'][0]:.1f})\n\n"
        + report.markdown_table(rows, list(rows[0]))
    )
    data["summary"] = rows
    data["finished_at"] = datetime.now(UTC).isoformat()
    base = report.write(name="api-cost", data=data, markdown=markdown)
    print(markdown)
    print(f"results: {base}.json .md")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.api_cost", description=__doc__)
    p.add_argument("--shapes", nargs="+", default=["ingest3", "ingest100", "mix"])
    p.add_argument("--requests", type=int, default=3000, help="per shape and round")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="API_WORKERS")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--baseline", help="a git revision to measure beside this tree, interleaved")
    p.add_argument("--profile", type=Path, help="py-spy the workers; stacks and summaries here")
    p.add_argument("--workdir", default="/tmp", help="where the API's logs go")
    p.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="granian: the same app under Granian (a comparison; pip install granian)",
    )
    args = p.parse_args()
    uvloop.run(main_async(args, BenchSettings()))


if __name__ == "__main__":
    main()
