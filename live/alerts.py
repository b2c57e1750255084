"""Alert rules over the live state, and when each alert is raised and cleared.

A rule says, per robot and tick, whether its condition holds. An alert is raised once the
condition has held for `raise_after_s` and cleared once it has been gone for `clear_after_s`;
the battery rule also has two thresholds (hysteresis). Open alerts are loaded from PostgreSQL
at start, and the table allows one open alert per robot (or site) and kind, so a restarted
service picks them up instead of raising them again.

A site whose broker cannot reach the cloud has one alert, `site_unreachable`, with the same
hold times; its robots' alerts are neither raised nor cleared meanwhile (what the cloud knows
of them is out of date), and once it is back, robots whose readings are draining late raise
neither `silent` nor `rate_drop` (docs/live.md, "Sites").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from db.alerts import AlertRow
from live.state import Observation, SiteView
from telemetry.live import Alert, AlertKind, RobotState, Severity


@dataclass(frozen=True, slots=True)
class Thresholds:
    raise_after_s: float = 5.0
    clear_after_s: float = 15.0
    silent_after_s: float = 30.0
    battery_low_percent: float = 20.0
    battery_ok_percent: float = 25.0
    gaps: int = 10
    dead_letters: int = 20
    window_s: float = 60.0
    rate_drop_ratio: float = 0.5
    rate_drop_min_hz: float = 1.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """An alert to raise: what the store needs besides the time."""

    kind: AlertKind
    severity: Severity
    robot_id: str | None
    message: str
    detail: dict[str, Any]
    site_id: str | None = None


# A rule: (observation, is the alert open now) -> message and detail when its condition holds.
_Rule = Callable[[Observation, bool], tuple[str, dict[str, Any]] | None]


def _rules(t: Thresholds) -> dict[AlertKind, tuple[Severity, _Rule]]:
    def offline(o: Observation, _open: bool) -> tuple[str, dict[str, Any]] | None:
        if o.state is not RobotState.OFFLINE:
            return None
        return "robot is offline", {"silence_s": o.silence_s}

    def silent(o: Observation, _open: bool) -> tuple[str, dict[str, Any]] | None:
        if o.state not in (RobotState.ONLINE, RobotState.STALE) or o.silence_s is None:
            return None
        if o.draining:
            return None
        if o.silence_s < t.silent_after_s:
            return None
        return f"online but silent for {o.silence_s:.0f} s", {"silence_s": o.silence_s}

    def battery_low(o: Observation, is_open: bool) -> tuple[str, dict[str, Any]] | None:
        if o.battery_percent is None:
            return None
        limit = t.battery_ok_percent if is_open else t.battery_low_percent
        if o.battery_percent >= limit:
            return None
        return f"battery at {o.battery_percent:.0f} %", {"battery_percent": o.battery_percent}

    def gaps(o: Observation, _open: bool) -> tuple[str, dict[str, Any]] | None:
        if o.gaps_in_window < t.gaps:
            return None
        return (
            f"{o.gaps_in_window} readings missing (sequence gaps) in {t.window_s:.0f} s",
            {"gaps": o.gaps_in_window, "window_s": t.window_s},
        )

    def dead_letters(o: Observation, _open: bool) -> tuple[str, dict[str, Any]] | None:
        if o.rejected_in_window < t.dead_letters:
            return None
        return (
            f"{o.rejected_in_window} messages refused in {t.window_s:.0f} s",
            {"rejected": o.rejected_in_window, "window_s": t.window_s},
        )

    def rate_drop(o: Observation, _open: bool) -> tuple[str, dict[str, Any]] | None:
        base = o.baseline_hz
        if o.state is not RobotState.ONLINE or base is None or base < t.rate_drop_min_hz:
            return None
        # Counted by the readings' own time: an outage's minutes fill in as it drains.
        if o.draining or o.rate_unsettled:
            return None
        if o.rate_hz >= t.rate_drop_ratio * base:
            return None
        return (
            f"reading rate {o.rate_hz:.1f}/s, down from {base:.1f}/s",
            {"rate_hz": o.rate_hz, "baseline_hz": base},
        )

    return {
        AlertKind.OFFLINE: (Severity.CRITICAL, offline),
        AlertKind.SILENT: (Severity.WARNING, silent),
        AlertKind.BATTERY_LOW: (Severity.WARNING, battery_low),
        AlertKind.SEQUENCE_GAPS: (Severity.WARNING, gaps),
        AlertKind.DEAD_LETTER_SPIKE: (Severity.WARNING, dead_letters),
        AlertKind.RATE_DROP: (Severity.WARNING, rate_drop),
    }


def alert_of(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        kind=AlertKind(row.kind),
        severity=Severity(row.severity),
        robot_id=row.robot_id,
        raised_at=row.raised_at,
        cleared_at=row.cleared_at,
        message=row.message,
        detail=row.detail,
        site_id=row.site_id,
    )


_Key = tuple[str, AlertKind]
_KINDS = frozenset(k.value for k in AlertKind)


class AlertBook:
    """The open alerts and the conditions waiting out their hold time."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._t = thresholds
        self._rules = _rules(thresholds)
        self.open: dict[_Key, Alert] = {}
        # Since when (ms) a condition held without its alert open, or failed with it open.
        self._holding: dict[_Key, int] = {}
        self._lifting: dict[_Key, int] = {}
        # `site_unreachable` per site, and its hold times.
        self.open_sites: dict[str, Alert] = {}
        self._site_holding: dict[str, int] = {}
        self._site_lifting: dict[str, int] = {}

    def load(self, rows: Iterable[AlertRow]) -> None:
        for row in rows:
            if row.site_id is not None and row.kind == AlertKind.SITE_UNREACHABLE:
                self.open_sites[row.site_id] = alert_of(row)
            elif row.robot_id is not None and row.kind in _KINDS:
                self.open[(row.robot_id, AlertKind(row.kind))] = alert_of(row)

    def evaluate_sites(
        self, sites: Mapping[str, SiteView], *, now_ms: int
    ) -> tuple[list[Candidate], list[Alert]]:
        """`site_unreachable` to raise and to clear: raised once a site has said "0" for the
        hold time, cleared once it has said "1" (or its status was deleted) for the clearing
        time. A site not heard of since the service started keeps its open alert."""
        to_raise: list[Candidate] = []
        to_clear: list[Alert] = []
        for site_id, view in sites.items():
            is_open = site_id in self.open_sites
            if not view.reachable:
                self._site_lifting.pop(site_id, None)
                if is_open:
                    continue
                since = self._site_holding.setdefault(site_id, now_ms)
                if now_ms - since >= self._t.raise_after_s * 1000:
                    to_raise.append(
                        Candidate(
                            AlertKind.SITE_UNREACHABLE,
                            Severity.CRITICAL,
                            None,
                            "site cannot reach the cloud; its robots' data is queued there",
                            {"since": view.since_ms},
                            site_id=site_id,
                        )
                    )
            else:
                self._site_holding.pop(site_id, None)
                if not is_open:
                    continue
                since = self._site_lifting.setdefault(site_id, now_ms)
                if now_ms - since >= self._t.clear_after_s * 1000:
                    to_clear.append(self.open_sites[site_id])
        return to_raise, to_clear

    def evaluate(
        self, observations: Sequence[Observation], *, now_ms: int, registered: set[str]
    ) -> tuple[list[Candidate], list[Alert]]:
        """What to raise and what to clear now. The caller stores each and then reports it
        back (`raised`, `cleared`); a failed store is retried next tick."""
        to_raise: list[Candidate] = []
        to_clear: list[Alert] = []
        seen: set[_Key] = set()
        for o in observations:
            frozen = o.state is RobotState.SITE_UNREACHABLE
            for kind, (severity, rule) in self._rules.items():
                key = (o.robot_id, kind)
                seen.add(key)
                if frozen:
                    # Nothing new is known of it: nothing raised, nothing cleared, and each
                    # hold time starts again once its site is back.
                    self._holding.pop(key, None)
                    self._lifting.pop(key, None)
                    continue
                is_open = key in self.open
                found = rule(o, is_open)
                if found is not None:
                    self._lifting.pop(key, None)
                    if is_open:
                        continue
                    since = self._holding.setdefault(key, now_ms)
                    if now_ms - since >= self._t.raise_after_s * 1000:
                        message, detail = found
                        to_raise.append(Candidate(kind, severity, o.robot_id, message, detail))
                else:
                    self._holding.pop(key, None)
                    if not is_open:
                        continue
                    since = self._lifting.setdefault(key, now_ms)
                    if now_ms - since >= self._t.clear_after_s * 1000:
                        to_clear.append(self.open[key])
        # A robot that left the registry takes its alerts with it, at once.
        for key, alert in self.open.items():
            if key[0] not in registered and key not in seen:
                to_clear.append(alert)
        return to_raise, to_clear

    def raised(self, alert: Alert) -> None:
        if alert.site_id is not None:
            self.open_sites[alert.site_id] = alert
            self._site_holding.pop(alert.site_id, None)
        elif alert.robot_id is not None:
            key = (alert.robot_id, alert.kind)
            self.open[key] = alert
            self._holding.pop(key, None)

    def cleared(self, alert: Alert) -> None:
        if alert.site_id is not None:
            self.open_sites.pop(alert.site_id, None)
            self._site_lifting.pop(alert.site_id, None)
        elif alert.robot_id is not None:
            key = (alert.robot_id, alert.kind)
            self.open.pop(key, None)
            self._lifting.pop(key, None)

    def active_by_robot(self) -> dict[str, list[AlertKind]]:
        out: dict[str, list[AlertKind]] = {}
        for robot_id, kind in self.open:
            out.setdefault(robot_id, []).append(kind)
        return out
