"""The fleet's live state, tick by tick: what each robot's summary says and what the alert rules
look at. No I/O here: `live/app.py` reads Redis and PostgreSQL and hands the results in.

A tick reads every robot's status and last-seen time (two commands for the whole fleet), and
the latest readings and sequence counters only of robots that sent something since the last
tick, so a quiet robot costs two hash lookups a tick.

Sites (docs/edge.md): a robot whose site broker cannot reach the cloud (`sites/{site}/status`
"0") is `site_unreachable`, whatever the cloud last heard of it; once the site is back, its
silence counts from the site's return, and a robot whose newest reading arrived late (a
backlog draining) is `draining` (docs/live.md, "Sites").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import orjson

from ingest.counters import SeqStats
from telemetry.live import AlertKind, FleetSummary, RobotState, RobotSummary, SensorLatest

# The minutes behind a rate drop's baseline, before the last full minute.
BASELINE_MINUTES = 5
# How long after a site's return its robots' per-minute counts may still be filling (they are
# counted by the readings' own time, and the outage's minutes fill as the backlog drains):
# every minute a rate drop looks at, and the one in progress.
RATE_UNSETTLED_MS = (BASELINE_MINUTES + 2) * 60_000


def minute_of(ms: int) -> int:
    return ms // 60_000 * 60


def counted_minutes(now_ms: int) -> list[int]:
    """The last full minute, then the baseline minutes before it (epoch seconds, as Redis
    names its minute buckets)."""
    last_full = minute_of(now_ms) - 60
    return [last_full - 60 * i for i in range(BASELINE_MINUTES + 1)]


@dataclass(frozen=True, slots=True)
class Observation:
    """One robot at one tick: what the alert rules decide on."""

    robot_id: str
    state: RobotState
    # Seconds since the robot last sent anything (a reading, or its online status).
    silence_s: float | None
    battery_percent: float | None
    rate_hz: float
    # Mean rate over the minutes before the last full one (None: no counts for them yet).
    baseline_hz: float | None
    gaps_in_window: int
    rejected_in_window: int
    # The site whose broker forwards its readings (None: none known).
    site: str | None = None
    # `received_at - ts` of its newest reading.
    delay_ms: int | None = None
    # Its newest reading arrived late (at least `draining_after_s`) and recently: a backlog
    # is draining, so silence and rate say nothing about the robot.
    draining: bool = False
    # Its site was unreachable within the minutes a rate drop compares: counts still filling.
    rate_unsettled: bool = False


@dataclass(frozen=True, slots=True)
class SiteEvent:
    """A site's status as the service received it (`sites/{site}/status`)."""

    site_id: str
    # False: "0"; True: "1", or its retained status was deleted (the site is gone: its robots
    # are judged on their own again).
    reachable: bool
    at_ms: int


@dataclass(frozen=True, slots=True)
class SiteView:
    reachable: bool
    # Since when it is what it is (as received here).
    since_ms: int
    # When it last came back after being seen unreachable (None: not seen so).
    back_ms: int | None = None


@dataclass(slots=True)
class _Robot:
    seen_ms: int | None = None
    sensors: dict[str, SensorLatest] = field(default_factory=dict)
    gaps_total: dict[str, int] = field(default_factory=dict)
    gaps_new: int = 0
    rejected_new: int = 0
    # (tick time in ms, how many), pruned to the alert window.
    gaps_window: deque[tuple[int, int]] = field(default_factory=deque)
    rejected_window: deque[tuple[int, int]] = field(default_factory=deque)
    # The last summary published, with `at` zeroed: the next is published only if it differs.
    published: RobotSummary | None = None
    battery_written_ms: int | None = None
    # What Redis said last, and what it parsed to: unchanged bytes are not parsed again.
    raw_latest: dict[str, bytes] = field(default_factory=dict)
    raw_status: bytes | None = None
    status: tuple[str | None, int | None] = (None, None)


