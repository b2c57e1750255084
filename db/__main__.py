"""`python -m db migrate`: create the database if needed, apply migrations, create partitions."""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime

import asyncpg
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.migrate import apply_migrations, create_database_if_missing
from db.partitions import maintain_partitions


class DbSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/robosense"
    partition_days_back: int = 8
    partition_days_ahead: int = 3
    retention_days: int = 30


async def migrate(settings: DbSettings) -> None:
    await create_database_if_missing(dsn=settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await apply_migrations(conn)
        created, dropped = await maintain_partitions(
            conn,
            today=datetime.now(UTC).date(),
            days_back=settings.partition_days_back,
            days_ahead=settings.partition_days_ahead,
            retention_days=settings.retention_days,
        )
    finally:
        await conn.close()
    print(
        f"migrations applied: {applied or 'none'}; partitions created: {len(created)}, "
        f"dropped: {len(dropped)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m db")
    parser.add_argument("command", choices=["migrate"])
    parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(migrate(DbSettings()))


if __name__ == "__main__":
    main()
