"""The bridge's NATS source: a JetStream durable pull consumer shared by every bridge.

Robots publish MQTT to any node of a NATS cluster; the stream (`python -m bridge nats-setup`,
ensure_stream below) captures `robots.*.sensors.*` and `robots.*.status` on every node and
replicates them (R3). Each bridge pulls batches from the one durable consumer, so N bridges
split the stream with no group name to guard, and a message a bridge took but did not
acknowledge (it was killed, or its commit is slow) goes to another bridge after the ack wait:
at-least-once, and the idempotent merge absorbs the repeat. Acks are sent only after the batch
committed (Pipeline.flush), as with MQTT.

Pull, not push: a bridge asks for what its inbox has room for, so a slow database holds the
backlog in the stream, not in our memory; max_ack_pending bounds what all bridges hold.
docs/nats.md has the limits, the retention and what the fetch and ack-wait settings trade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api

import nats
from bridge.inbox import InboundMessage, Inbox
from telemetry.logs import unreachable
from telemetry.topics import (
    NATS_MQTT_PREFIX,
    NATS_MQTT_STREAM,
    NATS_READINGS_SUBJECT,
    NATS_STATUS_SUBJECT,
    topic_of_subject,
)

log = logging.getLogger(__name__)

# What a fetch, a bind or an ack meets while a node dies or the consumer's leader moves: the
# client reconnects to another node and the next attempt goes there.
_PASSING_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    TimeoutError,
)


def redact(urls: Sequence[str]) -> str:
    """The servers without their credentials, for log lines."""
    return ",".join(
        f"nats://{p.hostname}:{p.port or 4222}" for p in (urlsplit(u.strip()) for u in urls)
    )


def split_urls(urls: str) -> list[str]:
    """NATS_URLS: comma-separated nats://[user:pass@]host:port, one per node (any subset)."""
    out = [u.strip() for u in urls.split(",") if u.strip()]
    for u in out:
        if urlsplit(u).scheme not in ("nats", "tls"):
            raise ValueError(f"a NATS URL is nats://[user:pass@]host:port, not {u!r}")
    if not out:
        raise ValueError("NATS_URLS names no server")
    return out


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """The stream and the bridges' consumer, as nats-setup creates or updates them."""

    stream: str
    consumer: str
    replicas: int
    max_age_s: float
    max_bytes: int
    ack_wait_s: float
    max_ack_pending: int

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream,
            subjects=[NATS_READINGS_SUBJECT, NATS_STATUS_SUBJECT],
            # Limits, not work-queue: what the bridges acknowledged stays until max_age or
            # max_bytes, so a lost database day can be replayed from the stream by a new
            # consumer (and a work-queue stream would allow no second consumer at all).
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            # Full: the oldest go. A bridge fleet that far behind has lost readings anyway,
            # and a stream refusing new ones would not tell the robots: NATS acknowledges
            # their MQTT publishes once its own `$MQTT_msgs` stored them (docs/nats.md).
            discard=api.DiscardPolicy.OLD,
        )

    def mqtt_stream_config(self) -> api.StreamConfig:
        """`$MQTT_msgs` as NATS's MQTT listener creates it at the account's first MQTT connect
        (server/mqtt.go, mqttCreateAccountSessionManager; it uses one that exists): created
        here when missing, so the bridges' consumer is there before the first robot publishes
        (an interest stream keeps nothing that no consumer wants)."""
        return api.StreamConfig(
            name=NATS_MQTT_STREAM,
            subjects=[NATS_MQTT_PREFIX + ">"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.INTEREST,
            num_replicas=self.replicas,
        )

    def consumer_config(self) -> api.ConsumerConfig:
        """The bridges' consumer, on NATS's own `$MQTT_msgs` (NATS_MQTT_STREAM), not on our
        stream: the MQTT listener acknowledges a QoS 1 publish once `$MQTT_msgs` stored it,
        while our stream takes it like any core NATS message, unacknowledged, and loses what
        arrives while it has no leader (docs/nats.md). `$MQTT_msgs` keeps a message until
        every consumer interested in it acknowledged it (interest retention)."""
        return api.ConsumerConfig(
            durable_name=self.consumer,
            filter_subjects=[
                NATS_MQTT_PREFIX + NATS_READINGS_SUBJECT,
                NATS_MQTT_PREFIX + NATS_STATUS_SUBJECT,
            ],
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            # Never give up on a message: one the database refuses is dead-lettered and acked
            # by the pipeline, so only a bridge that dies keeps a message from its ack.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            # Each pull asks for up to a fetch's worth; a few bridges with a request or two in
            # flight each.
            max_waiting=512,
        )


async def connect(urls: Sequence[str], *, name: str, reconnect_wait_s: float = 0.25) -> NatsClient:
    """Connects to any of the nodes, waiting (and saying why) while none answers; reconnects
    on its own later. A wrong password ends the process: waiting will not fix it."""
    delay = 0.2
    while True:
        try:
            first = urlsplit(urls[0])
            return await nats.connect(
                servers=list(urls),
                name=name,
                # For the nodes the cluster announces, which come without credentials.
                user=first.username,
                password=first.password,
                connect_timeout=2,
                # Forever: a cluster that is down is waited for, as PostgreSQL is.
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_wait_s,
                # Other nodes the cluster announces are tried too, randomised across clients.
                dont_randomize=False,
                error_cb=_log_error,
                disconnected_cb=_disconnected,
                reconnected_cb=_reconnected,
            )
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            log.warning("waiting for NATS", extra=unreachable(redact(urls), exc, retry_in_s=delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _log_error(exc: Exception) -> None:
    log.warning("nats client error", extra={"error": repr(exc)})


async def _disconnected() -> None:
    # Also at a clean close, where nothing reconnects.
    log.info("nats disconnected; the client reconnects to a node unless closing")


async def _reconnected() -> None:
    log.info("nats reconnected")


# JetStream's "no suitable peers for placement": a replicated stream needs that many nodes
# known to be up, and a cluster that is forming, or has a node restarting, has not got them yet.
_NO_PEERS_FOR_PLACEMENT = 10005


def _cluster_not_ready(exc: nats.js.errors.APIError | nats.errors.TimeoutError) -> bool:
    """Also no answer at all: the API request of a node whose meta group is electing a leader
    (the killed node led it) times out."""
    return isinstance(exc, nats.errors.TimeoutError | nats.js.errors.ServiceUnavailableError) or (
        exc.err_code == _NO_PEERS_FOR_PLACEMENT
    )


async def ensure_stream(nc: NatsClient, plan: StreamPlan, *, patience_s: float = 60.0) -> str:
    """Creates or updates the stream and the bridges' consumer (on `$MQTT_msgs`, created as
    NATS would when no MQTT client connected yet); returns what it did.

    While the cluster cannot place the streams yet (a node still joining or restarting), tries
    again with backoff for up to `patience_s`, logging each wait; other refusals raise."""
    delay = 0.5
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await _ensure_stream_once(nc, plan)
        except (nats.js.errors.APIError, nats.errors.TimeoutError) as exc:
            if not _cluster_not_ready(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "JetStream cannot place the streams yet; trying again",
                extra={"error": str(exc), "retry_in_s": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _ensure_stream_once(nc: NatsClient, plan: StreamPlan) -> str:
    js = nc.jetstream()
    try:
        await js.stream_info(NATS_MQTT_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(plan.mqtt_stream_config())
    try:
        await js.stream_info(plan.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(plan.stream_config())
        done = "created"
    else:
        await js.update_stream(plan.stream_config())
        done = "updated"
    # add_consumer with the same durable name updates the settings that may change.
    await js.add_consumer(NATS_MQTT_STREAM, plan.consumer_config())
    return done


class NatsSource:
    """Pulls from the shared durable consumer into the inbox; acks committed messages."""

    def __init__(
        self,
        *,
        urls: Sequence[str],
        stream: str,
        consumer: str,
        client_name: str,
        inbox: Inbox,
        fetch_batch: int,
        fetch_wait_s: float,
    ) -> None:
        self._urls = list(urls)
        self._stream = stream
        self._consumer = consumer
        self._name = client_name
        self._inbox = inbox
        self._fetch_batch = fetch_batch
        self._fetch_wait_s = fetch_wait_s
        self._nc: NatsClient | None = None
        self._sub: nats.js.JetStreamContext.PullSubscription | None = None
        self._bound = asyncio.Event()
        self._refresh_due = False
        self._said_at = -1e9
        self._last_error: BaseException | None = None

    @property
    def address(self) -> str:
        return redact(self._urls)

    @property
    def subscribed(self) -> bool:
        return self._bound.is_set() and self._nc is not None and self._nc.is_connected

    @property
    def last_error(self) -> BaseException | None:
        return self._last_error

    async def __aenter__(self) -> NatsSource:
        self._nc = await connect(self._urls, name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        nc = self._nc
        if nc is None:
            return
        # Taken but not committed (arrived after the last batch): handed back at once, not
        # after the ack wait, so another bridge stores them now.
        left = self._inbox.take(len(self._inbox))
        for m in left:
            if m.reply:
                await nc.publish(m.reply, b"-NAK")
        self._inbox.close()
        # The acks and naks still in the client's buffer go out before the connection closes
        # (what does not is redelivered after the ack wait).
        try:
            await nc.flush(timeout=2)
        except _PASSING_ERRORS as error:
            log.warning(
                "nats flush failed; unacked messages are redelivered", extra={"error": repr(error)}
            )
        await nc.close()

    async def wait_subscribed(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self._bound.wait(), within_s)
        except TimeoutError:
            return False
        return True

    def refresh_statuses(self) -> None:
        """Has the pump replay each robot's last status from the stream (Mosquitto resends
        its retained ones on a new subscription; the stream has them as they came)."""
        self._refresh_due = True

    async def _replay_statuses(self) -> int:
        """Puts each robot's last status into the inbox, through a short-lived consumer of
        the status subjects that starts at the last message per subject (nothing to ack)."""
        assert self._nc is not None
        js = self._nc.jetstream()
        # Created unnamed (`$JS.API.CONSUMER.CREATE.<stream>`, the one create the bridge's user
        # may do): the server names it, and removes it once unused.
        info = await js.add_consumer(
            self._stream,
            config=api.ConsumerConfig(
                filter_subject=NATS_STATUS_SUBJECT,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        sub = await js.pull_subscribe_bind(consumer=info.name, stream=self._stream)
        replayed = 0
        try:
            while (room := min(self._fetch_batch, self._inbox.room())) > 0:
                try:
                    msgs = await sub.fetch(batch=room, timeout=1.0)
                except nats.errors.TimeoutError:
                    break  # all of them delivered
                now = time.time()
                for m in msgs:
                    self._inbox.put(
                        InboundMessage(0, 0, 0, topic_of_subject(m.subject), m.data, now)
                    )
                replayed += len(msgs)
        finally:
            await sub.unsubscribe()
        log.info("statuses replayed from the stream", extra={"statuses": replayed})
        return replayed

    async def _bind(self) -> nats.js.JetStreamContext.PullSubscription:
        assert self._nc is not None
        js = self._nc.jetstream()
        delay = 0.2
        while True:
            try:
                # Bind only: the bridge's user may consume, not create (nats-setup does that).
                await js.consumer_info(NATS_MQTT_STREAM, self._consumer)
                sub = await js.pull_subscribe_bind(
                    durable=self._consumer,
                    stream=NATS_MQTT_STREAM,
                    pending_msgs_limit=self._fetch_batch * 4,
                )
            except _PASSING_ERRORS as exc:
                self._say_unreachable(exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._bound.set()
                self._last_error = None
                log.info(
                    "nats consumer bound",
                    extra={"stream": NATS_MQTT_STREAM, "consumer": self._consumer},
                )
                return sub

    def _say_unreachable(self, exc: BaseException, delay: float) -> None:
        now = time.monotonic()
        if repr(exc) != repr(self._last_error) or now - self._said_at >= 10.0:
            self._said_at = now
            log.warning(
                "cannot read the NATS consumer; retrying",
                extra=unreachable(
                    self.address,
                    exc,
                    retry_in_s=delay,
                    stream=NATS_MQTT_STREAM,
                    consumer=self._consumer,
                ),
            )
        self._last_error = exc

    async def pump(self, stopping: asyncio.Event) -> None:
        sub = await self._bind()
        inbox = self._inbox
        delay = 0.05
        while not stopping.is_set():
            if self._refresh_due:
                self._refresh_due = False
                try:
                    await self._replay_statuses()
                except _PASSING_ERRORS as exc:
                    log.warning("status replay failed; retried", extra={"error": repr(exc)})
                    self._refresh_due = True
            room = min(self._fetch_batch, inbox.room())
            if room < 1:
                # The pipeline is behind (the database is slow or away): leave the backlog in
                # the stream until the inbox has room.
                await asyncio.sleep(0.01)
                continue
            try:
                msgs = await sub.fetch(batch=room, timeout=self._fetch_wait_s)
            except nats.errors.TimeoutError:
                continue  # nothing waiting
            except _PASSING_ERRORS as exc:
                self._say_unreachable(exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._last_error = None
            now = time.time()
            for m in msgs:
                inbox.put(
                    InboundMessage(0, 0, 1, topic_of_subject(m.subject), m.data, now, reply=m.reply)
                )

    async def ack(self, messages: Sequence[InboundMessage]) -> int:
        """Acks each message on its delivery's subject. An ack lost with a dying node or
        connection means one redelivery after the ack wait, which the merge absorbs."""
        nc = self._nc
        assert nc is not None
        acked = 0
        for m in messages:
            if not m.reply:
                continue
            try:
                await nc.publish(m.reply, b"")
            except _PASSING_ERRORS as exc:
                log.warning("ack not sent; the message is redelivered", extra={"error": repr(exc)})
                continue
            acked += 1
        return acked
