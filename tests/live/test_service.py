"""`python -m live` against a real broker, bridge, Redis and PostgreSQL: summaries at the
configured rate, robot states, alerts raised, stored, published and cleared, open alerts kept
across a restart, the registry's battery following telemetry, and what an operator who was
away gets when it comes back."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.publisher import Publisher, SteadyRobot
from harness.services import TEST_OPERATOR, Mosquitto
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from telemetry.live import RobotState, decode_fleet_summary, decode_robot_summary
from telemetry.topics import sensor_topic, status_topic
from tests.live.conftest import StartLive, alerts, summaries
from tests.mqtt_auth.conftest import Client


def robot(mosquitto: Mosquitto, robot_id: str) -> Publisher:
    return Publisher(port=mosquitto.port, username=robot_id, password=mosquitto.passwords[robot_id])


def battery(level: float, ts: int | None = None, seq: int | None = None) -> bytes:
    doc: dict[str, Any] = {"ts": ts or int(time.time() * 1000), "data": {"level": level}}
    if seq is not None:
        doc["seq"] = seq
    return orjson.dumps(doc)


async def latest_state(operator: Client, robot_id: str) -> RobotState | None:
    found = summaries(operator, robot_id)
    return found[-1].state if found else None


def threads_niceness(pid: int) -> set[int]:
    """The niceness of each of a process's threads (Linux keeps one per thread)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}


async def test_summaries_follow_the_configured_rate_not_the_raw_rate(
    start_live: StartLive, operator: Client, mosquitto: Mosquitto, fleet: asyncpg.Pool[Any]
) -> None:
    live = start_live(live_summary_hz="2")
    # LIVE_NICE (10 by default) over this test process's own niceness, every thread included.
    assert live.proc is not None
    nice = threads_niceness(live.proc.pid)
    assert nice == {min(19, os.nice(0) + 10)}, nice
    start_ms = int(time.time() * 1000)
    sender = SteadyRobot(
        port=mosquitto.port,
        robot_id="r1",
        password=mosquitto.passwords["r1"],
        start_ms=start_ms,
        rate=250,
        count=2_000,
    )
    sender.start()
    try:
        sender.wait_all_acked(timeout=60)
    finally:
        sender.close()
    stored = await eventually(
        lambda: fleet.fetchval("SELECT count(*) FROM sensor_readings WHERE robot_id = 'r1'"),
        2_000,
    )
    # Summaries that carried these readings (their battery reading is one of them).
    got = [
        s
        for s in summaries(operator, "r1")
        if "battery" in s.sensors and s.sensors["battery"].ts >= start_ms
    ]
    assert len(got) >= 3, f"{len(got)} summaries while 2,000 readings arrived"
    span_s = (got[-1].at - got[0].at) / 1000
    # At most 2 a second (one more for the ends of the span), far below the raw rate.
    assert len(got) - 1 <= 2 * span_s + 1, (len(got), span_s)
    assert len(got) * 20 < stored
    fleet_summaries = [
        decode_fleet_summary(bytes(m.payload))
        for m in list(operator.messages)
        if m.topic == "fleet/summary"
    ]
    assert fleet_summaries and fleet_summaries[-1].robots == 2


async def test_online_stale_offline(
    start_live: StartLive, operator: Client, mosquitto: Mosquitto
) -> None:
    start_live(live_stale_after_s="2")
    r1 = robot(mosquitto, "r1")
    try:
        r1.publish_all(
            [(status_topic("r1"), b"online"), (sensor_topic("r1", "battery"), battery(80))]
        )
        await eventually(lambda: latest_state(operator, "r1"), RobotState.ONLINE, timeout=30)
        # No reading for longer than LIVE_STALE_AFTER_S while it says it is online.
        await eventually(lambda: latest_state(operator, "r1"), RobotState.STALE, timeout=30)
        r1.publish_all([(status_topic("r1"), b"offline")])
        await eventually(lambda: latest_state(operator, "r1"), RobotState.OFFLINE, timeout=30)
    finally:
        r1.close()
    # r2 never said anything.
    assert await latest_state(operator, "r2") == RobotState.UNKNOWN
    last = summaries(operator, "r1")[-1]
    assert last.battery_percent == 80 and last.last_seen is not None


async def open_battery_alerts(pool: asyncpg.Pool[Any]) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, cleared_at FROM alerts WHERE robot_id = 'r1' AND kind = 'battery_low'"
    )


