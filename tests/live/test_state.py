"""FleetState: states from status and silence, summaries only when they change, gaps and
rejections since the last summary, battery updates for the registry, sites unreachable and
their backlogs draining."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from ingest.counters import SeqStats
from live.state import RATE_UNSETTLED_MS, FleetState, SiteEvent, counted_minutes, minute_of
from telemetry.live import RobotState

NOW = 1_800_000_000_000


def status(s: str, at: int) -> bytes:
    return orjson.dumps({"status": s, "at": at})


def reading(ts_iso: str, data: dict[str, object]) -> bytes:
    return orjson.dumps({"ts": ts_iso, "received_at": ts_iso, "seq": 1, "data": data})


def test_states() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["on", "stale", "off", "never", "quiet_no_status"])
    obs = fleet.observe(
        now_ms=NOW,
        statuses=[
            status("online", NOW - 60_000),
            status("online", NOW - 60_000),
            status("offline", NOW - 5_000),
            None,
            None,
        ],
        seen=[NOW - 1_000, NOW - 11_000, NOW - 6_000, None, NOW - 20_000],
        minute_counts=[],
    )
    assert [o.state for o in obs] == [
        RobotState.ONLINE,
        RobotState.STALE,
        RobotState.OFFLINE,
        RobotState.UNKNOWN,
        RobotState.UNKNOWN,
    ]
    assert obs[1].silence_s == 11.0


def test_a_robot_that_just_came_online_is_not_stale() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1"])
    [o] = fleet.observe(
        now_ms=NOW, statuses=[status("online", NOW - 2_000)], seen=[None], minute_counts=[]
    )
    assert o.state is RobotState.ONLINE and o.silence_s == 2.0


def test_summaries_are_published_when_they_change() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1", "r2"])

    def tick(now: int, seen: list[float | None]) -> list[str]:
        obs = fleet.observe(
            now_ms=now,
            statuses=[status("online", NOW - 100_000), status("offline", NOW - 100_000)],
            seen=seen,
            minute_counts=[{"r1": 600}],
        )
        changed, fleet_summary = fleet.summaries(obs, now_ms=now, active_alerts={})
        assert fleet_summary.robots == 2 and fleet_summary.at == now
        assert all(s.at == now for s in changed)
        return [s.robot_id for s in changed]

    assert tick(NOW, [NOW - 500, NOW - 500_000]) == ["r1", "r2"]
    # r2 is offline and quiet: nothing new to say. r1 sent a reading.
    detail = fleet.needs_detail([NOW + 500, NOW - 500_000])
    assert detail == ["r1"]
    fleet.take_detail(detail, [{"imu": reading("2027-01-15T08:00:00+00:00", {"x": 1})}], {}, NOW)
    assert tick(NOW + 1_000, [NOW + 500, NOW - 500_000]) == ["r1"]
    assert tick(NOW + 2_000, [NOW + 500, NOW - 500_000]) == []
    fleet.forget_published()
    assert tick(NOW + 3_000, [NOW + 500, NOW - 500_000]) == ["r1", "r2"]


def test_gaps_and_rejections_count_since_the_last_summary() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1"])
    imu = {"imu": reading("2027-01-15T08:00:00+00:00", {"x": 1})}
    # Gaps from before the service started are a baseline, not new.
    fleet.take_detail(["r1"], [imu], {("r1", "imu"): SeqStats(90, 0, 99)}, NOW)
    fleet.take_detail(["r1"], [imu], {("r1", "imu"): SeqStats(95, 0, 109)}, NOW + 1_000)
    fleet.take_rejections({"r1": 4, "unregistered": 9}, NOW + 1_000)
    [o] = fleet.observe(
        now_ms=NOW + 1_000, statuses=[status("online", NOW)], seen=[NOW], minute_counts=[]
    )
    assert o.gaps_in_window == 5 and o.rejected_in_window == 4
    [s], fleet_summary = fleet.summaries([o], now_ms=NOW + 1_000, active_alerts={})
    assert s.gaps_total == {"imu": 15} and s.gaps_new == 5 and s.rejected_new == 4
    assert s.sensors["imu"].data == {"x": 1}
    assert fleet_summary.gaps_new == 5 and fleet_summary.rejected_new == 4
    [s2], _ = fleet.summaries([o], now_ms=NOW + 2_000, active_alerts={})
    assert s2.gaps_new == 0 and s2.rejected_new == 0
    # Out of the window, the alert rules no longer see them.
    [late] = fleet.observe(
        now_ms=NOW + 62_000, statuses=[status("online", NOW)], seen=[NOW], minute_counts=[]
    )
    assert late.gaps_in_window == 0 and late.rejected_in_window == 0


def test_rate_and_baseline_from_minute_counts() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1"])
    counts = [{"r1": 60}] + [{"r1": 600}] * 5
    [o] = fleet.observe(
        now_ms=NOW, statuses=[status("online", NOW)], seen=[NOW], minute_counts=counts
    )
    assert o.rate_hz == 1.0 and o.baseline_hz == 10.0
    minutes = counted_minutes(NOW + 30_000)
    assert minutes[0] == minute_of(NOW + 30_000) - 60 and len(minutes) == 6


def test_battery_updates_once_per_reading() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1"])
    fleet.take_detail(
        ["r1"], [{"battery": reading("2027-01-15T08:00:00+00:00", {"level": 42.5})}], {}, NOW
    )
    updates = fleet.battery_updates()
    assert [(r, level) for r, level, _ in updates] == [("r1", 42.5)]
    fleet.battery_written(updates)
    assert fleet.battery_updates() == []


def test_robots_leaving_the_registry_are_reported() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["r1", "r2"])
    assert fleet.set_registry(["r2", "r3"]) == ["r1"]
    assert fleet.robot_ids == ["r2", "r3"]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_robots_of_an_unreachable_site_are_marked_whatever_they_said() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60)
    fleet.set_registry(["a1", "a2", "b1"])
    fleet.set_sites({"a1": "site-a", "a2": "site-a", "b1": "site-b"})
    # A first "1" is where a site stands (its retained status), not a return.
    fleet.take_site_events([SiteEvent("site-a", True, NOW - 9_000)])
    fleet.take_site_events([SiteEvent("site-b", True, NOW - 9_000)])
    assert fleet.sites["site-a"].back_ms is None
    fleet.take_site_events([SiteEvent("site-a", False, NOW - 5_000)])
    statuses = [status("online", NOW - 60_000), status("offline", NOW - 60_000)] * 2
    obs = fleet.observe(
        now_ms=NOW,
        statuses=statuses[:3],
        seen=[NOW - 100_000, NOW - 100_000, NOW - 100_000],
        minute_counts=[],
    )
    assert [o.state for o in obs] == [
        RobotState.SITE_UNREACHABLE,
        RobotState.SITE_UNREACHABLE,
        RobotState.STALE,
    ]
    assert [o.site for o in obs] == ["site-a", "site-a", "site-b"]
    assert obs[0].rate_unsettled and not obs[2].rate_unsettled
    _, summary = fleet.summaries(obs, now_ms=NOW, active_alerts={}, site_alerts=1)
    assert summary.sites_unreachable == ["site-a"] and summary.active_alerts == 1
    assert summary.states[RobotState.SITE_UNREACHABLE] == 2


def test_a_site_back_restarts_its_robots_silence_and_late_readings_are_draining() -> None:
    fleet = FleetState(stale_after_s=10, window_s=60, draining_after_s=5)
    fleet.set_registry(["a1", "b1"])
    fleet.set_sites({"a1": "site-a"})
    back = NOW - 2_000
    fleet.take_site_events(
        [SiteEvent("site-a", True, NOW - 600_000), SiteEvent("site-a", False, NOW - 300_000)]
    )
    fleet.take_site_events([SiteEvent("site-a", False, NOW - 200_000)])
    fleet.take_site_events([SiteEvent("site-a", True, back)])
    assert fleet.sites["site-a"].back_ms == back
    obs = fleet.observe(
        now_ms=NOW,
        statuses=[status("online", NOW - 400_000)] * 2,
        seen=[NOW - 300_000, NOW - 300_000],
        minute_counts=[],
    )
    # Heard of with its site's return: online, silent for 2 s rather than 300 s.
    assert obs[0].state is RobotState.ONLINE and obs[0].silence_s == 2.0
    assert obs[0].rate_unsettled and not obs[0].draining
    assert obs[1].state is RobotState.STALE and obs[1].silence_s == 300.0
    # The backlog drains: a reading from 250 s ago arrives now.
    old = {"battery": late_reading(ts=NOW - 250_000, received=NOW - 500, level=50)}
    fleet.take_detail(["a1"], [old], {}, NOW)
    [a1, _] = fleet.observe(
        now_ms=NOW,
        statuses=[status("online", NOW - 400_000)] * 2,
        seen=[NOW - 500, NOW - 300_000],
        minute_counts=[],
    )
    assert a1.draining and a1.delay_ms == 249_500
    changed, summary = fleet.summaries([a1, _], now_ms=NOW, active_alerts={})
    assert changed[0].delay_ms == 249_500 and changed[0].site == "site-a"
    assert summary.draining == 1 and summary.sites_unreachable == []
    # Received long ago, it is no longer draining (its delay stays in the summary).
    [a1_later, _] = fleet.observe(
        now_ms=NOW + 20_000,
        statuses=[status("online", NOW - 400_000)] * 2,
        seen=[NOW - 500, NOW - 300_000],
        minute_counts=[],
    )
    assert not a1_later.draining and a1_later.delay_ms == 249_500
    # Its counts settle once the minutes a rate drop compares are after the outage.
    [a1_settled, _] = fleet.observe(
        now_ms=back + RATE_UNSETTLED_MS,
        statuses=[status("online", NOW - 400_000)] * 2,
        seen=[back + RATE_UNSETTLED_MS, NOW],
        minute_counts=[],
    )
    assert not a1_settled.rate_unsettled


def late_reading(*, ts: int, received: int, level: float) -> bytes:
    return orjson.dumps(
        {"ts": iso(ts), "received_at": iso(received), "seq": 1, "data": {"level": level}}
    )
