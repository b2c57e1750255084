"""What every process's settings share: one base that each entry point's settings extend.

Only entry points (`python -m bridge`, `api`, `db`, `edge_simulator`, the `loadtest` commands,
tests/conftest.py) instantiate settings, so only they read the environment; everything below
them takes values as arguments.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from telemetry.payload import TimeWindow
from telemetry.topics import DEFAULT_MQTT_URL

# The PostgreSQL server; our database on it; the Redis server.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_DATABASE_URL = f"{DEFAULT_POSTGRES_URL}/robosense"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class UnknownRobotPolicy(StrEnum):
    REJECT = "reject"
    REGISTER = "register"


class MqttTarget:
    """What an MQTT URL (mqtt://user:pass@host:port) names."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "mqtt":
            raise ValueError(f"an MQTT URL must be mqtt://[user:pass@]host[:port], not {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        # MQTT's registered port when the URL names none (ours, 1884, is in DEFAULT_MQTT_URL).
        self.port = parts.port or 1883
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __str__(self) -> str:
        """For logs: who and where, never the password."""
        who = f"{self.username}@" if self.username else ""
        return f"mqtt://{who}{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"MqttTarget({self})"


class EntryPointSettings(BaseSettings):
    """The base of every settings class: read from the environment (variable names are the
    field names, upper case, after the class's env_prefix), once, by an entry point."""

    model_config = SettingsConfigDict(extra="ignore")


class ServiceSettings(EntryPointSettings):
    """What the services (bridge, API, db, simulator) share."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "rs:"
    # REDIS_URL names any node of a Redis Cluster when this is set (docs/scaling.md).
    redis_cluster: bool = False
    # Counter key shards (ingest/counters.py); every process must agree. One server: 1; a
    # cluster: at least its number of masters, so that each master applies a share.
    redis_counter_shards: int = Field(default=1, ge=1, le=64)
    mqtt_url: str = DEFAULT_MQTT_URL
    log_level: str = "INFO"

    unknown_robot_policy: UnknownRobotPolicy = UnknownRobotPolicy.REJECT
    # How far a reading's clock may be from ours (docs/protocol.md, "Time limits"); the bridge
    # and HTTP ingest must agree, so both take it from here.
    max_future_s: float = Field(default=300.0, gt=0)
    max_age_s: float = Field(default=7 * 86_400.0, gt=0)
    # New container objects between two young collections of Python's cyclic garbage
    # collector (telemetry/collector.py); CPython's default is 700.
    gc_young_threshold: int = Field(default=100_000, ge=700)

    @property
    def mqtt(self) -> MqttTarget:
        return MqttTarget(self.mqtt_url)

    @property
    def time_window(self) -> TimeWindow:
        return TimeWindow(
            max_future=timedelta(seconds=self.max_future_s),
            max_age=timedelta(seconds=self.max_age_s),
        )
