"""Wiring and the tick: read the fleet's state, publish summaries and alerts, store alerts.

Each tick (1 / LIVE_SUMMARY_HZ) costs, whatever the fleet's size: one Redis round trip for
every robot's status and last-seen time, one for the latest readings and sequence counters of
the robots heard from since the last tick, one indexed PostgreSQL query for the dead letters
stored since the last tick. The registry and the per-minute counts are read less often
(LIVE_REGISTRY_REFRESH_S, LIVE_COUNTS_REFRESH_S). Sites' statuses arrive on MQTT
(`sites/+/status`); which robot is behind which site is read from the identity directory
(MQTT_AUTH_DIR) with the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from db.alerts import clear_alert, open_alerts, raise_alert
from db.connect import open_pool
from db.dead_letters import newest_dead_letter_id, refused_by_robot_since
from db.errors import DATABASE_AWAY_ERRORS
from db.robots import all_robot_ids, follow_battery_readings
from ingest.counters import COUNTERS_AWAY_ERRORS, Counters, open_redis
from live.alerts import AlertBook, Thresholds, alert_of
from live.mqtt import MqttPublisher
from live.settings import LiveSettings
from live.state import FleetState, counted_minutes
from mqtt_auth.identities import robot_sites
from mqtt_auth.store import load_identities
from telemetry.live import (
    FLEET_ALERTS_TOPIC,
    FLEET_SUMMARY_TOPIC,
    Alert,
    encode,
    robot_summary_topic,
)
from telemetry.logs import unreachable
from telemetry.sensors import SENSOR_SCHEMAS

log = logging.getLogger(__name__)

# Every type's sequence counters are read for a robot heard from (an absent one costs a miss).
_SENSOR_TYPES = tuple(SENSOR_SCHEMAS)
_AWAY_ERRORS: tuple[type[Exception], ...] = (*DATABASE_AWAY_ERRORS, *COUNTERS_AWAY_ERRORS)
# A database that does not exist yet is what `python -m db migrate` has not created yet.
_WAIT_FOR_DB_ERRORS: tuple[type[Exception], ...] = (
    *DATABASE_AWAY_ERRORS,
    asyncpg.InvalidCatalogNameError,
)


def thresholds_of(settings: LiveSettings) -> Thresholds:
    return Thresholds(
        raise_after_s=settings.live_alert_raise_after_s,
        clear_after_s=settings.live_alert_clear_after_s,
        silent_after_s=settings.live_silent_after_s,
        battery_low_percent=settings.live_battery_low_percent,
        battery_ok_percent=max(settings.live_battery_ok_percent, settings.live_battery_low_percent),
        gaps=settings.live_gaps_alert,
        dead_letters=settings.live_dead_letters_alert,
        window_s=settings.live_alert_window_s,
        rate_drop_ratio=settings.live_rate_drop_ratio,
        rate_drop_min_hz=settings.live_rate_drop_min_hz,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class LiveService:
    def __init__(
        self,
        *,
        settings: LiveSettings,
        pool: asyncpg.Pool[Any],
        counters: Counters,
        publisher: MqttPublisher,
    ) -> None:
        self._s = settings
        self._pool = pool
        self._counters = counters
        self._publisher = publisher
        self.fleet = FleetState(
            stale_after_s=settings.live_stale_after_s,
            window_s=settings.live_alert_window_s,
            draining_after_s=settings.live_draining_after_s,
        )
        self.alerts = AlertBook(thresholds_of(settings))
        self._registry_at = -1e18
        self._counts_at = -1e18
        self._seq_at = -1e18
        self._seq_due: set[str] = set()
        self._minute_counts: list[dict[str, int]] = []
        self._dead_letter_id: int | None = None
        self._connections_seen = 0
        self.ticks = 0

    async def start(self) -> None:
        """Open alerts from earlier runs, and where the dead-letter count starts."""
        self.alerts.load(await open_alerts(self._pool))
        self._dead_letter_id = await newest_dead_letter_id(self._pool)
        log.info("open alerts loaded", extra={"open": len(self.alerts.open)})

    async def _refresh(self, now: float) -> None:
        if now - self._registry_at >= self._s.live_registry_refresh_s:
            gone = self.fleet.set_registry(await all_robot_ids(self._pool))
            for robot_id in gone:
                # An empty retained message deletes the retained summary.
                self._publisher.publish(robot_summary_topic(robot_id), b"", qos=1, retain=True)
            await self._read_sites()
            self._registry_at = now
        if now - self._counts_at >= self._s.live_counts_refresh_s:
            self._minute_counts = await self._counters.robot_minute_counts(
                counted_minutes(_now_ms())
            )
            self._counts_at = now

    async def _read_sites(self) -> None:
        """Each robot's site, from the site identities (a file the API and `python -m
        mqtt_auth` replace atomically); kept as it was when the file cannot be read."""
        if not self._s.mqtt_auth_dir:
            return
        directory = Path(self._s.mqtt_auth_dir)
        try:
            identities = await asyncio.to_thread(load_identities, directory)
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot read the site identities; robots keep their sites",
                extra={"dir": str(directory), "error": repr(exc)},
            )
            return
        self.fleet.set_sites(robot_sites(identities.values()))

    async def _read_live(
        self, now: float, now_ms: int
    ) -> tuple[list[bytes | None], list[float | None]]:
        statuses, seen = await self._counters.robot_live(self.fleet.robot_ids)
        detail = self.fleet.needs_detail(seen)
        self._seq_due.update(detail)
        seq_keys: list[tuple[str, str]] = []
        # Sequence counters are four reads a robot: every LIVE_GAPS_REFRESH_S, for the robots
        # heard from since (only new readings change them), rather than every tick.
        if now - self._seq_at >= self._s.live_gaps_refresh_s:
            seq_keys = [(r, t) for r in sorted(self._seq_due) for t in _SENSOR_TYPES]
            self._seq_due.clear()
            self._seq_at = now
        if detail or seq_keys:
            latest, seq = await self._counters.latest_with_seq(detail, seq_keys)
            self.fleet.take_detail(detail, latest, seq, now_ms)
        return statuses, seen

    async def _read_refused(self, now_ms: int) -> None:
        assert self._dead_letter_id is not None
        refused, self._dead_letter_id = await refused_by_robot_since(
            self._pool, self._dead_letter_id
        )
        self.fleet.take_rejections(refused, now_ms)

    async def tick(self) -> int:
        """One round; returns how many robot summaries it published."""
        now = time.monotonic()
        await self._refresh(now)
        if self._publisher.connections != self._connections_seen:
            self._connections_seen = self._publisher.connections
            self.fleet.forget_published()
        now_ms = _now_ms()
        # Redis and PostgreSQL at once: a tick costs the slower of the two round trips.
        async with asyncio.TaskGroup() as tg:
            live = tg.create_task(self._read_live(now, now_ms))
            tg.create_task(self._read_refused(now_ms))
        statuses, seen = live.result()
        self.fleet.take_site_events(self._publisher.take_site_events())
        observations = self.fleet.observe(
            now_ms=now_ms, statuses=statuses, seen=seen, minute_counts=self._minute_counts
        )
        await self._alerts(observations, now_ms)
        changed, fleet = self.fleet.summaries(
            observations,
            now_ms=now_ms,
            active_alerts=self.alerts.active_by_robot(),
            site_alerts=len(self.alerts.open_sites),
        )
        # One batch: the robots' summaries, then the fleet's (live/mqtt.py says why).
        messages = [(robot_summary_topic(s.robot_id), encode(s)) for s in changed]
        messages.append((FLEET_SUMMARY_TOPIC, encode(fleet)))
        self._publisher.publish_batch(messages, retain=True)
        self.ticks += 1
        return len(changed)

    async def _alerts(self, observations: list[Any], now_ms: int) -> None:
        to_raise, to_clear = self.alerts.evaluate(
            observations, now_ms=now_ms, registered=set(self.fleet.robot_ids)
        )
        site_raise, site_clear = self.alerts.evaluate_sites(self.fleet.sites, now_ms=now_ms)
        to_raise += site_raise
        to_clear += site_clear
        for c in to_raise:
            row, new = await raise_alert(
                self._pool,
                kind=c.kind,
                severity=c.severity,
                robot_id=c.robot_id,
                raised_at_ms=now_ms,
                message=c.message,
                detail=c.detail,
                site_id=c.site_id,
            )
            alert = alert_of(row)
            self.alerts.raised(alert)
            if new:
                self._announce(alert, "raised")
        for open_alert in to_clear:
            cleared = await clear_alert(self._pool, open_alert.id, cleared_at_ms=now_ms)
            self.alerts.cleared(open_alert)
            if cleared is not None:
                self._announce(alert_of(cleared), "cleared")

    def _announce(self, alert: Alert, what: str) -> None:
        self._publisher.publish(FLEET_ALERTS_TOPIC, encode(alert), qos=1)
        log.info(
            f"alert {what}",
            extra={
                "kind": str(alert.kind),
                "robot_id": alert.robot_id,
                "site_id": alert.site_id,
                "id": alert.id,
            },
        )

    async def follow_battery(self) -> None:
        """Writes the battery readings newer than those written into the registry (one
        statement); every LIVE_BATTERY_WRITE_S rather than every tick, since a robot reports
        its battery about once a second and the registry need not follow that closely."""
        updates = self.fleet.battery_updates()
        if updates:
            await follow_battery_readings(
                self._pool,
                [(r, level, datetime.fromtimestamp(ms / 1000, UTC)) for r, level, ms in updates],
            )
            self.fleet.battery_written(updates)

    async def run(self, stopping: asyncio.Event) -> None:
        """Ticks until `stopping`; a tick that meets Redis or PostgreSQL away is retried with
        backoff, and said once per outage. Every minute it logs how long ticks took."""
        period = 1 / self._s.live_summary_hz
        delay = period
        failing = False
        report = _TickReport()
        while not stopping.is_set():
            started = time.monotonic()
            try:
                published = await self.tick()
            except* _AWAY_ERRORS as group:
                if not failing:
                    log.warning(
                        "live tick failed; retrying with backoff",
                        extra={"error": repr(group.exceptions[0])},
                    )
                failing = True
                delay = min(max(delay * 2, period), 5.0)
            else:
                if failing:
                    log.info("live tick succeeds again")
                failing = False
                delay = period
                report.add(time.monotonic() - started, published, len(self.fleet.robot_ids))
            # A period from the start of one tick to the next: at most LIVE_SUMMARY_HZ.
            wait = delay if failing else max(0.0, delay - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)

    async def run_battery(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._s.live_battery_write_s)
            try:
                await self.follow_battery()
            except _AWAY_ERRORS as exc:
                log.warning(
                    "battery levels not written; next round retries", extra={"error": repr(exc)}
                )


class _TickReport:
    """Once a minute, a log line: ticks, their mean and longest duration, summaries sent (a
    tick longer than the period means summaries come less often than LIVE_SUMMARY_HZ)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self._every_s = every_s
        self._since = time.monotonic()
        self._durations: list[float] = []
        self._published = 0

    def add(self, duration_s: float, published: int, robots: int) -> None:
        self._durations.append(duration_s)
        self._published += published
        if time.monotonic() - self._since >= self._every_s:
            log.info(
                "live ticks",
                extra={
                    "ticks": len(self._durations),
                    "mean_ms": round(1000 * sum(self._durations) / len(self._durations), 1),
                    "max_ms": round(1000 * max(self._durations), 1),
                    "summaries": self._published,
                    "robots": robots,
                },
            )
            self._since = time.monotonic()
            self._durations.clear()
            self._published = 0


@asynccontextmanager
async def _pool_with_retry(settings: LiveSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    delay = 0.2
    while True:
        try:
            pool_cm = open_pool(
                dsn=settings.database_url, min_size=1, max_size=2, application_name="robosense-live"
            )
            pool = await pool_cm.__aenter__()
            break
        except _WAIT_FOR_DB_ERRORS as exc:
            log.warning(
                "waiting for PostgreSQL",
                extra=unreachable(settings.database_url, exc, retry_in_s=delay),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    try:
        yield pool
    finally:
        await pool_cm.__aexit__(None, None, None)


async def _start_with_retry(service: LiveService, settings: LiveSettings) -> None:
    delay = 0.2
    while True:
        try:
            await service.start()
        except _AWAY_ERRORS as exc:
            log.warning(
                "cannot load open alerts; retrying",
                extra=unreachable(settings.database_url, exc, retry_in_s=delay),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            return


async def run(settings: LiveSettings) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(_pool_with_retry(settings))
        redis = await stack.enter_async_context(
            open_redis(settings.redis_url, cluster=settings.redis_cluster)
        )
        counters = Counters(
            redis=redis, prefix=settings.redis_prefix, shards=settings.redis_counter_shards
        )
        publisher = await stack.enter_async_context(
            MqttPublisher(target=settings.mqtt, client_id=settings.live_client_id)
        )
        service = LiveService(settings=settings, pool=pool, counters=counters, publisher=publisher)
        await _start_with_retry(service, settings)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(service.run(stopping), name="ticks")
            if settings.live_follow_battery:
                tg.create_task(service.run_battery(stopping), name="battery")
            if await publisher.wait_connected(within_s=30):
                log.info(
                    "live ready",
                    extra={"mqtt": str(settings.mqtt), "summary_hz": settings.live_summary_hz},
                )
            else:
                log.warning(
                    "not connected to the broker after 30 s; still trying",
                    extra={"mqtt": str(settings.mqtt)},
                )
        log.info("live stopped cleanly")
