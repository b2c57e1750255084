"""One API worker's live view: the newest state from its MQTT subscription, fanned out to
every live-stream client of this worker, each with its own filters, rate and bounded queue.

A client is a set of slots, one per robot (and one for the fleet roll-up), not a queue: a
summary that arrives while the previous one for its robot still waits replaces it, and the
client is told how many it missed (`dropped`). So a slow or rate-limited client gets the
newest state, never a backlog, and its memory is bounded by the number of robots and by
`LIVE_CLIENT_MAX_BYTES`; the worker's by `LIVE_MAX_CLIENTS`. Alerts are events, not state:
they queue (bounded) and are sent first.

The worker takes only what its clients watch (`LiveHub.interest`): the fleet roll-up and the
alerts always, and the summaries of the robots its clients watch, or every robot's once a client
watches them all (or they watch more than MAX_ROBOT_TOPICS). A worker nobody watches through
costs next to nothing at 10,000 robots (BENCHMARKS.md, "Issue 15, round 10"); a newly watched
robot's summary comes with the subscription, as the broker retains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from api.http_errors import LiveStreamFullError
from telemetry.live import (
    FLEET_ALERTS_TOPIC,
    FLEET_SUMMARY_TOPIC,
    ROBOT_SUMMARIES_FILTER,
    FleetSummary,
    RobotSummary,
    decode_alert,
    decode_fleet_summary,
    decode_robot_summary,
    encode,
    parse_robot_summary_topic,
    robot_summary_topic,
)

log = logging.getLogger(__name__)

# The fleet roll-up's slot: no robot id is empty.
_FLEET = ""
# Alerts are rare (raised and cleared per robot and rule); more than this waiting means the
# client is not reading at all, and the oldest go (counted as missed).
_MAX_ALERTS = 256
# Past this many robots watched, one wildcard subscription instead of a topic each.
MAX_ROBOT_TOPICS = 2000
# Always taken: the roll-up (retained, for a new client at once) and the alerts (events).
_ALWAYS = (FLEET_SUMMARY_TOPIC, FLEET_ALERTS_TOPIC)

SUMMARY = "summary"
FLEET = "fleet"
ALERT = "alert"
DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class LiveFilter:
    robots: frozenset[str] | None
    sensor_types: frozenset[str] | None
    # Per robot (each summary carries the chosen sensor types); 0: every summary published.
    min_interval_s: float

    def wants(self, robot_id: str) -> bool:
        return self.robots is None or robot_id in self.robots


@dataclass(frozen=True, slots=True)
class LiveEvent:
    event: str
    data: str
    # For `dropped`: how many.
    missed: int = 0


class LiveClient:
    """One stream's pending events. Only the hub offers, only the stream takes."""

    def __init__(self, live_filter: LiveFilter, *, max_bytes: int) -> None:
        self.filter = live_filter
        self._max_bytes = max_bytes
        # key -> (event, data), in order of last update: the first is the stalest.
        self._slots: dict[str, LiveEvent] = {}
        self._bytes = 0
        self._alerts: deque[str] = deque()
        # Slots to send now, and slots held back by the rate limit until their time.
        self._ready: deque[str] = deque()
        self._later: list[tuple[float, str]] = []
        self._queued: set[str] = set()
        self._next_ok: dict[str, float] = {}
        self._missed = 0
        self._wake = asyncio.Event()
        self.closed = False

    @property
    def pending_bytes(self) -> int:
        return self._bytes + sum(len(a) for a in self._alerts)

    def offer(self, key: str, event: LiveEvent, *, missed: int = 0) -> None:
        """`missed`: summaries of this key superseded before they reached the hub."""
        self._missed += missed
        old = self._slots.pop(key, None)
        if old is not None:
            self._bytes -= len(old.data)
            if key != _FLEET:
                self._missed += 1
        self._slots[key] = event
        self._bytes += len(event.data)
        if key not in self._queued:
            self._queued.add(key)
            due = self._next_ok.get(key, 0.0)
            if due <= time.monotonic():
                self._ready.append(key)
            else:
                heapq.heappush(self._later, (due, key))
        while self._bytes > self._max_bytes and len(self._slots) > 1:
            stalest = next(iter(self._slots))
            self._bytes -= len(self._slots.pop(stalest).data)
            self._missed += stalest != _FLEET
        self._wake.set()

    def count_missed(self, n: int) -> None:
        self._missed += n
        self._wake.set()

    def offer_alert(self, data: str) -> None:
        self._alerts.append(data)
        if len(self._alerts) > _MAX_ALERTS:
            self._alerts.popleft()
            self._missed += 1
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    def _take(self, now: float) -> LiveEvent | None:
        if self._alerts:
            return LiveEvent(ALERT, self._alerts.popleft())
        while self._later and self._later[0][0] <= now:
            self._ready.append(heapq.heappop(self._later)[1])
        while self._ready:
            key = self._ready[0]
            if key in self._slots and self._missed:
                # Told just before the newest summary, not at every supersession: a client
                # that asked for a low rate would otherwise get a `dropped` event per publish.
                missed, self._missed = self._missed, 0
                return LiveEvent(DROPPED, f'{{"missed":{missed}}}', missed)
            self._ready.popleft()
            self._queued.discard(key)
            event = self._slots.pop(key, None)
            if event is None:  # dropped by the byte cap after it was queued
                continue
            self._bytes -= len(event.data)
            if self.filter.min_interval_s:
                self._next_ok[key] = now + self.filter.min_interval_s
            return event
        return None

    async def next_event(self, within_s: float) -> LiveEvent | None:
        """The next event to send, waiting up to `within_s` seconds (None: nothing came, or
        the client was closed)."""
        deadline = time.monotonic() + within_s
        while not self.closed:
            now = time.monotonic()
            event = self._take(now)
            if event is not None:
                return event
            if now >= deadline:
                return None
            wait = deadline - now
            if self._later:
                wait = min(wait, max(self._later[0][0] - now, 0.0))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
        return None


