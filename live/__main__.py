"""`python -m live` runs the live service (summaries and alerts); settings: environment."""

from __future__ import annotations

import argparse
import os

import uvloop

from live.app import run
from live.settings import LiveSettings
from telemetry.logs import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m live",
        description=(
            "Publishes each robot's summary (fleet/{id}/summary, retained) at most "
            "LIVE_SUMMARY_HZ, the fleet's (fleet/summary) and alerts (fleet/alerts, stored in "
            "PostgreSQL); a site that cannot reach the cloud (sites/+/status) is one alert, not "
            "its robots going offline. "
            "Settings from the environment: LIVE_SUMMARY_HZ (1), LIVE_NICE (10), "
            "LIVE_STALE_AFTER_S (10), LIVE_DRAINING_AFTER_S (10), LIVE_GAPS_REFRESH_S (5), "
            "LIVE_SILENT_AFTER_S (30), LIVE_BATTERY_LOW_PERCENT (20), LIVE_BATTERY_OK_PERCENT "
            "(25), LIVE_GAPS_ALERT (10), LIVE_DEAD_LETTERS_ALERT (20), LIVE_ALERT_WINDOW_S (60), "
            "LIVE_RATE_DROP_RATIO (0.5), LIVE_ALERT_RAISE_AFTER_S (5), LIVE_ALERT_CLEAR_AFTER_S "
            "(15), LIVE_FOLLOW_BATTERY (true), LIVE_BATTERY_WRITE_S (10); DATABASE_URL, "
            "REDIS_URL, REDIS_PREFIX, MQTT_URL "
            "(an identity of role `live`), MQTT_AUTH_DIR (read only: the robots' sites). "
            "docs/live.md has them all."
        ),
    )
    parser.parse_args()
    settings = LiveSettings()
    configure_logging(level=settings.log_level, process="live")
    if settings.live_nice:
        # Before any thread starts: Linux keeps a niceness per thread, and new ones inherit it.
        os.nice(settings.live_nice)
    uvloop.run(run(settings))


if __name__ == "__main__":
    main()
