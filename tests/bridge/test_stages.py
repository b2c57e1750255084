"""The bridge's stages in process (inbox, batcher, pipeline), without a broker or a bridge
process: fast, and able to reach paths the process tests cannot aim at."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import orjson
import pytest

from bridge.batcher import BatchBuilder
from bridge.inbox import InboundMessage, Inbox
from bridge.pipeline import Pipeline, ShutdownWithUncommittedBatchError
from bridge.source import Source
from ingest.counters import Counters
from ingest.write import IngestWriter, WriteResult
from telemetry.errors import RejectReason
from telemetry.payload import PayloadDecoder, Reading, Rejection, TimeWindow


def _message(topic: str, payload: bytes, *, mid: int = 1) -> InboundMessage:
    return InboundMessage(
        generation=1, mid=mid, qos=1, topic=topic, payload=payload, received_at=time.time()
    )


def _reading(robot: str, ts: datetime, seq: int) -> Reading:
    return Reading(robot, "battery", ts, datetime.now(UTC), seq, f'{{"level": {seq % 100}}}')


class FakeSubscriber:
    """What the pipeline needs of a Source: acks, recorded in order."""

    subscribed = True

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.acked: list[int] = []

    async def ack(self, messages: Iterable[InboundMessage]) -> int:
        mids = [m.mid for m in messages]
        self.acked.extend(mids)
        self.events.append(f"ack {len(mids)}")
        return len(mids)


class FakeWriter:
    """An IngestWriter that fails `failures` times with `error`, then records the batch."""

    def __init__(self, events: list[str], *, failures: int = 0, error: Exception | None = None):
        self.events = events
        self.failures = failures
        self.error = error or ConnectionRefusedError("database is away")
        self.written: list[Reading] = []

    async def write(
        self, readings: Sequence[Reading], rejections: Sequence[Rejection] = ()
    ) -> WriteResult:
        if self.failures:
            self.failures -= 1
            self.events.append("write failed")
            raise self.error
        self.written.extend(readings)
        self.events.append(f"commit {len(readings)}")
        return WriteResult(
            received=len(readings),
            inserted=len(readings),
            unknown_robots=frozenset(),
            rejected=Counter(str(x.reason) for x in rejections),
        )


def _pipeline(
    writer: object, subscriber: FakeSubscriber, *, counters: Counters | None = None, **kw: Any
) -> Pipeline:
    loop = asyncio.get_running_loop()
    return Pipeline(
        inbox=Inbox(loop=loop, high_water=1000),
        subscriber=cast(Source, subscriber),
        builder=BatchBuilder(decoder=PayloadDecoder(window=kw.pop("window", TimeWindow()))),
        writer=cast(IngestWriter, writer),
        counters=cast(Counters, counters),
        batch_max_readings=kw.pop("batch_max_readings", 100),
        batch_max_delay_s=kw.pop("batch_max_delay_s", 0.02),
        batch_min_delay_s=kw.pop("batch_min_delay_s", 0.002),
        stop_grace_s=kw.pop("stop_grace_s", 10.0),
        **kw,
    )


# Inbox


async def test_inbox_wakes_a_waiting_consumer_from_another_thread() -> None:
    inbox = Inbox(loop=asyncio.get_running_loop(), high_water=10)
    waiter = asyncio.create_task(inbox.wait(5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    threading.Thread(target=inbox.put, args=(_message("t", b"1"),)).start()
    await asyncio.wait_for(waiter, 2.0)
    assert [m.payload for m in inbox.take(10)] == [b"1"]


async def test_inbox_wait_returns_after_its_timeout_when_nothing_comes() -> None:
    inbox = Inbox(loop=asyncio.get_running_loop(), high_water=10)
    started = time.monotonic()
    await inbox.wait(0.05)
    assert time.monotonic() - started < 1.0
    assert inbox.take(10) == []


async def test_inbox_take_is_bounded_and_keeps_order() -> None:
    inbox = Inbox(loop=asyncio.get_running_loop(), high_water=100)
    for i in range(5):
        inbox.put(_message("t", str(i).encode(), mid=i))
    assert [m.mid for m in inbox.take(3)] == [0, 1, 2]
    assert len(inbox) == 2
    assert [m.mid for m in inbox.take(10)] == [3, 4]


async def test_inbox_blocks_the_producer_at_high_water_until_taken() -> None:
    inbox = Inbox(loop=asyncio.get_running_loop(), high_water=2)
    inbox.put(_message("t", b"0", mid=0))
    inbox.put(_message("t", b"1", mid=1))
    third = threading.Thread(target=inbox.put, args=(_message("t", b"2", mid=2),))
    third.start()
    third.join(0.2)
    assert third.is_alive(), "the producer should block at high water"
    assert len(inbox) == 2
    inbox.take(1)
    third.join(2.0)
    assert not third.is_alive()
    assert [m.mid for m in inbox.take(10)] == [1, 2]


async def test_inbox_close_releases_a_blocked_producer() -> None:
    inbox = Inbox(loop=asyncio.get_running_loop(), high_water=1)
    inbox.put(_message("t", b"0"))
    blocked = threading.Thread(target=inbox.put, args=(_message("t", b"1"),))
    blocked.start()
    blocked.join(0.1)
    assert blocked.is_alive()
    inbox.close()
    blocked.join(2.0)
    assert not blocked.is_alive()


# Batcher


def test_batcher_decodes_readings_refuses_bad_topics_and_collects_statuses() -> None:
    builder = BatchBuilder(decoder=PayloadDecoder(window=TimeWindow()))
    now_ms = int(time.time() * 1000)
    builder.add(
        _message("robots/r1/sensors/battery", orjson.dumps({"ts": now_ms, "data": {"level": 50}}))
    )
    builder.add(_message("robots/r1/nonsense", b"{}"))
    builder.add(_message("robots/r2/status", b"online"))
    builder.add(_message("robots/r3/status", b""))  # a cleared retained status: nothing to say
    batch = builder.take()
    assert len(batch.messages) == 4
    assert [(r.robot_id, r.sensor_type) for r in batch.decoded.readings] == [("r1", "battery")]
    assert [x.reason for x in batch.decoded.rejections] == [RejectReason.BAD_TOPIC]
    assert list(batch.statuses) == ["r2"]
    assert batch.statuses["r2"][0] == "online"
    assert batch.size == 2
    assert not builder.batch, "take() starts a new batch"


# Pipeline with a fake writer


async def _run(pipeline: Pipeline, messages: Sequence[InboundMessage]) -> None:
    for m in messages:
        pipeline.inbox.put(m)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pipeline.collect())
        tg.create_task(pipeline.flush())
        await asyncio.sleep(0.2)
        pipeline.stop()


def _battery_messages(n: int) -> list[InboundMessage]:
    now_ms = int(time.time() * 1000)
    return [
        _message(
            f"robots/r{i % 3}/sensors/battery",
            orjson.dumps({"ts": now_ms + i, "data": {"level": 50}}),
            mid=i,
        )
        for i in range(n)
    ]


async def test_pipeline_acks_a_batch_only_after_it_committed() -> None:
    events: list[str] = []
    subscriber = FakeSubscriber(events)
    writer = FakeWriter(events)
    await _run(_pipeline(writer, subscriber), _battery_messages(10))
    assert len(writer.written) == 10
    assert sorted(subscriber.acked) == list(range(10))
    assert events[0].startswith("commit"), events
    commits = [e for e in events if e.startswith("commit")]
    acks = [e for e in events if e.startswith("ack")]
    assert len(commits) == len(acks)
    for i, e in enumerate(events):
        if e.startswith("ack"):
            assert events[i - 1].startswith("commit"), events


async def test_pipeline_retries_a_database_outage_before_acking() -> None:
    events: list[str] = []
    subscriber = FakeSubscriber(events)
    writer = FakeWriter(events, failures=2)
    await _run(_pipeline(writer, subscriber), _battery_messages(5))
    assert events[:2] == ["write failed", "write failed"]
    assert events[2:] == ["commit 5", "ack 5"]


async def test_pipeline_stop_during_outage_gives_up_unacknowledged() -> None:
    events: list[str] = []
    subscriber = FakeSubscriber(events)
    writer = FakeWriter(events, failures=1_000)
    pipeline = _pipeline(writer, subscriber, stop_grace_s=0.3)
    with pytest.raises(ExceptionGroup) as caught:
        await _run(pipeline, _battery_messages(5))
    assert caught.group_contains(ShutdownWithUncommittedBatchError)
    assert "write failed" in events
    assert subscriber.acked == []


# Batch halving, against real PostgreSQL: a reading the payload check passed but PostgreSQL
# refuses (its timestamp has no partition) is found by halving and dead-lettered alone.


async def test_pipeline_isolates_a_row_postgresql_refuses(
    registered: asyncpg.Pool[Any], counters: Counters
) -> None:
    events: list[str] = []
    subscriber = FakeSubscriber(events)
    writer = IngestWriter(pool=registered, counters=counters)
    # A time window wide enough to let a reading from 2001 through: it passes the payload
    # check, and PostgreSQL refuses it (no partition for its day).
    wide = TimeWindow(max_age=timedelta(days=40 * 365))
    pipeline = _pipeline(writer, subscriber, counters=counters, window=wide)
    now_ms = int(time.time() * 1000)
    in_2001_ms = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp() * 1000)
    readings = [{"ts": now_ms - i, "seq": i, "data": {"level": 50}} for i in range(7)]
    readings.insert(5, {"ts": in_2001_ms, "seq": 99, "data": {"level": 50}})
    message = _message("robots/r1/sensors/battery", orjson.dumps({"readings": readings}), mid=7)
    await _run(pipeline, [message])

    assert subscriber.acked == [7]
    stored = await registered.fetch("SELECT seq FROM sensor_readings ORDER BY seq")
    assert [r["seq"] for r in stored] == list(range(7))
    letters = await registered.fetch("SELECT topic, reason, detail, payload FROM dead_letters")
    assert len(letters) == 1
    assert letters[0]["topic"] == "robots/r1/sensors/battery"
    assert letters[0]["reason"] == RejectReason.REJECTED_BY_DATABASE
    assert "partition" in letters[0]["detail"]
    assert orjson.loads(letters[0]["payload"])["seq"] == 99
