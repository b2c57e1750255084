"""The machine's own ceilings, measured in the same run as the bridge and with the same shapes.

- Mosquitto: the same publishers and message shape, delivered to a subscriber that does nothing
  with them: `mosquitto_sub` (C) and a paho-mqtt subscriber (Python, set up like the bridge's).
- PostgreSQL: the same rows into the same table with the same indexes, in batches the size of
  the bridge's: plain COPY; db.readings.merge_readings (the bridge's write: COPY straight in,
  the staging merge on a conflict); and the whole write path (ingest.write.IngestWriter:
  merge, journal, Redis).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from db.connect import open_pool
from db.readings import merge_readings
from ingest.counters import Counters
from ingest.write import IngestWriter
from loadtest.scratch import empty_readings
from loadtest.wire_publisher import PublisherResult, run_publishers
from telemetry.payload import Reading

_IMU_DATA = '{"accel":{"x":0.12,"y":-0.03,"z":9.81},"gyro":{"x":0.001,"y":0.002,"z":-0.003}}'


@dataclass(frozen=True, slots=True)
class Ceiling:
    name: str
    readings: int
    received: int  # readings that arrived (QoS 0 may lose some)
    seconds: float
    publisher_readings_per_s: float | None = None

    @property
    def readings_per_s(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0


# The do-nothing subscriber reads readings like a bridge does.
CEILING_SUBSCRIBER = "bench-subscriber"


async def _mosquitto_sub(
    *, port: int, login: tuple[str, str], qos: int, messages: int, idle_s: float
) -> tuple[int, float]:
    """Runs mosquitto_sub until it printed `messages` lines or went idle: (count, end time)."""
    binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
    proc = await asyncio.create_subprocess_exec(
        binary,
        *("-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-C", str(messages)),
        *("-u", login[0], "-P", login[1]),
        *("-t", "$share/ceiling/robots/+/sensors/+", "-F", "%l"),  # one short line a message
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    count, end = 0, time.time()
    while True:
        try:
            chunk = await asyncio.wait_for(proc.stdout.read(1 << 16), idle_s)
        except TimeoutError:
            break
        if not chunk:
            break
        count += chunk.count(b"\n")
        end = time.time()
    if proc.returncode is None:
        proc.terminate()
    await proc.wait()
    return count, end


async def mosquitto_ceiling(
    *,
    port: int,
    robots: list[list[str]],
    readings: int,
    per_message: int,
    qos: int,
    subscriber: str,
    logins: list[tuple[str, str]],
    subscriber_login: tuple[str, str],
) -> Ceiling:
    """Publish flat out to a do-nothing subscriber; rate = readings it got / first send to last."""
    messages = readings // len(robots) // per_message * len(robots)
    idle_s = 3.0
    if subscriber == "c":
        sub = asyncio.create_task(
            _mosquitto_sub(
                port=port, login=subscriber_login, qos=qos, messages=messages, idle_s=idle_s
            )
        )
        await asyncio.sleep(0.5)  # mosquitto_sub has no "subscribed" signal
    else:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "loadtest.null_subscriber", f"--port={port}", f"--qos={qos}"),
            *(f"--count={messages}", f"--idle-s={idle_s}", f"--username={subscriber_login[0]}"),
            env={**os.environ, "MQTT_PASSWORD": subscriber_login[1]},
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        await proc.stdout.readline()  # "ready"
    pubs = await run_publishers(
        port=port,
        logins=logins,
        robots=robots,
        readings=readings,
        per_message=per_message,
        qos=qos,
        rate=0,
    )
    started = min(p.started_at for p in pubs)
    if subscriber == "c":
        count, end = await sub
    else:
        out, _ = await proc.communicate()
        result = orjson.loads(out.splitlines()[-1])
        count, end = result["received"], result["last_at"]
    sent = sum(p.readings for p in pubs)
    return Ceiling(
        name=f"mosquitto → {'mosquitto_sub (C)' if subscriber == 'c' else 'paho (Python)'}",
        readings=sent,
        received=count * per_message,
        seconds=end - started,
        publisher_readings_per_s=publisher_rate(pubs),
    )


def publisher_rate(pubs: list[PublisherResult]) -> float:
    """All publishers together: readings acknowledged / first send to last acknowledgement."""
    return sum(p.readings for p in pubs) / max(
        max(p.done_at for p in pubs) - min(p.started_at for p in pubs), 1e-9
    )


def bench_readings(*, robots: list[str], n: int) -> list[Reading]:
    """n IMU readings like the publishers', ts one microsecond apart per robot, ending now."""
    now = datetime.now(UTC)
    start = now - timedelta(microseconds=n)
    received = now
    return [
        Reading(
            robots[i % len(robots)],
            "imu",
            start + timedelta(microseconds=i),
            received,
            i,
            _IMU_DATA,
        )
        for i in range(n)
    ]


async def postgres_ceilings(
    *, dsn: str, robots: list[str], readings: int, batch: int, counters: Counters
) -> list[Ceiling]:
    rows = bench_readings(robots=robots, n=readings)
    batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    out = []
    async with open_pool(dsn=dsn, max_size=1) as pool:
        async with pool.acquire() as conn:
            await empty_readings(conn)
            t0 = time.perf_counter()
            for b in batches:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "sensor_readings",
                        records=b,
                        columns=("robot_id", "sensor_type", "ts", "received_at", "seq", "data"),
                    )
            out.append(
                Ceiling("PostgreSQL plain COPY", readings, readings, time.perf_counter() - t0)
            )
            await empty_readings(conn)
            t0 = time.perf_counter()
            for b in batches:
                async with conn.transaction():
                    await merge_readings(conn, b, register_unknown=False)
            out.append(
                Ceiling(
                    "PostgreSQL merge_readings (COPY; merge on a conflict)",
                    readings,
                    readings,
                    time.perf_counter() - t0,
                )
            )
            await empty_readings(conn)
        await counters.clear()
        writer = IngestWriter(pool=pool, counters=counters)
        t0 = time.perf_counter()
        for b in batches:
            await writer.write(b)
        out.append(
            Ceiling(
                "write path (merge + journal + Redis)", readings, readings, time.perf_counter() - t0
            )
        )
        async with pool.acquire() as conn:
            await empty_readings(conn)
        await counters.clear()
    return out


async def count_rows(conn: asyncpg.Connection, *, since: float = 0.0) -> int:
    """Rows whose `ts` is `since` (epoch s) or later."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM sensor_readings WHERE ts >= to_timestamp($1)", since
    )
    return n
