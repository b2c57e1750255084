"""Turns inbound MQTT messages into batches of readings, refusals and statuses."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.inbox import InboundMessage
from telemetry.errors import ContractError, RejectReason
from telemetry.payload import Decoded, PayloadDecoder, Rejection
from telemetry.topics import SensorTopic, parse_sensor_topic, parse_status_topic

log = logging.getLogger(__name__)

_STATUSES = frozenset({"online", "offline"})

# Topics repeat (one per robot and sensor type): parse each once. Bad topics raise and so are
# never cached; the cache bound keeps a fleet of random ids from growing it without end.
_parse_topic = functools.lru_cache(maxsize=65_536)(parse_sensor_topic)


@dataclass(slots=True)
class Batch:
    decoded: Decoded = field(default_factory=Decoded)
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: dict[str, tuple[str, int]] = field(default_factory=dict)
    retained_readings: int = 0
    oldest_received_at: float = 0.0

    @property
    def size(self) -> int:
        return len(self.decoded.readings) + len(self.decoded.rejections)

    def __bool__(self) -> bool:
        return bool(self.messages)


class BatchBuilder:
    def __init__(self, *, decoder: PayloadDecoder) -> None:
        self._decoder = decoder
        self.batch = Batch()

    def take(self) -> Batch:
        batch, self.batch = self.batch, Batch()
        return batch

    def add(self, message: InboundMessage) -> None:
        batch = self.batch
        if not batch.messages:
            batch.oldest_received_at = message.received_at
        batch.messages.append(message)
        topic = message.topic
        status_robot = parse_status_topic(topic)
        if status_robot is not None:
            self._add_status(batch, status_robot, message)
            return
        if message.retained:
            # Robots must not retain readings (docs/protocol.md). A retained message on a
            # reading topic was processed when it was published live (delivered to us with
            # the retain flag clear); the copy the broker replays at each subscription is
            # acknowledged and counted, not stored or dead-lettered again.
            batch.retained_readings += 1
            return
        received_at = datetime.fromtimestamp(message.received_at, UTC)
        try:
            parsed: SensorTopic = _parse_topic(topic)
        except ContractError as exc:
            batch.decoded.rejections.append(
                Rejection.of(received_at, topic, exc.reason, exc.detail, message.payload)
            )
            return
        try:
            self._decoder.decode(
                robot_id=parsed.robot_id,
                sensor_type=parsed.sensor_type,
                topic=topic,
                payload=message.payload,
                received_at=received_at,
                into=batch.decoded,
            )
        except Exception as exc:
            # The decoder refuses bad input with a reason; reaching here is a decoder bug
            # that this message's content triggered. Dead-letter it, say so loudly, go on.
            log.exception("decoder failed on a message; dead-lettered", extra={"topic": topic})
            batch.decoded.rejections.append(
                Rejection.of(
                    received_at,
                    topic,
                    RejectReason.INVALID_JSON,
                    f"the decoder failed on this message: {exc!r}"[:1000],
                    message.payload,
                )
            )

    @staticmethod
    def _add_status(batch: Batch, robot_id: str, message: InboundMessage) -> None:
        status = message.payload.decode("utf-8", "replace").strip().lower()
        if status in _STATUSES:
            batch.statuses[robot_id] = (status, int(message.received_at * 1000))
        elif message.payload:  # an empty retained payload clears the topic: nothing to say
            log.warning("ignored status payload", extra={"robot": robot_id, "status": status[:40]})
