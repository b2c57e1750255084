"""`python -m db migrate`: create the database if needed, apply migrations, create partitions."""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from tenacity import stop_before_delay

from db.migrate import prepare_database
from telemetry.logs import configure_logging, unreachable
from telemetry.retry import retry
from telemetry.settings import ServiceSettings

log = logging.getLogger("db")


class DbSettings(ServiceSettings):
    partition_days_back: int = 8
    partition_days_ahead: int = 3
    retention_days: int = 30


async def migrate(settings: DbSettings) -> None:
    done = await prepare_database(
        dsn=settings.database_url,
        today=datetime.now(UTC).date(),
        days_back=settings.partition_days_back,
        days_ahead=settings.partition_days_ahead,
        retention_days=settings.retention_days,
    )
    log.info(
        "database migrated",
        extra={
            "applied": done.applied,
            "partitions_created": len(done.partitions_created),
            "partitions_dropped": len(done.partitions_dropped),
        },
    )


def _cannot_migrate(url: str, exc: BaseException) -> None:
    # One line with the cause; a traceback would add nothing.
    log.error("cannot migrate: PostgreSQL unreachable or refused", extra=unreachable(url, exc))


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m db",
        description="Database tasks. Settings: DATABASE_URL, RETENTION_DAYS, "
        "PARTITION_DAYS_AHEAD, PARTITION_DAYS_BACK (environment).",
    )
    parser.add_argument(
        "command", choices=["migrate"], help="create the database if needed, migrate, partition"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="retry while PostgreSQL cannot be reached, up to this long (compose start-up)",
    )
    args = parser.parse_args()
    configure_logging(level="INFO", process="db")
    settings = DbSettings()
    try:
        asyncio.run(_migrate_waiting(settings, wait_s=args.wait))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _cannot_migrate(settings.database_url, exc)
        raise SystemExit(1) from None


# Errors that a PostgreSQL still starting (or restarting) gives.
_NOT_YET: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
)


async def _migrate_waiting(settings: DbSettings, *, wait_s: float) -> None:
    """Retries while PostgreSQL is not up yet; gives up when the next try would come after
    `wait_s` (the last error is raised then)."""

    def report(exc: BaseException, retry_in_s: float) -> None:
        log.warning(
            "waiting for PostgreSQL",
            extra=unreachable(settings.database_url, exc, retry_in_s=retry_in_s),
        )

    await retry(
        lambda: migrate(settings),
        on=_NOT_YET,
        first_s=0.5,
        report=report,
        stop=stop_before_delay(wait_s),
    )


if __name__ == "__main__":
    main()
