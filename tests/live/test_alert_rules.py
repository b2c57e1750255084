"""AlertBook: each rule's condition, hold times and hysteresis (no flapping), open alerts
loaded from an earlier run, a site's `site_unreachable` and what it suppresses."""

from __future__ import annotations

import dataclasses

from db.alerts import AlertRow
from live.alerts import AlertBook, Thresholds, alert_of
from live.state import Observation, SiteView
from telemetry.live import Alert, AlertKind, RobotState

T = Thresholds(raise_after_s=5, clear_after_s=10)
NOW = 1_800_000_000_000


def obs(**changes: object) -> Observation:
    base = Observation(
        robot_id="r1",
        state=RobotState.ONLINE,
        silence_s=1.0,
        battery_percent=80.0,
        rate_hz=10.0,
        baseline_hz=10.0,
        gaps_in_window=0,
        rejected_in_window=0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def kinds(book: AlertBook, o: Observation, at: int) -> tuple[list[AlertKind], list[AlertKind]]:
    """Evaluates, and takes every decision as stored (ids from the clock)."""
    to_raise, to_clear = book.evaluate([o], now_ms=at, registered={"r1"})
    for c in to_raise:
        book.raised(
            Alert(
                id=at,
                kind=c.kind,
                severity=c.severity,
                robot_id=c.robot_id,
                raised_at=at,
                cleared_at=None,
                message=c.message,
                detail=c.detail,
            )
        )
    for a in to_clear:
        book.cleared(a)
    return [c.kind for c in to_raise], [a.kind for a in to_clear]


def test_each_rule_raises_after_its_hold_time() -> None:
    cases = {
        AlertKind.OFFLINE: obs(state=RobotState.OFFLINE),
        AlertKind.SILENT: obs(state=RobotState.STALE, silence_s=31.0),
        AlertKind.BATTERY_LOW: obs(battery_percent=19.0),
        AlertKind.SEQUENCE_GAPS: obs(gaps_in_window=10),
        AlertKind.DEAD_LETTER_SPIKE: obs(rejected_in_window=20),
        AlertKind.RATE_DROP: obs(rate_hz=4.0),
    }
    for kind, o in cases.items():
        book = AlertBook(T)
        assert kinds(book, o, NOW) == ([], []), kind
        assert kinds(book, o, NOW + 4_000) == ([], []), kind
        assert kinds(book, o, NOW + 5_000) == ([kind], []), kind
        assert kinds(book, o, NOW + 6_000) == ([], []), kind
        assert book.active_by_robot() == {"r1": [kind]}
        # Healthy again: cleared only after the clear hold.
        assert kinds(book, obs(), NOW + 7_000) == ([], []), kind
        assert kinds(book, obs(), NOW + 17_000) == ([], [kind]), kind
        assert book.active_by_robot() == {}


def test_healthy_robot_raises_nothing() -> None:
    book = AlertBook(T)
    for i in range(20):
        assert kinds(book, obs(), NOW + i * 1_000) == ([], [])


def test_a_condition_that_flickers_never_raises() -> None:
    book = AlertBook(T)
    for i in range(30):
        o = obs(state=RobotState.OFFLINE) if i % 2 else obs()
        assert kinds(book, o, NOW + i * 1_000) == ([], [])


def test_an_open_alert_survives_a_short_recovery() -> None:
    book = AlertBook(T)
    kinds(book, obs(state=RobotState.OFFLINE), NOW)
    assert kinds(book, obs(state=RobotState.OFFLINE), NOW + 5_000)[0] == [AlertKind.OFFLINE]
    for i in range(6, 40):
        # Online for 5 s, offline for 1 s, over and over: stays open, never re-raised.
        o = obs(state=RobotState.OFFLINE) if i % 6 == 0 else obs()
        assert kinds(book, o, NOW + i * 1_000) == ([], [])


def test_battery_hysteresis() -> None:
    book = AlertBook(Thresholds(raise_after_s=0, clear_after_s=0))
    assert kinds(book, obs(battery_percent=19.9), NOW)[0] == [AlertKind.BATTERY_LOW]
    # Between the two thresholds: still low.
    assert kinds(book, obs(battery_percent=22.0), NOW + 1_000) == ([], [])
    assert kinds(book, obs(battery_percent=25.0), NOW + 2_000) == ([], [AlertKind.BATTERY_LOW])
    # And not raised again between them.
    assert kinds(book, obs(battery_percent=22.0), NOW + 3_000) == ([], [])


def test_rate_drop_needs_a_baseline() -> None:
    book = AlertBook(Thresholds(raise_after_s=0))
    assert kinds(book, obs(rate_hz=0.1, baseline_hz=None), NOW) == ([], [])
    assert kinds(book, obs(rate_hz=0.1, baseline_hz=0.5), NOW) == ([], [])
    assert kinds(book, obs(rate_hz=0.1, baseline_hz=2.0), NOW)[0] == [AlertKind.RATE_DROP]


def test_open_alerts_from_an_earlier_run_are_not_raised_again() -> None:
    book = AlertBook(Thresholds(raise_after_s=0, clear_after_s=0))
    row = AlertRow(7, "offline", "critical", "r1", NOW - 60_000, None, "robot is offline", {})
    book.load([row])
    assert book.open[("r1", AlertKind.OFFLINE)] == alert_of(row)
    assert kinds(book, obs(state=RobotState.OFFLINE), NOW) == ([], [])
    assert kinds(book, obs(), NOW + 1_000) == ([], [AlertKind.OFFLINE])


def test_alerts_of_a_robot_that_left_the_registry_are_cleared() -> None:
    book = AlertBook(Thresholds(raise_after_s=0))
    kinds(book, obs(state=RobotState.OFFLINE), NOW)
    to_raise, to_clear = book.evaluate([], now_ms=NOW + 1_000, registered=set())
    assert to_raise == [] and [a.kind for a in to_clear] == [AlertKind.OFFLINE]


def site_kinds(
    book: AlertBook, sites: dict[str, bool], at: int
) -> tuple[list[str | None], list[str | None]]:
    """evaluate_sites, each decision taken as stored; the sites raised and cleared."""
    views = {s: SiteView(reachable, NOW) for s, reachable in sites.items()}
    to_raise, to_clear = book.evaluate_sites(views, now_ms=at)
    for c in to_raise:
        assert c.kind is AlertKind.SITE_UNREACHABLE and c.robot_id is None
        book.raised(
            Alert(
                id=at,
                kind=c.kind,
                severity=c.severity,
                robot_id=None,
                raised_at=at,
                cleared_at=None,
                message=c.message,
                detail=c.detail,
                site_id=c.site_id,
            )
        )
    for a in to_clear:
        book.cleared(a)
    return [c.site_id for c in to_raise], [a.site_id for a in to_clear]


def test_one_site_unreachable_alert_per_site_with_the_hold_times() -> None:
    book = AlertBook(T)
    assert site_kinds(book, {"a": False, "b": True}, NOW) == ([], [])
    assert site_kinds(book, {"a": False, "b": True}, NOW + 5_000) == (["a"], [])
    assert site_kinds(book, {"a": False, "b": False}, NOW + 6_000) == ([], [])
    assert site_kinds(book, {"a": False, "b": False}, NOW + 11_000) == (["b"], [])
    assert set(book.open_sites) == {"a", "b"}
    # Robots' alerts are another matter.
    assert book.active_by_robot() == {}
    assert site_kinds(book, {"a": True, "b": False}, NOW + 12_000) == ([], [])
    assert site_kinds(book, {"a": True, "b": False}, NOW + 22_000) == ([], ["a"])
    # A site not heard of (the service just started) keeps its open alert.
    assert site_kinds(book, {}, NOW + 40_000) == ([], [])
    assert set(book.open_sites) == {"b"}


def test_a_site_alert_from_an_earlier_run_is_loaded() -> None:
    book = AlertBook(Thresholds(raise_after_s=0, clear_after_s=0))
    row = AlertRow(8, "site_unreachable", "critical", None, NOW, None, "m", {}, site_id="site-a")
    book.load([row])
    assert book.open_sites == {"site-a": alert_of(row)} and book.open == {}
    assert site_kinds(book, {"site-a": False}, NOW + 1_000) == ([], [])
    assert site_kinds(book, {"site-a": True}, NOW + 2_000) == ([], ["site-a"])


def test_robots_of_an_unreachable_site_raise_and_clear_nothing() -> None:
    book = AlertBook(T)
    unreachable = obs(state=RobotState.SITE_UNREACHABLE, silence_s=600.0, rate_hz=0.0)
    # An alert open before the outage stays open through it.
    kinds(book, obs(battery_percent=10.0), NOW)
    assert kinds(book, obs(battery_percent=10.0), NOW + 5_000)[0] == [AlertKind.BATTERY_LOW]
    for i in range(6, 60):
        assert kinds(book, unreachable, NOW + i * 1_000) == ([], [])
    assert book.active_by_robot() == {"r1": [AlertKind.BATTERY_LOW]}
    # Back: offline (its Last Will drained) raises after a full hold time, not at once.
    offline = obs(state=RobotState.OFFLINE)
    assert kinds(book, offline, NOW + 60_000) == ([], [])
    assert kinds(book, offline, NOW + 65_000)[0] == [AlertKind.OFFLINE]


def test_draining_robots_are_not_silent_and_unsettled_counts_drop_no_rate() -> None:
    book = AlertBook(Thresholds(raise_after_s=0))
    silent = obs(state=RobotState.STALE, silence_s=31.0)
    assert kinds(book, dataclasses.replace(silent, draining=True), NOW) == ([], [])
    assert kinds(book, silent, NOW + 1_000)[0] == [AlertKind.SILENT]
    book = AlertBook(Thresholds(raise_after_s=0))
    dropped = obs(rate_hz=1.0, baseline_hz=10.0)
    assert kinds(book, dataclasses.replace(dropped, draining=True), NOW) == ([], [])
    assert kinds(book, dataclasses.replace(dropped, rate_unsettled=True), NOW) == ([], [])
    assert kinds(book, dropped, NOW + 1_000)[0] == [AlertKind.RATE_DROP]
