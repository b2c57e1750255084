"""Where the bridge's messages come from: one interface, two brokers.

The pipeline (inbox -> batcher -> commit -> ack) is the same for both; a source fills the
inbox and acknowledges what the pipeline committed. MqttSubscriber (bridge/mqtt.py) reads
Mosquitto, the default for one machine; NatsSource (bridge/nats.py) reads a JetStream durable
consumer that N bridges share on a NATS cluster (docs/nats.md). BRIDGE_SOURCE chooses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from bridge.inbox import InboundMessage


class Source(Protocol):
    @property
    def subscribed(self) -> bool:
        """Whether messages can arrive now (the readiness probe and a gauge read it)."""
        ...

    @property
    def address(self) -> str:
        """Where the source reads from, without credentials, for log lines."""
        ...

    @property
    def last_error(self) -> BaseException | None:
        """Why the broker could not be reached last time it could not (None: it could)."""
        ...

    async def wait_subscribed(self, within_s: float) -> bool: ...

    async def pump(self, stopping: asyncio.Event) -> None:
        """Runs under the bridge's TaskGroup until `stopping`: reads what the source must pull.
        (paho's thread pushes MQTT messages on its own: there it returns at once.)"""
        ...

    async def ack(self, messages: Sequence[InboundMessage]) -> int:
        """Acknowledges committed messages; returns how many were acknowledged."""
        ...

    def refresh_statuses(self) -> None:
        """Has every robot's last status delivered again (Redis lost the statuses)."""
        ...