async def test_an_alert_is_raised_stored_published_and_cleared(
    start_live: StartLive, operator: Client, mosquitto: Mosquitto, fleet: asyncpg.Pool[Any]
) -> None:
    start_live()
    r1 = robot(mosquitto, "r1")
    try:
        r1.publish_all(
            [(status_topic("r1"), b"online"), (sensor_topic("r1", "battery"), battery(12))]
        )

        async def raised() -> list[str]:
            return [a["kind"] for a in alerts(operator) if a["cleared_at"] is None]

        await eventually(raised, ["battery_low"], timeout=30)
        [published] = alerts(operator)
        [row] = await open_battery_alerts(fleet)
        assert row["id"] == published["id"] and row["cleared_at"] is None
        assert published["robot_id"] == "r1" and published["severity"] == "warning"
        # The robot's summary lists it.
        await eventually(
            lambda: asyncio.sleep(
                0, [k for s in summaries(operator, "r1")[-1:] for k in s.active_alerts]
            ),
            ["battery_low"],
            timeout=30,
        )
        # The registry follows the battery reading.
        await eventually(
            lambda: fleet.fetchval("SELECT battery_level FROM robots WHERE id = 'r1'"),
            12,
            timeout=30,
        )
        r1.publish_all([(sensor_topic("r1", "battery"), battery(60))])

        async def cleared() -> list[int]:
            return [a["id"] for a in alerts(operator) if a["cleared_at"] is not None]

        await eventually(cleared, [published["id"]], timeout=30)
        [row] = await open_battery_alerts(fleet)
        assert row["cleared_at"] is not None
        await eventually(
            lambda: fleet.fetchval("SELECT battery_level FROM robots WHERE id = 'r1'"),
            60,
            timeout=30,
        )
    finally:
        r1.close()


async def test_sequence_gaps_and_refusals_are_summarized_and_alerted(
    start_live: StartLive, operator: Client, mosquitto: Mosquitto
) -> None:
    start_live()
    r1 = robot(mosquitto, "r1")
    try:
        now = int(time.time() * 1000)
        r1.publish_all([(status_topic("r1"), b"online")])
        # seq 0-9, then 30-39: 20 readings missing.
        r1.publish_all(
            [(sensor_topic("r1", "battery"), battery(80, now + i, i)) for i in range(10)]
        )

        async def gaps_total() -> dict[str, int] | None:
            got = summaries(operator, "r1")
            return got[-1].gaps_total if got else None

        # Seen without gaps first (the first look at a robot is its baseline).
        await eventually(gaps_total, {"battery": 0}, timeout=30)
        r1.publish_all(
            [(sensor_topic("r1", "battery"), battery(80, now + i, i)) for i in range(30, 40)]
            # Refused: not JSON.
            + [(sensor_topic("r1", "gps"), b"{not json") for _ in range(25)]
        )

        async def raised() -> set[str]:
            return {a["kind"] for a in alerts(operator) if a["cleared_at"] is None}

        await eventually(raised, {"sequence_gaps", "dead_letter_spike"}, timeout=30)
        await eventually(gaps_total, {"battery": 20}, timeout=30)
        got = summaries(operator, "r1")
        assert sum(s.gaps_new for s in got) == 20
        assert sum(s.rejected_new for s in got) == 25
    finally:
        r1.close()


async def test_a_restarted_service_keeps_its_open_alerts(
    start_live: StartLive, operator: Client, mosquitto: Mosquitto, fleet: asyncpg.Pool[Any]
) -> None:
    live = start_live()
    r1 = robot(mosquitto, "r1")

    async def offline_alerts() -> list[bool]:
        rows = await fleet.fetch(
            "SELECT cleared_at IS NULL AS open FROM alerts "
            "WHERE robot_id = 'r1' AND kind = 'offline' ORDER BY id"
        )
        return [r["open"] for r in rows]

    async def announced() -> int:
        return sum(1 for a in alerts(operator) if a["kind"] == "offline")

    try:
        r1.publish_all([(status_topic("r1"), b"offline")])
        await eventually(offline_alerts, [True], timeout=30)
        await eventually(announced, 1, timeout=30)
        [raised] = [a for a in alerts(operator) if a["kind"] == "offline"]
        assert live.terminate() == 0
        restarted = start_live()
        # Ticks after the restart: summaries published after it started again.
        since = int(time.time() * 1000)

        async def ticked_since() -> bool:
            return any(
                decode_fleet_summary(bytes(m.payload)).at > since
                for m in list(operator.messages)
                if m.topic == "fleet/summary"
            )

        await eventually(ticked_since, True, timeout=30)
        await eventually(ticked_since, True, timeout=30)
        assert "open alerts loaded" in restarted.log_path.read_text()
        # Still one alert, still open, not announced again.
        assert await offline_alerts() == [True]
        assert await announced() == 1
        # Cleared under the same id once the robot is back.
        r1.publish_all([(status_topic("r1"), b"online")])
        await eventually(offline_alerts, [False], timeout=30)
        await eventually(announced, 2, timeout=30)
        cleared = [a for a in alerts(operator) if a["kind"] == "offline"][-1]
        assert cleared["id"] == raised["id"] and cleared["cleared_at"] is not None
    finally:
        r1.close()


