"""Hands messages from paho's network thread to the asyncio loop.

paho-mqtt runs its network loop in its own thread: it receives several times the QoS 1
messages per second that aiomqtt (an asyncio wrapper over the same library) manages
(BENCHMARKS.md, "Measurements behind design choices"), and aiomqtt has no manual
acknowledgement, which we need to acknowledge only after commit. So the thread appends to a
deque (cheap, GIL-atomic) and wakes the loop only when the consumer is actually waiting: one
call_soon_threadsafe per idle period, not one per message.

The deque is bounded: past `high_water` the network thread blocks until the consumer catches
up. At QoS 1 the broker's in-flight window (max_inflight_messages) bounds us first; this is
for QoS 0 traffic, which has no flow control, so the broker holds it instead of our memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import NamedTuple


class InboundMessage(NamedTuple):
    """Made in paho's thread for every message: a tuple costs a third of a frozen dataclass
    (whose __init__ sets each field through object.__setattr__)."""

    generation: int  # which connection delivered it: acks only make sense on that connection
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float  # time.time() when paho handed it over
    # The broker's retained copy, sent because we (re)subscribed; a live publish has it False.
    retained: bool = False
    # JetStream's acknowledgement subject for this delivery (the NATS source); MQTT: empty.
    reply: str = ""


class Inbox:
    def __init__(self, *, loop: asyncio.AbstractEventLoop, high_water: int) -> None:
        self._loop = loop
        self._items: deque[InboundMessage] = deque()
        self._wakeup = asyncio.Event()
        self._consumer_waiting = False
        self._high_water = high_water
        self._room = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def room(self) -> int:
        """How many more messages fit below the high-water mark (a pulling source asks first,
        so that put() never blocks the event loop)."""
        return max(self._high_water - len(self._items), 0)

    def put(self, item: InboundMessage) -> None:
        """Called from paho's thread, or from the loop by a source that asked room() first."""
        items = self._items
        if len(items) >= self._high_water:
            with self._room:
                while len(items) >= self._high_water and not self._closed:
                    self._room.wait(timeout=1.0)
        items.append(item)
        if self._consumer_waiting:
            self._consumer_waiting = False
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def wait(self, within_s: float | None) -> None:
        """Returns when items are there, or after `within_s` seconds."""
        if self._items:
            return
        self._wakeup.clear()
        self._consumer_waiting = True
        if self._items:  # appended between the check and arming: do not sleep on it
            self._consumer_waiting = False
            return
        try:
            await asyncio.wait_for(self._wakeup.wait(), within_s)
        except TimeoutError:
            pass
        finally:
            self._consumer_waiting = False

    def oldest_received_at(self) -> float | None:
        """Any thread: when the oldest waiting message arrived, or None."""
        try:
            return self._items[0].received_at
        except IndexError:
            return None

    def take(self, limit: int) -> list[InboundMessage]:
        items = self._items
        n = min(limit, len(items))
        out = [items.popleft() for _ in range(n)]
        if n and len(items) < self._high_water:
            with self._room:
                self._room.notify_all()
        return out

    def close(self) -> None:
        """Releases a blocked network thread for good (shutdown)."""
        self._closed = True
        with self._room:
            self._room.notify_all()