def parse_latest(raw: bytes) -> SensorLatest | None:
    """A reading as the counters keep it (ingest/journal_entry.py, reading_json)."""
    try:
        doc: dict[str, Any] = orjson.loads(raw)
        ts = int(datetime.fromisoformat(doc["ts"]).timestamp() * 1000)
        data = doc["data"]
        received = doc.get("received_at")
        received_at = int(datetime.fromisoformat(received).timestamp() * 1000) if received else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return SensorLatest(ts=ts, data=data if isinstance(data, dict) else {}, received_at=received_at)


def _status(raw: bytes | None) -> tuple[str | None, int | None]:
    if raw is None:
        return None, None
    try:
        doc = orjson.loads(raw)
        return str(doc.get("status")), int(doc["at"]) if doc.get("at") is not None else None
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return None, None


def _sum_since(window: deque[tuple[int, int]], since_ms: int) -> int:
    if not window:
        return 0
    while window and window[0][0] < since_ms:
        window.popleft()
    return sum(n for _, n in window)


def _newest(sensors: Mapping[str, SensorLatest]) -> SensorLatest | None:
    return max(sensors.values(), key=lambda s: s.ts, default=None)


class FleetState:
    def __init__(
        self, *, stale_after_s: float, window_s: float, draining_after_s: float = 10.0
    ) -> None:
        self._stale_after_ms = int(stale_after_s * 1000)
        self._window_ms = int(window_s * 1000)
        self._draining_after_ms = int(draining_after_s * 1000)
        self._robots: dict[str, _Robot] = {}
        self.robot_ids: list[str] = []
        # Each robot's (rate, baseline) from the minute counts last handed in: they change
        # every LIVE_COUNTS_REFRESH_S, not every tick.
        self._counts_of: Sequence[Mapping[str, int]] | None = None
        self._rates: dict[str, tuple[float, float | None]] = {}
        # Each robot's site (mqtt_auth's site identities), and each site's status.
        self.robot_site: dict[str, str] = {}
        self.sites: dict[str, SiteView] = {}

    def set_sites(self, robot_sites: Mapping[str, str]) -> None:
        self.robot_site = dict(robot_sites)

    def take_site_events(self, events: Iterable[SiteEvent]) -> None:
        """Statuses in the order received. A first "1" is where the site stands (the retained
        status at connect), not a return: only a "1" after a "0" sets `back_ms`."""
        for e in events:
            old = self.sites.get(e.site_id)
            if old is not None and old.reachable == e.reachable:
                continue
            elif not e.reachable:
                self.sites[e.site_id] = SiteView(False, e.at_ms, old.back_ms if old else None)
            else:
                back = e.at_ms if old is not None else None
                self.sites[e.site_id] = SiteView(True, e.at_ms, back)

    def unreachable_sites(self) -> list[str]:
        return sorted(s for s, v in self.sites.items() if not v.reachable)

    def set_registry(self, robot_ids: Sequence[str]) -> list[str]:
        """The registered robots; returns those that left it (their summaries go)."""
        registered = set(robot_ids)
        gone = [r for r in self._robots if r not in registered]
        for r in gone:
            del self._robots[r]
        for r in robot_ids:
            self._robots.setdefault(r, _Robot())
        self.robot_ids = list(robot_ids)
        return gone

    def forget_published(self) -> None:
        """Publish every summary again (the broker may have lost its retained messages)."""
        for robot in self._robots.values():
            robot.published = None

    def needs_detail(self, seen: Sequence[float | None]) -> list[str]:
        """Robots (of `robot_ids`, in order with `seen`) that sent something since last tick."""
        return [
            r
            for r, s in zip(self.robot_ids, seen, strict=True)
            if s is not None and int(s) != self._robots[r].seen_ms
        ]

    def take_detail(
        self,
        robot_ids: Sequence[str],
        latest: Sequence[Mapping[str, bytes]],
        seq: Mapping[tuple[str, str], SeqStats],
        now_ms: int,
    ) -> None:
        """The newest readings of `robot_ids`, and sequence counters (of any robots)."""
        for robot_id, readings in zip(robot_ids, latest, strict=True):
            robot = self._robots.get(robot_id)
            if robot is None:
                continue
            known = robot.raw_latest
            for sensor_type, raw in readings.items():
                if known.get(sensor_type) == raw:
                    continue
                known[sensor_type] = raw
                parsed = parse_latest(raw)
                if parsed is not None:
                    robot.sensors[sensor_type] = parsed
        new: dict[str, int] = {}
        for (robot_id, sensor_type), stats in seq.items():
            robot = self._robots.get(robot_id)
            if robot is None:
                continue
            before = robot.gaps_total.get(sensor_type)
            # The first look at a robot sets its baseline: gaps from before this service
            # started are in gaps_total, not counted as new.
            if before is not None and stats.gaps > before:
                new[robot_id] = new.get(robot_id, 0) + stats.gaps - before
            robot.gaps_total[sensor_type] = stats.gaps
        for robot_id, n in new.items():
            robot = self._robots[robot_id]
            robot.gaps_new += n
            robot.gaps_window.append((now_ms, n))

    def take_rejections(self, rejected: Mapping[str, int], now_ms: int) -> None:
        for robot_id, n in rejected.items():
            robot = self._robots.get(robot_id)
            if robot is not None and n:
                robot.rejected_new += n
                robot.rejected_window.append((now_ms, n))

    def observe(
        self,
        *,
        now_ms: int,
        statuses: Sequence[bytes | None],
        seen: Sequence[float | None],
        minute_counts: Sequence[Mapping[str, int]],
    ) -> list[Observation]:
        out = []
        rates = self._rates_of(minute_counts)
        no_counts = (0.0, None)
        for robot_id, raw_status, seen_ms in zip(self.robot_ids, statuses, seen, strict=True):
            robot = self._robots[robot_id]
            if seen_ms is not None:
                robot.seen_ms = int(seen_ms)
            if raw_status != robot.raw_status:
                robot.raw_status = raw_status
                robot.status = _status(raw_status)
            status, status_at = robot.status
            site_id = self.robot_site.get(robot_id)
            site = self.sites.get(site_id) if site_id is not None else None
            # A site's return is news of its robots: their silence counts from then, while
            # their backlog makes its way to the cloud.
            back = site.back_ms if site is not None and site.reachable else None
            heard = max(
                (t for t in (robot.seen_ms, status_at, back) if t is not None), default=None
            )
            silence_s = None if heard is None else max(0, now_ms - heard) / 1000
            if site is not None and not site.reachable:
                state = RobotState.SITE_UNREACHABLE
            elif status == "offline":
                state = RobotState.OFFLINE
            elif status == "online" or (status is None and robot.seen_ms is not None):
                fresh = heard is not None and now_ms - heard <= self._stale_after_ms
                if fresh:
                    state = RobotState.ONLINE
                else:
                    state = RobotState.STALE if status == "online" else RobotState.UNKNOWN
            else:
                state = RobotState.UNKNOWN
            rate, baseline = rates.get(robot_id, no_counts)
            battery = robot.sensors.get("battery")
            level = battery.data.get("level") if battery else None
            since = now_ms - self._window_ms
            newest = _newest(robot.sensors)
            delay = (
                newest.received_at - newest.ts
                if newest is not None and newest.received_at is not None
                else None
            )
            draining = (
                delay is not None
                and newest is not None
                and newest.received_at is not None
                and delay >= self._draining_after_ms
                and now_ms - newest.received_at <= self._stale_after_ms
            )
            unsettled = site is not None and (
                not site.reachable
                or (site.back_ms is not None and now_ms - site.back_ms < RATE_UNSETTLED_MS)
            )
            out.append(
                Observation(
                    robot_id=robot_id,
                    state=state,
                    silence_s=silence_s,
                    battery_percent=float(level) if isinstance(level, int | float) else None,
                    rate_hz=rate,
                    baseline_hz=baseline,
                    gaps_in_window=_sum_since(robot.gaps_window, since),
                    rejected_in_window=_sum_since(robot.rejected_window, since),
                    site=site_id,
                    delay_ms=delay,
                    draining=draining,
                    rate_unsettled=unsettled,
                )
            )
        return out

    def _rates_of(
        self, minute_counts: Sequence[Mapping[str, int]]
    ) -> dict[str, tuple[float, float | None]]:
        """(rate over the last full minute, mean rate of the minutes before it or None) per
        robot with any count; computed once per set of counts."""
        if minute_counts is self._counts_of:
            return self._rates
        rates: dict[str, tuple[float, float | None]] = {}
        if minute_counts:
            last, before = minute_counts[0], minute_counts[1:]
            robots = set(last).union(*before)
            for robot_id in robots:
                counted = [n for m in before if (n := m.get(robot_id)) is not None]
                baseline = sum(counted) / (60 * len(before)) if counted else None
                rates[robot_id] = (last.get(robot_id, 0) / 60, baseline)
        self._counts_of, self._rates = minute_counts, rates
        return rates

    def summaries(
        self,
        observations: Iterable[Observation],
        *,
        now_ms: int,
        active_alerts: Mapping[str, list[AlertKind]],
        site_alerts: int = 0,
    ) -> tuple[list[RobotSummary], FleetSummary]:
        """The robot summaries that changed since last published (to publish now), and the
        fleet's roll-up; resets what counts "since the last summary"."""
        changed = []
        states: dict[RobotState, int] = dict.fromkeys(RobotState, 0)
        rate = 0.0
        gaps_new = rejected_new = draining = 0
        alerts = site_alerts
        for o in observations:
            robot = self._robots[o.robot_id]
            kinds = active_alerts.get(o.robot_id, [])
            summary = RobotSummary(
                robot_id=o.robot_id,
                at=0,
                state=o.state,
                last_seen=robot.seen_ms,
                rate_hz=round(o.rate_hz, 3),
                sensors=dict(robot.sensors),
                battery_percent=o.battery_percent,
                gaps_total=dict(robot.gaps_total),
                gaps_new=robot.gaps_new,
                rejected_new=robot.rejected_new,
                active_alerts=kinds,
                site=o.site,
                delay_ms=o.delay_ms,
            )
            states[o.state] += 1
            draining += o.draining
            rate += o.rate_hz
            gaps_new += robot.gaps_new
            rejected_new += robot.rejected_new
            alerts += len(kinds)
            robot.gaps_new = robot.rejected_new = 0
            if summary != robot.published:
                robot.published = summary
                changed.append(msgspec.structs.replace(summary, at=now_ms))
        fleet = FleetSummary(
            at=now_ms,
            robots=len(self.robot_ids),
            states=states,
            rate_hz=round(rate, 3),
            gaps_new=gaps_new,
            rejected_new=rejected_new,
            active_alerts=alerts,
            sites_unreachable=self.unreachable_sites(),
            draining=draining,
        )
        return changed, fleet

    def battery_updates(self) -> list[tuple[str, float, int]]:
        """(robot id, level, reading ms) of battery readings not yet written to the registry."""
        updates = []
        for robot_id, robot in self._robots.items():
            battery = robot.sensors.get("battery")
            if battery is None or battery.ts == robot.battery_written_ms:
                continue
            level = battery.data.get("level")
            if isinstance(level, int | float) and 0 <= level <= 100:
                updates.append((robot_id, float(level), battery.ts))
        return updates

    def battery_written(self, updates: Iterable[tuple[str, float, int]]) -> None:
        for robot_id, _, ts in updates:
            robot = self._robots.get(robot_id)
            if robot is not None:
                robot.battery_written_ms = ts
