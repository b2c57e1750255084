"""What the fleet publishes and when, in simulated time, independent of any transport.

A stream is one robot's sensor type. Reading i of a stream was measured at simulated time
`phase + i * period` (milliseconds since the run's start); its `ts` is the start time plus
that, plus the robot's clock skew. A message goes out when its last reading is measured.
Faults move messages in time (late, out of order), add messages (duplicates, malformed) or
take a robot's clock out of the window; every decision comes from a random generator seeded
by (seed, robot, sensor type), so the same seed yields the same messages in the same order,
whichever partition runs the robot and however fast it is driven.

`Schedule.pop` hands out messages in order of their due time; pacing them against the wall
clock, and sending them, is the runner's business (and a benchmark's, which may reuse this).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from enum import IntEnum

from edge_simulator.config import SimulationConfig
from edge_simulator.faults import OUT_OF_WINDOW_MS, FaultConfig, build_malformed
from edge_simulator.signals import Signal, make_signal
from edge_simulator.summary import Summary, Tally
from telemetry.errors import RejectReason
from telemetry.topics import sensor_topic

# Readings per stream of a run until stopped: more than any run will publish.
_UNBOUNDED = 2**62
# A run until stopped drops its connections within its first hour.
_DROP_HORIZON_MS = 3_600_000


class Kind(IntEnum):
    VALID = 0
    DUPLICATE = 1
    OUT_OF_WINDOW = 2
    MALFORMED = 3


class Outgoing:
    """One message to publish, with what it adds to the summary once it is published."""

    __slots__ = (
        "kind",
        "link",
        "n",
        "payload",
        "reason",
        "seq_first",
        "seq_last",
        "tally",
        "topic",
        "ts_first",
        "ts_last",
    )

    def __init__(
        self,
        *,
        kind: Kind,
        link: int,
        topic: str,
        payload: bytes,
        tally: Tally,
        n: int = 0,
        seq_first: int = 0,
        ts_first: int = 0,
        ts_last: int = 0,
        reason: str = "",
    ) -> None:
        self.kind = kind
        self.link = link
        self.topic = topic
        self.payload = payload
        self.tally = tally
        self.n = n
        self.seq_first = seq_first
        self.seq_last = seq_first + n - 1
        self.ts_first = ts_first
        self.ts_last = ts_last
        self.reason = reason

    def count(self) -> None:
        """Adds this message to the summary: call it when the message is handed to MQTT."""
        t = self.tally
        kind = self.kind
        if kind is Kind.VALID:
            t.valid(self.n, self.seq_first, self.seq_last, self.ts_first, self.ts_last)
        elif kind is Kind.DUPLICATE:
            t.messages += 1
            t.duplicate_messages += 1
            t.duplicate_readings += self.n
        elif kind is Kind.OUT_OF_WINDOW:
            t.messages += 1
            t.rejected_readings[self.reason] += self.n
        else:
            t.messages += 1
            t.malformed[self.reason] += 1

    def duplicate(self) -> Outgoing:
        return Outgoing(
            kind=Kind.DUPLICATE,
            link=self.link,
            topic=self.topic,
            payload=self.payload,
            tally=self.tally,
            n=self.n,
        )


@dataclass(frozen=True, slots=True)
class DropEvent:
    """A connection vanishes without DISCONNECT (its Last Will fires) and comes back later."""

    link: int
    down_s: float


class SensorStream:
    __slots__ = (
        "_faults",
        "_frng",
        "_out_reason",
        "_signal",
        "_skew_ms",
        "_topic",
        "batch",
        "count",
        "link",
        "msg_period_ms",
        "next_index",
        "period_ms",
        "phase_ms",
        "robot_id",
        "sensor_type",
        "tally",
        "ts0",
    )

    def __init__(
        self,
        *,
        robot_id: str,
        sensor_type: str,
        rate_hz: float,
        batch: int,
        duration_ms: int,
        start_ts_ms: int,
        skew_ms: int,
        out_reason: str,
        link: int,
        tally: Tally,
        seed: int,
        faults: FaultConfig,
    ) -> None:
        self.robot_id = robot_id
        self.sensor_type = sensor_type
        self.batch = batch
        self.link = link
        self.tally = tally
        self.period_ms = 1000.0 / rate_hz
        self.msg_period_ms = self.period_ms * batch
        self._frng = random.Random(f"{seed}/faults/{robot_id}/{sensor_type}")
        # Robots do not all measure on the same millisecond: spread them over one period.
        self.phase_ms = self._frng.randrange(max(1, int(self.period_ms)))
        self.ts0 = start_ts_ms + skew_ms + self.phase_ms
        if duration_ms == 0:  # until stopped
            self.count = _UNBOUNDED
        else:
            remaining = duration_ms - self.phase_ms
            self.count = max(0, math.ceil(remaining / self.period_ms)) if remaining > 0 else 0
        self.next_index = 0
        self._signal: Signal = make_signal(sensor_type, seed=seed, robot_id=robot_id)
        self._topic = sensor_topic(robot_id, sensor_type)
        self._out_reason = out_reason
        self._skew_ms = skew_ms
        self._faults = faults

    @property
    def done(self) -> bool:
        return self.next_index >= self.count

    def next_due_ms(self) -> float:
        last = min(self.next_index + self.batch, self.count) - 1
        return self.phase_ms + last * self.period_ms

    def produce(self) -> Outgoing:
        first = self.next_index
        last = min(first + self.batch, self.count)
        self.next_index = last
        period = self.period_ms
        ts0 = self.ts0
        phase = self.phase_ms
        reading = self._signal.reading
        parts = []
        for i in range(first, last):
            offset = i * period
            parts.append(reading(i, ts0 + int(offset), (phase + offset) / 1000.0))
        if len(parts) == 1:
            payload = parts[0].encode()
        else:
            payload = ('{"readings":[' + ",".join(parts) + "]}").encode()
        n = last - first
        ts_first, ts_last = ts0 + int(first * period), ts0 + int((last - 1) * period)
        kind = Kind.OUT_OF_WINDOW if self._out_reason else Kind.VALID
        return Outgoing(
            kind=kind,
            link=self.link,
            topic=self._topic,
            payload=payload,
            tally=self.tally,
            n=n,
            seq_first=first,
            ts_first=ts_first,
            ts_last=ts_last,
            reason=self._out_reason,
        )

    def faults_for(self, message: Outgoing, due: float) -> list[tuple[float, Outgoing]]:
        """The message's own send time, plus any copies and malformed companions."""
        f = self._faults
        r = self._frng.random
        sends: list[tuple[float, Outgoing]] = []
        send_at = due
        if f.late and r() < f.late:
            send_at = due + self._frng.uniform(1.0, f.late_max_s) * 1000.0
        elif f.out_of_order and r() < f.out_of_order:
            # Behind the next one to three messages of the same stream.
            send_at = due + self._frng.randint(1, 3) * self.msg_period_ms + 0.5
        sends.append((send_at, message))
        if f.duplicate and message.kind is Kind.VALID and r() < f.duplicate:
            sends.append((send_at + self._frng.uniform(0.0, 500.0), message.duplicate()))
        if f.malformed and r() < f.malformed:
            reason = f.malformed_reasons[self._frng.randrange(len(f.malformed_reasons))]
            bad = build_malformed(
                reason,
                robot_id=self.robot_id,
                sensor_type=self.sensor_type,
                # The true time: a skewed clock would add a second reason to refuse it.
                ts_ms=message.ts_last - self._skew_ms,
                rng=self._frng,
            )
            sends.append(
                (
                    due + 0.25,
                    Outgoing(
                        kind=Kind.MALFORMED,
                        link=self.link,
                        topic=bad.topic,
                        payload=bad.payload,
                        tally=self.tally,
                        reason=str(reason),
                    ),
                )
            )
        return sends


