"""The process's long-lived resources, opened in the lifespan, and their typed dependencies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request

from api.cursor import CursorCodec
from api.group_commit import GroupCommitter
from api.keys import KeyStore, Scope, key_hash
from api.live_hub import LiveHub
from api.live_mqtt import open_live
from api.live_token import LiveTokens
from api.metrics import JOURNAL_REPLAY_FAILURES
from api.settings import ApiSettings
from db.api_keys import find_api_key, insert_api_key
from db.connect import open_pool
from db.read_pool import ReadPool, open_read_pool
from ingest.counters import AnyRedis, Counters, redis_client
from ingest.upkeep import every
from ingest.write import IngestWriter
from mqtt_auth.store import IdentityStore
from telemetry.payload import PayloadDecoder
from telemetry.settings import UnknownRobotPolicy

log = logging.getLogger(__name__)

# Entries the writer could not apply to Redis (Redis was down) wait in the journal; the
# bridge replays them too, and applying one twice is a no-op, so both may.
_REPLAY_EVERY_S = 5.0
_REPLAY_OLDER_THAN_S = 10.0


@dataclass(frozen=True, slots=True)
class Resources:
    settings: ApiSettings
    pool: asyncpg.Pool[Any]
    # For routes that only read: the replica's pool when DATABASE_READ_URL is set, else the
    # same pool; a read is retried once on a dead connection.
    read_pool: ReadPool
    redis: AnyRedis
    counters: Counters
    writer: IngestWriter
    committer: GroupCommitter
    decoder: PayloadDecoder
    cursors: CursorCodec
    # None when MQTT_AUTH_DIR is unset: robots are registered without MQTT identities.
    mqtt_identities: IdentityStore | None
    keys: KeyStore
    live_tokens: LiveTokens
    # None when the API has no MQTT identity for the live stream (api/live_mqtt.py).
    live: LiveHub | None


async def _bootstrap_admin_key(pool: asyncpg.Pool[Any], token: str) -> None:
    # Every worker runs this at start; the insert is a no-op when the id exists, so a key that
    # was revoked stays revoked however often the process restarts with it.
    key_id, secret_hash = key_hash(token)
    inserted = await insert_api_key(
        pool, key_id=key_id, name="bootstrap", scopes=[Scope.ADMIN], secret_hash=secret_hash
    )
    if inserted is not None:
        log.info("bootstrap admin key stored", extra={"key_id": key_id})
        return
    row = await find_api_key(pool, key_id)
    if row is not None and row["revoked_at"] is not None:
        log.warning("API_BOOTSTRAP_ADMIN_KEY is revoked", extra={"key_id": key_id})
    elif row is not None and bytes(row["secret_hash"]) != secret_hash:
        log.error("API_BOOTSTRAP_ADMIN_KEY's id belongs to another key", extra={"key_id": key_id})


@contextlib.asynccontextmanager
async def open_resources(settings: ApiSettings) -> AsyncIterator[Resources]:
    secret = settings.cursor_secret
    if not secret:
        log.warning("CURSOR_SECRET unset: cursors and live tokens are valid for this process only")
        secret = secrets.token_hex(32)
    async with (
        open_pool(
            dsn=settings.database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            application_name="robosense-api",
        ) as pool,
        open_read_pool(
            pool,
            read_url=settings.database_read_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            application_name="robosense-api-reads",
        ) as read_pool,
        open_live(settings) as live,
    ):
        if settings.api_bootstrap_admin_key is not None:
            await _bootstrap_admin_key(pool, settings.api_bootstrap_admin_key.get_secret_value())
        redis = redis_client(settings.redis_url, cluster=settings.redis_cluster)
        counters = Counters(
            redis=redis, prefix=settings.redis_prefix, shards=settings.redis_counter_shards
        )
        writer = IngestWriter(
            pool=pool,
            counters=counters,
            register_unknown_robots=settings.unknown_robot_policy is UnknownRobotPolicy.REGISTER,
            # The client reads each refusal in the response; dead_letters is for what MQTT
            # cannot answer. Refusals are still counted (stats) through the journal entry.
            store_rejections=False,
        )
        committer = GroupCommitter(
            writer,
            max_readings=settings.ingest_batch_readings,
            max_wait_s=settings.ingest_batch_wait_ms / 1000,
            max_inflight=settings.ingest_max_inflight,
        )
        committer.start()
        stopping = asyncio.Event()
        replay = asyncio.create_task(
            every(
                lambda: writer.replay_journal(older_than_s=_REPLAY_OLDER_THAN_S),
                interval_s=_REPLAY_EVERY_S,
                stopping=stopping,
                name="journal-replay",
                failed=JOURNAL_REPLAY_FAILURES.inc,
            ),
            name="journal-replay",
        )
        # Key lookups are reads too (one that meets a connection PostgreSQL dropped is retried),
        # but of the primary: a key works as soon as it is created, and stops when revoked.
        primary_reads = read_pool if not read_pool.replica else ReadPool(pool)
        try:
            yield Resources(
                settings=settings,
                pool=pool,
                read_pool=read_pool,
                redis=redis,
                counters=counters,
                writer=writer,
                committer=committer,
                decoder=PayloadDecoder(window=settings.time_window),
                cursors=CursorCodec(secret.encode()),
                mqtt_identities=IdentityStore(files) if (files := settings.files) else None,
                keys=KeyStore(primary_reads, ttl_s=settings.api_key_cache_ttl_s),
                live_tokens=LiveTokens(secret.encode(), ttl_s=settings.live_token_ttl_s),
                live=live,
            )
        finally:
            stopping.set()
            await replay
            await committer.close()
            await redis.aclose()


async def _resources(request: Request) -> Resources:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off on
    # every request, a visible share of the API's CPU (BENCHMARKS.md, "Measurements behind
    # design choices").
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]
