"""The API process's settings, read once from the environment."""

from __future__ import annotations

from datetime import tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator

from api.keys import key_hash
from mqtt_auth.settings import MqttAuthSettings


class ApiSettings(MqttAuthSettings):
    """MQTT_AUTH_DIR and MOSQUITTO_PID_FILE (inherited): where the API writes the MQTT
    identities of the robots it registers, and the broker to reload (docs/security.md); the
    rest of what every process shares comes from telemetry.settings.ServiceSettings."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)

    # Each worker holds its own pool; a handful of connections per worker is what a 2-core
    # database serves best, and the group committer needs only one or two of them.
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    # A streaming replica for the read routes (docs/scaling.md, "Read replicas"); unset, they
    # read the primary (DATABASE_URL). Writes, key checks and read-your-writes stay on it.
    database_read_url: str | None = None

    # Signs keyset cursors and live-stream tokens. Empty: `python -m api` makes one per run
    # and hands it to its workers, so both stay valid across workers but not restarts.
    cursor_secret: str = ""

    # API keys (docs/security.md). A whole key (`python -m api keys generate` prints a fresh
    # one), stored hashed on start as an admin key named "bootstrap" unless its id exists.
    api_bootstrap_admin_key: SecretStr | None = None
    # How long a worker trusts a verified key: revocation reaches every worker within it.
    api_key_cache_ttl_s: float = Field(default=0.5, gt=0, lt=1.0)

    # HTTP ingest. The body limit matches the MQTT payload limit times a few sensor types.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    ingest_batch_readings: int = Field(default=5000, ge=1)
    # Group commit (api/group_commit.py): a longer wait and fewer commits in flight make fewer,
    # larger batches, and most of a commit's cost is per batch (BENCHMARKS.md, "Issue 15, round
    # 8"). Two in flight, not one: with one, a slow commit stalls the worker's whole ingest.
    ingest_batch_wait_ms: float = Field(default=4.0, ge=0.0)
    ingest_max_inflight: int = Field(default=2, ge=1)

    # The HTTP edge, per worker (docs/api.md, "Limits and load shedding"; BENCHMARKS.md).
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_timeout_s: int = Field(default=5, ge=1)
    max_connections: int = Field(default=1000, ge=1)
    max_concurrent_requests: int = Field(default=64, ge=1)
    retry_after_s: int = Field(default=1, ge=1)

    # The live stream (docs/api.md, "Live stream"), per worker. A token only opens a stream.
    live_token_ttl_s: float = Field(default=60.0, gt=0, le=3600)
    live_max_clients: int = Field(default=500, ge=1)
    # Events waiting for one slow client; past it its oldest summaries are dropped (counted).
    live_client_max_bytes: int = Field(default=256 * 1024, ge=4096)
    # An SSE comment this often keeps proxies from closing an idle stream; the stream also
    # checks its key is still valid at this interval.
    live_heartbeat_s: float = Field(default=15.0, gt=0)
    live_reconnect_max_s: float = Field(default=30.0, gt=0)
    # The subscriber's MQTT identity (role `api`, reads fleet/# only): MQTT_URL's user, for one
    # worker; with LIVE_PROVISION_IDENTITY each worker adds its own to MQTT_AUTH_DIR at start
    # (the broker makes the username the client id: workers sharing one would evict each
    # other) and removes it when it stops. Neither: no live stream on this server.
    live_provision_identity: bool = False

    # The older clients' `timestamp` without a zone: an IANA zone to read it in (the older
    # service took UTC), or `reject` to refuse it (docs/migrating.md).
    naive_timestamp_tz: str = "UTC"

    @field_validator("naive_timestamp_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "reject":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"not an IANA time zone nor `reject`: {value!r}") from exc
        return value

    @property
    def naive_tz(self) -> tzinfo | None:
        return None if self.naive_timestamp_tz == "reject" else ZoneInfo(self.naive_timestamp_tz)

    @field_validator("api_bootstrap_admin_key")
    @classmethod
    def _well_formed_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            key_hash(value.get_secret_value())  # ValueError names the format
            return value
        return None
