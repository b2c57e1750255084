"""A NATS node killed (SIGKILL) mid-stream: what robots publishing through the cluster lose,
and how long commits take to recover (`python -m loadtest.ingest --nats-kill`).

Robots are paho clients (harness.publisher.SteadyRobot: QoS 1, persistent session, failover
to the next node) spread over the 3 nodes; 2 bridges share the consumer. Three cases:
- a node robots publish to, after every stream's leader moved off it (what a robot on a dead
  machine experiences);
- the node leading NATS's `$MQTT_msgs` (the MQTT listener's PUBACK waits for its store; the
  bridges read it), ours led by another node;
- the node leading our stream ROBOSENSE (which takes the same publishes unacknowledged: the
  bridges read it until 2.15, docs/nats.md), `$MQTT_msgs` led by another node.

Figures: readings acknowledged to robots but not stored (loss), the longest pause between
commits from the kill on, and when commits resumed after it (seconds after the kill).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from harness.nats import NatsBridges, NatsCluster
from harness.publisher import SteadyRobot
from ingest.counters import Counters
from loadtest.commits import CommitPoller, commit_series
from loadtest.scratch import empty_readings, register_robots
from mqtt_auth.identities import Identity, Role
from telemetry.topics import NATS_MQTT_STREAM

STREAM = "ROBOSENSE"


async def node_kill(  # noqa: PLR0915 - one scenario, read top to bottom
    *,
    dsn: str,
    counters: Counters,
    workdir: Path,
    kill_leader: str | None,
    robots: int = 6,
    rate_per_robot: float = 200.0,
    seconds: float = 20.0,
) -> dict[str, Any]:
    ids = [f"kill-r{i}" for i in range(robots)]
    count = int(rate_per_robot * seconds)
    conn = await asyncpg.connect(dsn)
    await empty_readings(conn)
    await register_robots(conn, ids)
    await counters.clear()
    cluster = NatsCluster(workdir=Path(tempfile.mkdtemp(dir=workdir, prefix="nats-kill-")))
    for robot_id in ids:
        cluster.add_robot(robot_id)
    names = ["kill-bridge-0", "kill-bridge-1"]
    for name in names:
        cluster.add(Identity(name, Role.BRIDGE, None))
    await asyncio.to_thread(cluster.start)
    bridges = NatsBridges(cluster, dsn, counters.prefix, workdir, ack_wait_s="10")
    fleet: list[SteadyRobot] = []
    poller = CommitPoller(dsn=dsn)
    poll_task: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(bridges.setup_stream)
        for name in names:
            await asyncio.to_thread(bridges.start, name)
        ports = [n.ports.mqtt for n in cluster.nodes]
        start_ms = int(time.time() * 1000) - 60_000
        for i, robot_id in enumerate(ids):
            order = ports[i % 3 :] + ports[: i % 3]
            fleet.append(
                SteadyRobot(
                    port=order[0],
                    failover_ports=order[1:],
                    robot_id=robot_id,
                    password=cluster.passwords[robot_id],
                    start_ms=start_ms,
                    rate=rate_per_robot,
                    count=count,
                )
            )
        deadline = time.monotonic() + 60
        while not all(r.ports_used for r in fleet):
            if time.monotonic() > deadline:
                raise TimeoutError("robots not connected after 60 s")
            await asyncio.sleep(0.1)
        # Leaders move before the robots publish: a leader change loses what is published
        # meanwhile (docs/nats.md), and this case is about a node's loss alone.
        victim = cluster.nodes[0]
        if kill_leader is None:
            await cluster.move_leaders_off(victim)
        else:
            other = STREAM if kill_leader == NATS_MQTT_STREAM else NATS_MQTT_STREAM
            await cluster.lead_apart(kill_leader, other)
        poll_task = asyncio.create_task(poller.run())
        for r in fleet:
            r.start()
        began = time.time()
        await asyncio.sleep(seconds / 3)
        if kill_leader is not None:
            victim = await cluster.stream_leader_by_api(kill_leader)
        on_victim = sum(1 for r in fleet if r.ports_used[-1] == victim.ports.mqtt)
        if victim.kill() is None:
            raise RuntimeError(f"{victim.name} was not running when its kill was due")
        killed_at = time.time()
        await asyncio.gather(*(asyncio.to_thread(r.wait_all_acked, timeout=180) for r in fleet))
        acked = sum(len(r.acked_at) for r in fleet)
        # Until the rows stop changing for 10 s (redeliveries after the ack wait included).
        last, since = -1, time.monotonic()
        while time.monotonic() - since < 10:
            n = int(await conn.fetchval("SELECT count(*) FROM sensor_readings"))
            if n != last:
                last, since = n, time.monotonic()
            if n >= acked:
                break
            await asyncio.sleep(0.5)
        poller.stop()
        await poll_task
        series = await commit_series(conn, poller)
        rows = await conn.fetch(
            "SELECT robot_id, (extract(epoch FROM ts) * 1000)::bigint - $1 AS i "
            "FROM sensor_readings",
            start_ms,
        )
        stored = {(row["robot_id"], row["i"]) for row in rows}
        lost_at = [
            t - killed_at
            for robot in fleet
            for i, t in robot.acked_at.items()
            if (robot.robot_id, i) not in stored
        ]
        moved = sum(1 for r in fleet if len(r.ports_used) > 1)
    finally:
        poller.stop()
        if poll_task and not poll_task.done():
            await poll_task
        for r in fleet:
            r.close()
        bridges.stop()
        await asyncio.to_thread(cluster.stop)
        await conn.close()
    before = [t for t in series.times if began + 1 < t < killed_at]
    rate_before = sum(
        n for t, n in zip(series.times, series.readings, strict=True) if began + 1 < t < killed_at
    ) / max(killed_at - began - 1, 1e-9)
    after = [t for t in series.times if t > killed_at - 0.5]
    # The longest pause between commits from just before the kill on, and when it ended: how
    # long the cluster (election, robots moving node, redelivery) kept the bridges idle.
    pause, resumed_at = max(
        ((b - a, b) for a, b in itertools.pairwise(after)), default=(None, None)
    )
    return {
        "case": f"{kill_leader} leader killed"
        if kill_leader
        else "node killed (leaders moved off)",
        "robots": robots,
        "robots_on_killed_node": on_victim,
        "robots_moved_to_another_node": moved,
        "readings_per_s": rate_per_robot * robots,
        "acknowledged": acked,
        "lost": len(lost_at),
        "lost_acknowledged_from_s": min(lost_at) if lost_at else None,
        "lost_acknowledged_to_s": max(lost_at) if lost_at else None,
        "commit_rate_before": rate_before,
        "commits_before": len(before),
        "longest_commit_pause_s": pause,
        "commits_resumed_after_s": resumed_at - killed_at if resumed_at else None,
    }


def print_kill(r: dict[str, Any]) -> None:
    span = (
        f" (acknowledged {r['lost_acknowledged_from_s']:+.2f} s to "
        f"{r['lost_acknowledged_to_s']:+.2f} s around the kill)"
        if r["lost"]
        else ""
    )
    pause = r["longest_commit_pause_s"]
    resumed = r["commits_resumed_after_s"]
    print(
        f"  {r['case']}: {r['robots_on_killed_node']} of {r['robots']} robots on it, "
        f"{r['robots_moved_to_another_node']} moved; lost {r['lost']} of {r['acknowledged']} "
        f"acknowledged{span}; longest commit pause "
        f"{pause if pause is None else round(pause, 2)} s, commits resumed "
        f"{resumed if resumed is None else round(resumed, 2)} s after the kill "
        f"(before it: {r['commit_rate_before']:,.0f} readings/s)",
        flush=True,
    )
