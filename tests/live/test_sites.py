"""A site whose broker cannot reach the cloud (docs/live.md, "Sites"): `python -m live` on a
real broker, bridge, Redis and PostgreSQL raises one `site_unreachable` alert for it, marks its
robots `site_unreachable` instead of letting them go offline or silent, clears the alert when
the site is back and shows how late its backlog arrives; a robot of no site still goes offline
as before. The last test cuts a real site broker's uplink (socat) so that the cloud broker's
Last Will says the site is unreachable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.edge import SiteMosquitto, TcpProxy
from harness.publisher import Publisher
from harness.services import Mosquitto
from harness.waiting import eventually
from mqtt_auth.identities import Identity
from telemetry.live import FleetSummary, RobotState, decode_fleet_summary
from telemetry.topics import (
    SITE_REACHABLE,
    SITE_UNREACHABLE,
    sensor_topic,
    site_status_topic,
    status_topic,
)
from tests.live.conftest import StartLive, alerts, summaries
from tests.live.test_service import battery, robot
from tests.mqtt_auth.conftest import Client

SITE = "site-a"
# LIVE_SILENT_AFTER_S: short, but longer than a busy machine takes to pass a status along.
SILENT_S = 5


def fleet_summaries(operator: Client) -> list[FleetSummary]:
    return [
        decode_fleet_summary(bytes(m.payload))
        for m in list(operator.messages)
        if m.topic == "fleet/summary"
    ]


async def state_of(operator: Client, robot_id: str) -> RobotState | None:
    found = summaries(operator, robot_id)
    return found[-1].state if found else None


async def site_of(operator: Client, robot_id: str) -> str | None:
    found = summaries(operator, robot_id)
    return found[-1].site if found else None


async def open_alerts(pool: asyncpg.Pool[Any]) -> set[tuple[str, str | None, str | None]]:
    rows = await pool.fetch("SELECT kind, robot_id, site_id FROM alerts WHERE cleared_at IS NULL")
    return {(r["kind"], r["robot_id"], r["site_id"]) for r in rows}


async def ticked_past(operator: Client, at_ms: int) -> bool:
    """Whether the service published a fleet summary at or after `at_ms`."""
    return any(s.at >= at_ms for s in fleet_summaries(operator))


@pytest.fixture
def site_a(mosquitto: Mosquitto, fleet: asyncpg.Pool[Any]) -> Iterator[Client]:
    """Site `site-a` at the cloud broker with r1 and r3 (r3 registered too); r2 is of no site.
    The client publishes the site's status as its bridge's notifications do (retained)."""
    mosquitto.add(Identity.site(SITE, None, ["r1", "r3"]))
    mosquitto.add_robot("r3")
    client = Client(mosquitto, SITE)
    yield client
    client.close()


async def test_an_unreachable_site_is_one_alert_not_its_robots_offline(
    start_live: StartLive,
    operator: Client,
    mosquitto: Mosquitto,
    fleet: asyncpg.Pool[Any],
    site_a: Client,
) -> None:
    await fleet.execute("INSERT INTO robots (id) VALUES ('r3')")
    site_a.publish(site_status_topic(SITE), SITE_REACHABLE, retain=True)
    start_live(mqtt_auth_dir=str(mosquitto.auth.directory), live_silent_after_s=str(SILENT_S))
    r1, r2, r3 = (robot(mosquitto, r) for r in ("r1", "r2", "r3"))
    try:
        for r, publisher in (("r1", r1), ("r2", r2), ("r3", r3)):
            publisher.publish_all([(status_topic(r), b"online")])
        for r in ("r1", "r2", "r3"):
            await eventually(lambda r=r: state_of(operator, r), RobotState.ONLINE, timeout=30)  # type: ignore[misc]
        await eventually(lambda: site_of(operator, "r1"), SITE, timeout=30)
        assert await site_of(operator, "r2") is None
        # Each heard of just before the cut: none is silent yet when it comes.
        for r, publisher in (("r1", r1), ("r2", r2), ("r3", r3)):
            publisher.publish_all([(sensor_topic(r, "battery"), battery(80))])
        assert await open_alerts(fleet) == set()

        # The site's bridge connection drops: its Last Will says "0". r2 (of no site) stops.
        cut_ms = int(time.time() * 1000)
        site_a.publish(site_status_topic(SITE), SITE_UNREACHABLE, retain=True)
        r2.publish_all([(status_topic("r2"), b"offline")])
        for r in ("r1", "r3"):
            await eventually(
                lambda r=r: state_of(operator, r),  # type: ignore[misc]
                RobotState.SITE_UNREACHABLE,
                timeout=30,
            )
        await eventually(
            lambda: open_alerts(fleet),
            {("site_unreachable", None, SITE), ("offline", "r2", None)},
            timeout=30,
        )
        [raised] = [a for a in alerts(operator) if a["kind"] == "site_unreachable"]
        assert raised["site_id"] == SITE and raised["robot_id"] is None
        assert raised["cleared_at"] is None and raised["severity"] == "critical"
        # r1's status says offline (out of date: its site is cut off); r3 stays silent past
        # LIVE_SILENT_AFTER_S.
        r1.publish_all([(status_topic("r1"), b"offline")])
        await eventually(
            lambda: ticked_past(operator, cut_ms + (SILENT_S + 2) * 1000), True, timeout=30
        )
        # Still only the site's alert and r2's: no offline for r1, no silent for r3.
        assert await open_alerts(fleet) == {
            ("site_unreachable", None, SITE),
            ("offline", "r2", None),
        }
        assert await state_of(operator, "r1") is RobotState.SITE_UNREACHABLE
        # Every fleet summary since the robots' summaries said so (the fleet's comes last in
        # a tick).
        fleet_now = fleet_summaries(operator)[-1]
        assert fleet_now.sites_unreachable == [SITE]
        assert fleet_now.states[RobotState.SITE_UNREACHABLE] == 2

        # Back: the alert is cleared (same id), and r1 is judged on what it said.
        back_ms = int(time.time() * 1000)
        site_a.publish(site_status_topic(SITE), SITE_REACHABLE, retain=True)

        async def site_alert_cleared() -> bool:
            return any(
                a["kind"] == "site_unreachable" and a["cleared_at"] is not None
                for a in alerts(operator)
            )

        await eventually(site_alert_cleared, True, timeout=30)
        cleared = [a for a in alerts(operator) if a["kind"] == "site_unreachable"][-1]
        assert cleared["id"] == raised["id"]
        await eventually(lambda: state_of(operator, "r1"), RobotState.OFFLINE, timeout=30)
        assert ("site_unreachable", None, SITE) not in await open_alerts(fleet)

        async def unreachable_now() -> list[str]:
            return fleet_summaries(operator)[-1].sites_unreachable

        await eventually(unreachable_now, [], timeout=30)
        # r3 stays quiet: silent, counted from its site's return, not from before the cut.

        async def r3_silent() -> list[int]:
            return [
                a["raised_at"]
                for a in alerts(operator)
                if a["kind"] == "silent" and a["robot_id"] == "r3"
            ]

        async def r3_silent_alerts() -> int:
            return len(await r3_silent())

        await eventually(r3_silent_alerts, 1, timeout=30)
        [silent_at] = await r3_silent()
        assert silent_at >= back_ms + SILENT_S * 1000, silent_at - back_ms
    finally:
        for publisher in (r1, r2, r3):
            publisher.close()


async def test_a_cut_uplink_shows_as_the_site_unreachable_and_its_backlog_as_delay(
    start_live: StartLive,
    operator: Client,
    mosquitto: Mosquitto,
    fleet: asyncpg.Pool[Any],
    wan: TcpProxy,
    tmp_path: Path,
) -> None:
    site = SiteMosquitto(
        workdir=tmp_path / "site",
        cloud=mosquitto,
        site_id=SITE,
        robots=["r1"],
        via_port=wan.port,
    )
    r1_password = site.add_robot("r1")
    site.start()
    live = start_live(
        mqtt_auth_dir=str(mosquitto.auth.directory),
        live_silent_after_s=str(SILENT_S),
        live_draining_after_s="1",
    )
    r1 = Publisher(port=site.port, username="r1", password=r1_password)
    r2 = robot(mosquitto, "r2")
    try:
        r1.publish_all([(status_topic("r1"), b"online")])
        r2.publish_all([(status_topic("r2"), b"online")])
        for r in ("r1", "r2"):
            await eventually(lambda r=r: state_of(operator, r), RobotState.ONLINE, timeout=30)  # type: ignore[misc]
        await eventually(lambda: site_of(operator, "r1"), SITE, timeout=30)
        r1.publish_all([(sensor_topic("r1", "battery"), battery(80))])

        wan.cut()
        # r2, at the cloud, stops.
        r2.publish_all([(status_topic("r2"), b"offline")])
        await eventually(
            lambda: open_alerts(fleet),
            {("site_unreachable", None, SITE), ("offline", "r2", None)},
            timeout=60,
        )
        await eventually(lambda: state_of(operator, "r1"), RobotState.SITE_UNREACHABLE, timeout=30)
        # r1 keeps publishing at its site (queued there).
        queued_at = int(time.time() * 1000)
        r1.publish_all(
            [(sensor_topic("r1", "battery"), battery(70, queued_at + i)) for i in (0, 1)]
        )
        # Longer than LIVE_SILENT_AFTER_S for r1 (last heard of before the cut).
        await eventually(
            lambda: ticked_past(operator, queued_at + (SILENT_S + 1) * 1000), True, timeout=30
        )
        assert await open_alerts(fleet) == {
            ("site_unreachable", None, SITE),
            ("offline", "r2", None),
        }

        wan.start()
        await eventually(lambda: open_alerts(fleet), {("offline", "r2", None)}, timeout=60)
        # The queued readings arrive late, and the summary says how late.
        stored = await eventually(
            lambda: fleet.fetchval(
                "SELECT count(*) FROM sensor_readings WHERE robot_id = 'r1' AND ts >= $1",
                datetime.fromtimestamp(queued_at / 1000, UTC),
            ),
            2,
            timeout=60,
        )
        assert stored == 2

        async def shown_late() -> bool:
            # A summary of r1 that carries a queued reading says how long it waited.
            return any(
                s.delay_ms is not None and s.delay_ms >= (SILENT_S + 1) * 1000
                for s in summaries(operator, "r1")
                if "battery" in s.sensors and s.sensors["battery"].ts >= queued_at
            )

        await eventually(shown_late, True, timeout=30)
        assert await state_of(operator, "r1") in (RobotState.ONLINE, RobotState.STALE)
        # Never silent, never offline: r1 was cut off, not quiet.
        kinds = {(a["kind"], a["robot_id"]) for a in alerts(operator)}
        assert ("silent", "r1") not in kinds and ("offline", "r1") not in kinds
        assert ("offline", "r2") in kinds
        assert site.proc is not None and site.proc.poll() is None
        assert wan.cuts == 1 and live.running
    finally:
        r1.close()
        r2.close()
        site.stop()