class LiveHub:
    """This worker's clients and the newest state (which a new client gets at once: the
    retained messages reach the subscription only when it subscribes)."""

    def __init__(self, *, max_clients: int, client_max_bytes: int, retry_after_s: int) -> None:
        self._max_clients = max_clients
        self._client_max_bytes = client_max_bytes
        self._retry_after_s = retry_after_s
        self._clients: set[LiveClient] = set()
        # Who watches what: a summary is offered to the clients of its robot and to those
        # that watch every robot, not checked against every client (200 detail views of 5
        # robots each: 1 client in 40 wants a given summary).
        self._everything: set[LiveClient] = set()
        self._by_robot: dict[str, set[LiveClient]] = {}
        # The newest summary per robot taken. Under the wildcard, one nobody watches is kept as
        # it came (bytes) and decoded when someone does: most of a large fleet is watched by
        # nobody at a time.
        self._robots: dict[str, RobotSummary | bytes] = {}
        # Whether the worker takes every robot's summary (interest()).
        self._all_robots = False
        self._interest_changed: Callable[[], None] = _nothing
        self._fleet: str | None = None
        self.connected = False
        self.connects = 0
        self.undecodable = 0
        # Robot summaries superseded in the subscriber before the hub took them, and alerts
        # lost there to its bound (api/live_mqtt.py).
        self.superseded = 0
        self.alerts_dropped = 0

    def subscribed(self) -> None:
        self.connected = True
        self.connects += 1

    def interest(self) -> frozenset[str]:
        """The topic filters this worker needs now (module docstring)."""
        if self._all_robots:
            return frozenset((*_ALWAYS, ROBOT_SUMMARIES_FILTER))
        return frozenset((*_ALWAYS, *map(robot_summary_topic, self._by_robot)))

    def on_interest_changed(self, callback: Callable[[], None]) -> None:
        """`callback` runs (on the loop) whenever interest() changes: the subscriber follows."""
        self._interest_changed = callback

    def _watchers_changed(self) -> None:
        all_robots = bool(self._everything) or len(self._by_robot) > MAX_ROBOT_TOPICS
        if not all_robots:
            # No longer taken, so no longer kept: a summary of one would go stale.
            for robot_id in [r for r in self._robots if r not in self._by_robot]:
                del self._robots[robot_id]
        self._all_robots = all_robots
        self._interest_changed()

    def unsubscribed(self) -> None:
        self.connected = False

    def alerts_lost(self, n: int) -> None:
        """Alerts that never reached the hub: every client is told it missed them."""
        self.alerts_dropped += n
        for client in self._clients:
            client.count_missed(n)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def open_client(self, live_filter: LiveFilter) -> LiveClient:
        if len(self._clients) >= self._max_clients:
            raise LiveStreamFullError(self._max_clients, self._retry_after_s)
        client = LiveClient(live_filter, max_bytes=self._client_max_bytes)
        if self._fleet is not None:
            client.offer(_FLEET, LiveEvent(FLEET, self._fleet))
        for robot_id in [r for r in self._robots if live_filter.wants(r)]:
            summary = self._decoded(robot_id)
            if summary is not None:
                client.offer(robot_id, LiveEvent(SUMMARY, _summary_data(summary, live_filter)))
        self._clients.add(client)
        if live_filter.robots is None:
            changed = not self._everything
            self._everything.add(client)
        else:
            changed = False
            for robot_id in live_filter.robots:
                watchers = self._by_robot.get(robot_id)
                if watchers is None:
                    watchers = self._by_robot[robot_id] = set()
                    changed = True
                watchers.add(client)
        if changed:
            self._watchers_changed()
        return client

    def close_client(self, client: LiveClient) -> None:
        client.close()
        if client not in self._clients:
            return
        self._clients.discard(client)
        changed = client in self._everything
        self._everything.discard(client)
        changed = changed and not self._everything
        for robot_id in client.filter.robots or ():
            watchers = self._by_robot.get(robot_id)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._by_robot[robot_id]
                    changed = True
        if changed:
            self._watchers_changed()

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._everything.clear()
        self._by_robot.clear()

    def dispatch(self, topic: str, payload: bytes, *, superseded: int = 0) -> None:
        """One message of `fleet/#`; `superseded`: how many of its topic the subscriber
        dropped for it (newer first), which each client watching that robot is told it missed.
        A message that does not decode is logged and skipped: it must not end the
        subscription nor reach a browser."""
        try:
            if topic == FLEET_SUMMARY_TOPIC:
                self._on_fleet(decode_fleet_summary(payload))
            elif topic == FLEET_ALERTS_TOPIC:
                data = encode(decode_alert(payload)).decode()
                for client in self._clients:
                    client.offer_alert(data)
            elif (robot_id := parse_robot_summary_topic(topic)) is not None:
                self.superseded += superseded
                if not payload:  # a retained summary cleared: the robot is gone
                    self._robots.pop(robot_id, None)
                    return
                self._on_robot(robot_id, payload, superseded)
        except msgspec.DecodeError:  # ValidationError included
            self._undecodable(topic)

    def _undecodable(self, topic: str) -> None:
        self.undecodable += 1
        log.warning("live: undecodable message skipped", extra={"topic": topic})

    def _decoded(self, robot_id: str) -> RobotSummary | None:
        """The robot's newest summary, decoded now if nobody watched it when it came; None
        when there is none, or it does not decode (skipped then, as on arrival)."""
        summary = self._robots.get(robot_id)
        if not isinstance(summary, bytes):
            return summary
        try:
            decoded = self._robots[robot_id] = decode_robot_summary(summary)
        except msgspec.DecodeError:
            del self._robots[robot_id]
            self._undecodable(robot_summary_topic(robot_id))
            return None
        return decoded

    def _on_fleet(self, fleet: FleetSummary) -> None:
        self._fleet = encode(fleet).decode()
        event = LiveEvent(FLEET, self._fleet)
        for client in self._clients:
            client.offer(_FLEET, event)

    def _on_robot(self, robot_id: str, payload: bytes, superseded: int) -> None:
        watchers = self._by_robot.get(robot_id)
        if not watchers and not self._everything:
            # Taken by the wildcard, it is kept as it came (decoded when someone watches it);
            # else it came for a subscription just dropped, and would go stale if kept.
            if self._all_robots:
                self._robots[robot_id] = payload
            return
        summary = decode_robot_summary(payload)
        self._robots[robot_id] = summary
        # Encoded once per distinct sensor filter, not once per client.
        encoded: dict[frozenset[str] | None, LiveEvent] = {}
        for clients in (self._everything, watchers or ()):
            for client in clients:
                live_filter = client.filter
                event = encoded.get(live_filter.sensor_types)
                if event is None:
                    event = LiveEvent(SUMMARY, _summary_data(summary, live_filter))
                    encoded[live_filter.sensor_types] = event
                client.offer(robot_id, event, missed=superseded)


def _nothing() -> None:
    pass


def _summary_data(summary: RobotSummary, live_filter: LiveFilter) -> str:
    wanted = live_filter.sensor_types
    if wanted is not None:
        summary = msgspec.structs.replace(
            summary, sensors={k: v for k, v in summary.sensors.items() if k in wanted}
        )
    return encode(summary).decode()