def robot_clock(seed: int, robot_id: str, faults: FaultConfig) -> tuple[int, str]:
    """The robot's clock skew in ms and, when it is outside the window, the reason it is refused."""
    rng = random.Random(f"{seed}/clock/{robot_id}")
    u = rng.random()
    if u < faults.skew_out:
        if rng.random() < 0.5:
            return OUT_OF_WINDOW_MS, str(RejectReason.TS_IN_FUTURE)
        return -OUT_OF_WINDOW_MS, str(RejectReason.TS_TOO_OLD)
    if u < faults.skew_out + faults.skew:
        return int(rng.uniform(-faults.skew_max_s, faults.skew_max_s) * 1000), ""
    return 0, ""


class Schedule:
    """Every message of a run in due order. Not thread-safe; one consumer."""

    def __init__(self, *, config: SimulationConfig, summary: Summary) -> None:
        if config.start_ts_ms is None:
            raise ValueError("the schedule needs the run's start time")
        self._heap: list[tuple[float, int, SensorStream | Outgoing | DropEvent]] = []
        self._order = 0
        self.links = config.connection_groups()
        duration_ms = int(config.duration_s * 1000)
        robots = config.fleet_ids()
        k = config.robots_per_connection
        faults = config.faults
        for index, robot_id in enumerate(robots):
            link = index // k
            skew_ms, out_reason = robot_clock(config.seed, robot_id, faults)
            for sensor_type, rate in sorted(config.mix.items()):
                stream = SensorStream(
                    robot_id=robot_id,
                    sensor_type=sensor_type,
                    rate_hz=rate.rate_hz,
                    batch=rate.batch,
                    duration_ms=duration_ms,
                    start_ts_ms=config.start_ts_ms,
                    skew_ms=skew_ms,
                    out_reason=out_reason,
                    link=link,
                    tally=summary.tally(robot_id, sensor_type),
                    seed=config.seed,
                    faults=faults,
                )
                if not stream.done:
                    self._push(stream.next_due_ms(), stream)
        if faults.drop:
            for link, members in enumerate(self.links):
                # Seeded by the link's first robot: the same connections drop in every run.
                rng = random.Random(f"{config.seed}/drop/{members[0]}")
                if rng.random() < faults.drop:
                    at = rng.uniform(0.2, 0.6) * (duration_ms or _DROP_HORIZON_MS)
                    self._push(at, DropEvent(link, faults.drop_down_s))

    def _push(self, due: float, item: SensorStream | Outgoing | DropEvent) -> None:
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, item))

    def pop(self) -> tuple[float, Outgoing | DropEvent] | None:
        """The next message or drop and its due time; None when the run is complete."""
        heap = self._heap
        while heap:
            due, _, item = heapq.heappop(heap)
            if not isinstance(item, SensorStream):
                return due, item
            message = item.produce()
            if not item.done:
                self._push(item.next_due_ms(), item)
            sends = item.faults_for(message, due)
            if len(sends) == 1 and sends[0][0] == due:
                return due, message
            for at, out in sends:
                self._push(at, out)
        return None
