"""Wiring: opens every resource in one place and runs the loops under one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from bridge import metrics
from bridge.batcher import BatchBuilder
from bridge.counter_care import CounterCare
from bridge.health import HealthServer, ReadinessProbe, watch_readiness
from bridge.inbox import Inbox
from bridge.mqtt import MqttSubscriber
from bridge.nats import NatsSource, StreamPlan, connect, ensure_stream, split_urls
from bridge.pipeline import Pipeline, ShutdownWithUncommittedBatchError
from bridge.settings import PUBLIC_SHARE_GROUP, BridgeSettings, BridgeSource
from bridge.source import Source
from db.connect import open_pool
from db.errors import DATABASE_AWAY_ERRORS
from db.partitions import maintain_partitions
from ingest.counters import COUNTERS_AWAY_ERRORS, Counters, open_redis
from ingest.dead_letter_limit import DeadLetterLimit
from ingest.rebuild import rebuild_counters
from ingest.upkeep import every
from ingest.write import IngestWriter
from telemetry.logs import unreachable
from telemetry.payload import PayloadDecoder
from telemetry.retry import retry
from telemetry.settings import UnknownRobotPolicy

log = logging.getLogger(__name__)


# A database that does not exist yet is what `python -m db migrate` has not created yet.
_WAIT_FOR_DB_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_AWAY_ERRORS,
    asyncpg.InvalidCatalogNameError,
)


_OpenedPool: TypeAlias = "tuple[AbstractAsyncContextManager[asyncpg.Pool[Any]], asyncpg.Pool[Any]]"


@asynccontextmanager
async def open_pool_with_retry(settings: BridgeSettings) -> AsyncIterator[asyncpg.Pool[Any]]:
    """PostgreSQL may be starting, restarting or away: wait for it, saying where and why.

    A refusal that waiting cannot fix (a wrong password, say) ends the process instead.
    """

    async def open_it() -> _OpenedPool:
        pool_cm = open_pool(
            dsn=settings.database_url,
            min_size=1,
            max_size=2,
            application_name="robosense-bridge",
        )
        return pool_cm, await pool_cm.__aenter__()

    try:
        pool_cm, pool = await retry(
            open_it,
            on=_WAIT_FOR_DB_ERRORS,
            first_s=0.2,
            report=lambda exc, retry_in_s: _waiting(
                "PostgreSQL", settings.database_url, exc, retry_in_s
            ),
        )
    except asyncpg.PostgresError as exc:
        # The cause is in the line; a traceback would add nothing.
        log.error(  # noqa: TRY400
            "PostgreSQL refused the bridge", extra=unreachable(settings.database_url, exc)
        )
        raise SystemExit(2) from None
    try:
        yield pool
    finally:
        await pool_cm.__aexit__(None, None, None)


def _waiting(service: str, url: str, exc: BaseException, retry_in_s: float) -> None:
    metrics.SERVICE_WAITS.labels(service.lower()).inc()
    log.warning(f"waiting for {service}", extra=unreachable(url, exc, retry_in_s=retry_in_s))


async def run(settings: BridgeSettings) -> None:
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool_with_retry(settings))
        redis = await stack.enter_async_context(
            open_redis(settings.redis_url, cluster=settings.redis_cluster)
        )
        counters = Counters(
            redis=redis, prefix=settings.redis_prefix, shards=settings.redis_counter_shards
        )
        writer = IngestWriter(
            pool=pool,
            counters=counters,
            register_unknown_robots=settings.unknown_robot_policy is UnknownRobotPolicy.REGISTER,
            dead_letter_limit=DeadLetterLimit(
                per_source=settings.dead_letters_per_source_per_minute,
                total=settings.dead_letters_per_minute,
            ),
        )

        async def keep_partitions() -> None:
            async with pool.acquire() as conn:
                created, dropped = await maintain_partitions(
                    conn,
                    today=datetime.now(UTC).date(),
                    days_back=settings.partition_days_back,
                    days_ahead=settings.partition_days_ahead,
                    retention_days=settings.retention_days,
                )
            if created or dropped:
                # `created` is a LogRecord attribute: as an `extra` key it made logging raise.
                log.info(
                    "partitions maintained",
                    extra={"partitions_created": created, "partitions_dropped": dropped},
                )

        await keep_partitions()
        # Redis may be starting or away too: the first replay waits for it.
        await retry(
            lambda: writer.keep_counters(replay_older_than_s=0),
            on=COUNTERS_AWAY_ERRORS,
            first_s=0.2,
            report=lambda exc, retry_in_s: _waiting("Redis", settings.redis_url, exc, retry_in_s),
        )

        inbox = Inbox(loop=loop, high_water=settings.inbox_high_water)
        subscriber: Source = await stack.enter_async_context(_source(settings, inbox))
        pipeline = Pipeline(
            inbox=inbox,
            subscriber=subscriber,
            builder=BatchBuilder(decoder=PayloadDecoder(window=settings.time_window)),
            writer=writer,
            counters=counters,
            batch_max_readings=settings.batch_max_readings,
            batch_max_delay_s=settings.batch_max_delay_ms / 1000,
            batch_min_delay_s=settings.batch_min_delay_ms / 1000,
            stop_grace_s=settings.stop_grace_s,
        )
        probe = ReadinessProbe(
            subscribed=lambda: subscriber.subscribed,
            oldest_waiting=pipeline.oldest_waiting,
            last_commit=lambda: pipeline.last_commit_at,
            waiting=pipeline.waiting,
            stall_after_s=settings.stall_after_s,
        )
        health = HealthServer(host=settings.metrics_host, port=settings.metrics_port, probe=probe)
        stack.callback(health.close)
        care = CounterCare(
            pool=pool,
            counters=counters,
            writer=writer,
            subscriber=subscriber,
            replay_older_than_s=settings.journal_replay_interval_s,
            reconcile_interval_s=settings.reconcile_interval_s,
            reconcile_minutes=settings.reconcile_minutes,
            full_window_minutes=counters.ttl_s // 60,
        )

        retention = timedelta(days=settings.dead_letter_retention_days)
        periodic: dict[str, tuple[float, Callable[[], Awaitable[object]]]] = {
            "partitions": (settings.partition_interval_s, keep_partitions),
            "housekeeping": (
                settings.partition_interval_s,
                lambda: care.housekeeping(dead_letter_retention=retention),
            ),
            # The journal replay (or a rebuild), then the reconciliation when due.
            "counters": (settings.journal_replay_interval_s, care.round),
        }

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.stop)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(health.serve(stopping=pipeline.stopping), name="health")
                tg.create_task(watch_readiness(probe, stopping=pipeline.stopping), name="readiness")
                tg.create_task(subscriber.pump(pipeline.stopping), name="source")
                tg.create_task(pipeline.collect(), name="collector")
                tg.create_task(pipeline.flush(), name="flusher")
                for name, (interval_s, job) in periodic.items():
                    tg.create_task(
                        every(
                            job,
                            interval_s=interval_s,
                            stopping=pipeline.stopping,
                            name=name,
                            failed=metrics.JOB_FAILURES.labels(name).inc,
                        ),
                        name=name,
                    )
                if await subscriber.wait_subscribed(within_s=30):
                    log.info(
                        "bridge ready",
                        extra={
                            "client_id": settings.bridge_client_id,
                            "source": str(settings.bridge_source),
                            "address": subscriber.address,
                        },
                    )
                else:
                    log.warning(
                        "not subscribed after 30 s; still trying",
                        extra=unreachable(subscriber.address, subscriber.last_error),
                    )
        except* ShutdownWithUncommittedBatchError as group:
            log.error(str(group.exceptions[0]))  # noqa: TRY400 - expected; no traceback needed
            raise SystemExit(1) from None
        log.info("bridge stopped cleanly")


def _source(settings: BridgeSettings, inbox: Inbox) -> MqttSubscriber | NatsSource:
    """BRIDGE_SOURCE: Mosquitto (the default) or the NATS cluster's shared consumer."""
    if settings.bridge_source is BridgeSource.NATS:
        return NatsSource(
            urls=split_urls(settings.nats_urls),
            stream=settings.nats_stream,
            consumer=settings.nats_consumer,
            client_name=settings.bridge_client_id,
            inbox=inbox,
            fetch_batch=settings.nats_fetch_batch,
            fetch_wait_s=settings.nats_fetch_wait_s,
        )
    if settings.share_group == PUBLIC_SHARE_GROUP:
        log.warning(
            "SHARE_GROUP is the public name robosense: any client of the broker can join the "
            "group and take readings from it; set the secret one (docs/security.md)"
        )
    return MqttSubscriber(
        target=settings.mqtt,
        client_id=settings.bridge_client_id,
        share_group=settings.share_group,
        inbox=inbox,
    )


def stream_plan(settings: BridgeSettings) -> StreamPlan:
    return StreamPlan(
        stream=settings.nats_stream,
        consumer=settings.nats_consumer,
        replicas=settings.nats_replicas,
        max_age_s=settings.nats_max_age_days * 86_400,
        max_bytes=settings.nats_max_bytes,
        ack_wait_s=settings.nats_ack_wait_s,
        max_ack_pending=settings.nats_max_ack_pending,
    )


async def nats_setup(settings: BridgeSettings) -> str:
    """Creates or updates the stream and the bridges' consumer (NATS_URLS with a user that
    may manage streams, not the bridges' own)."""
    nc = await connect(split_urls(settings.nats_urls), name="robosense-nats-setup")
    try:
        return await ensure_stream(nc, stream_plan(settings))
    finally:
        await nc.close()


async def rebuild(settings: BridgeSettings) -> int:
    async with (
        open_pool(dsn=settings.database_url) as pool,
        open_redis(settings.redis_url, cluster=settings.redis_cluster) as redis,
    ):
        counters = Counters(
            redis=redis, prefix=settings.redis_prefix, shards=settings.redis_counter_shards
        )
        return await rebuild_counters(pool=pool, counters=counters)
