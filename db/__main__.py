"""`python -m db migrate`: create the database if needed, apply migrations, create partitions."""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime

from db.migrate import prepare_database
from telemetry.settings import ServiceSettings


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
    print(
        f"migrations applied: {done.applied or 'none'}; "
        f"partitions created: {len(done.partitions_created)}, "
        f"dropped: {len(done.partitions_dropped)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m db")
    parser.add_argument("command", choices=["migrate"])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(migrate(DbSettings()))


if __name__ == "__main__":
    main()