async def test_an_operator_back_from_away_gets_the_current_state_not_a_replay(
    start_live: StartLive, mosquitto: Mosquitto
) -> None:
    """Operators connect with a clean session at QoS 0 (docs/live.md): the broker keeps
    nothing for them while they are away, and the retained summaries give the state at
    reconnect."""
    start_live()
    first = Client(mosquitto, TEST_OPERATOR)
    first.subscribe("fleet/#")
    # The contrast: what the documented settings avoid (a persistent session at QoS 1).
    # The broker makes the username the client id: each session needs its own identity.
    for name in ("ops-persistent", "ops-probe"):
        mosquitto.add(Identity(name, Role.OPERATOR, None))
    persistent = PersistentClient(mosquitto, "ops-persistent")
    persistent.close()
    r1 = robot(mosquitto, "r1")
    try:
        r1.publish_all(
            [(status_topic("r1"), b"online"), (sensor_topic("r1", "battery"), battery(90))]
        )
        await eventually(lambda: latest_state(first, "r1"), RobotState.ONLINE, timeout=30)
        first.close()
        # While the operator is away: many summaries (the battery changes at every tick).
        away_from = int(time.time() * 1000)
        for i in range(30):
            r1.publish_all([(sensor_topic("r1", "battery"), battery(80 - i))])
            await asyncio.sleep(0.1)
        last_level = 51.0

        async def newest_retained_level() -> float | None:
            probe = Client(mosquitto, "ops-probe")
            try:
                probe.subscribe("fleet/r1/summary")
                await eventually(
                    lambda: asyncio.sleep(0, len(probe.messages) > 0), True, timeout=10
                )
                return decode_robot_summary(bytes(probe.messages[0].payload)).battery_percent
            finally:
                probe.close()

        # The live service has published the last reading (so a replay would have something
        # stale to replay).
        await eventually(newest_retained_level, last_level, timeout=30)
        back = Client(mosquitto, TEST_OPERATOR)
        try:
            back.subscribe("fleet/#")
            await eventually(
                lambda: asyncio.sleep(0, len(summaries(back, "r1")) >= 1), True, timeout=10
            )
            on_r1 = [m for m in list(back.messages) if m.topic == "fleet/r1/summary"]
            # The first is the retained current state; nothing from while it was away follows.
            assert on_r1[0].retain
            assert decode_robot_summary(bytes(on_r1[0].payload)).battery_percent == last_level
            assert all(
                decode_robot_summary(bytes(m.payload)).at > away_from
                and decode_robot_summary(bytes(m.payload)).battery_percent == last_level
                for m in on_r1
            )
            retained = [m.topic for m in list(back.messages) if m.retain]
            assert len(retained) == len(set(retained)), "one retained message per topic"
        finally:
            back.close()
        # The contrast, a persistent session at QoS 1: the raw readings of while it was away
        # (QoS 1) are replayed to it, every one of them. Summaries (QoS 0) are not queued.
        replayed = PersistentClient(mosquitto, "ops-persistent")
        try:

            async def replayed_readings() -> int:
                return sum(1 for m in list(replayed.messages) if m.topic.startswith("robots/"))

            # The first reading and the 30 sent while the operator was away.
            await eventually(replayed_readings, 31, timeout=10)
            assert not [
                m for m in list(replayed.messages) if m.topic.startswith("fleet/") and not m.retain
            ]
        finally:
            replayed.close()
    finally:
        r1.close()


class PersistentClient:
    """An operator with a persistent session and QoS 1 subscriptions (readings and fleet/#)."""

    def __init__(self, broker: Mosquitto, username: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=username,
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self.client.username_pw_set(username, broker.passwords[username])
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe([("fleet/#", 1), ("robots/+/sensors/+", 1)])
        if not subscribed.wait(10):
            raise TimeoutError("no SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
