"""The live service's settings, read from the environment by the entry point only."""

from __future__ import annotations

from pydantic import Field

from mqtt_auth.settings import MqttAuthSettings


class LiveSettings(MqttAuthSettings):
    # MQTT_AUTH_DIR (inherited): the cloud broker's identity directory, read only, for each
    # robot's site (the site identities list their robots, docs/edge.md). Empty: no robot is
    # known to be behind a site; sites' statuses still raise `site_unreachable`.
    # The MQTT identity is MQTT_URL's user (role `live`: publishes fleet/# only,
    # docs/security.md); the broker makes the username the client id.
    live_client_id: str = "robosense-live"

    # The service's niceness (0-19, added to the one it starts with): summaries are for people
    # and can come late; on a machine the bridge saturates, the kernel gives the bridge the
    # CPU first and a tick takes longer instead (BENCHMARKS.md, "Live view"). 0: as started.
    live_nice: int = Field(default=10, ge=0, le=19)

    # Summaries per robot per second, at most: a robot's summary is published when something
    # in it changed, so a robot that is offline and quiet costs nothing.
    live_summary_hz: float = Field(default=1.0, gt=0, le=20)
    # An online robot with no reading for this long is `stale`.
    live_stale_after_s: float = Field(default=10.0, gt=0)
    # A robot whose newest reading arrived at least this late (received_at - ts), within
    # LIVE_STALE_AFTER_S, is draining a backlog: no `silent` or `rate_drop` for it.
    live_draining_after_s: float = Field(default=10.0, gt=0)
    # How often the registry (which robots exist) is read from PostgreSQL.
    live_registry_refresh_s: float = Field(default=30.0, gt=0)
    # How often the per-minute per-robot counts (reading rate, rate drop) are read from Redis:
    # a finished minute hardly changes.
    live_counts_refresh_s: float = Field(default=10.0, gt=0)
    # How often the sequence counters (gaps) of the robots heard from are read: four Redis
    # reads a robot, the larger part of a tick's cost (BENCHMARKS.md, "Live view").
    live_gaps_refresh_s: float = Field(default=5.0, gt=0)

    # Alerts (live/alerts.py). A condition must hold this long before its alert is raised, and
    # be gone this long before it is cleared: no flapping around a threshold.
    live_alert_raise_after_s: float = Field(default=5.0, ge=0)
    live_alert_clear_after_s: float = Field(default=15.0, ge=0)
    # `silent`: online, but no reading for this long.
    live_silent_after_s: float = Field(default=30.0, gt=0)
    # `battery_low` below the first, cleared at or above the second (hysteresis).
    live_battery_low_percent: float = Field(default=20.0, ge=0, le=100)
    live_battery_ok_percent: float = Field(default=25.0, ge=0, le=100)
    # `sequence_gaps`: at least this many readings missing (seq gaps) within the window.
    live_gaps_alert: int = Field(default=10, ge=1)
    # `dead_letter_spike`: at least this many of a robot's messages refused within the window.
    live_dead_letters_alert: int = Field(default=20, ge=1)
    live_alert_window_s: float = Field(default=60.0, gt=0)
    # `rate_drop`: last full minute's rate below this fraction of the 5 minutes before it,
    # when those ran at least `live_rate_drop_min_hz`.
    live_rate_drop_ratio: float = Field(default=0.5, gt=0, lt=1)
    live_rate_drop_min_hz: float = Field(default=1.0, gt=0)

    # Whether the registry's battery_level follows battery telemetry (docs/api.md), and how
    # often the newest readings are written there.
    live_follow_battery: bool = True
    live_battery_write_s: float = Field(default=10.0, gt=0)
