"""Applies db/migrations/NNNN_*.sql in order, each once, under an advisory lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from db.partitions import maintain_partitions

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x5253_4D49  # any constant shared by every migrating process


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        migrations.append(Migration(int(number), name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return migrations


async def create_database_if_missing(*, dsn: str) -> bool:
    """Connects to the server's `postgres` database and creates the DSN's database if absent."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = await admin.fetchval("SELECT quote_ident($1)", name)
        try:
            await admin.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        log.info("created database", extra={"database": name})
        return True
    finally:
        await admin.close()


async def apply_migrations(conn: asyncpg.Connection[Any]) -> list[int]:
    """Applies what is not applied yet; returns the versions it applied."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration", extra={"version": migration.version})
            applied.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied


@dataclass(frozen=True, slots=True)
class Prepared:
    applied: list[int]
    partitions_created: list[str]
    partitions_dropped: list[str]


async def prepare_database(
    *, dsn: str, today: date, days_back: int, days_ahead: int, retention_days: int
) -> Prepared:
    """Everything a fresh or existing database needs before the pipeline writes to it."""
    await create_database_if_missing(dsn=dsn)
    conn = await asyncpg.connect(dsn)
    try:
        applied = await apply_migrations(conn)
        created, dropped = await maintain_partitions(
            conn,
            today=today,
            days_back=days_back,
            days_ahead=days_ahead,
            retention_days=retention_days,
        )
    finally:
        await conn.close()
    return Prepared(applied, created, dropped)
