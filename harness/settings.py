"""Where the harness makes its private databases and Redis prefixes: the servers it uses.

Read once by an entry point (tests/conftest.py as TEST_*, each loadtest command as BENCH_*)
and passed down; nothing in harness/ or loadtest/ reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from telemetry.settings import DEFAULT_POSTGRES_URL, DEFAULT_REDIS_URL, EntryPointSettings


class HarnessSettings(EntryPointSettings):
    """TEST_POSTGRES_URL (a server: each run creates a database of its own there),
    TEST_REDIS_URL (each run uses a key prefix of its own), and TEST_PG_BIN (the PostgreSQL
    binaries for the private clusters of harness/postgres.py)."""

    model_config = SettingsConfigDict(env_prefix="TEST_", extra="ignore")

    postgres_url: str = DEFAULT_POSTGRES_URL
    redis_url: str = DEFAULT_REDIS_URL
    pg_bin: Path = Path("/usr/lib/postgresql/15/bin")


class BenchSettings(HarnessSettings):
    """The same for benchmarks: BENCH_POSTGRES_URL, BENCH_REDIS_URL."""

    model_config = SettingsConfigDict(env_prefix="BENCH_", extra="ignore")
