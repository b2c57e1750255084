"""The fleet's MQTT connections: paho-mqtt clients driven by one asyncio event loop.

Why paho without its threads: a thousand robots means up to a thousand connections, and
`loop_start()` would spend a thread on each. paho's external-loop interface (socket callbacks,
`loop_read`/`loop_write`/`loop_misc`) lets one asyncio loop serve them all, with no lock
contention and no wake-up pipe per publish. The publish loop is the process's hot path, so it
runs in the same thread as the sockets.

Why MQTT 3.1.1: paho decodes an MQTT 5 PUBACK into reason-code and property objects, which
nearly halves the QoS 1 publish rate (BENCHMARKS.md, "Measurements behind design choices").
The protocol allows either; Last Will and retained status work the same.

Why paho's in-flight limit is off (0): paho rescans every queued message on each PUBACK while
under its limit, which is quadratic in the window. Each link keeps its own window instead
(`SimulationConfig.window`, the broker's `max_inflight_messages`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_simulator.schedule import Outgoing
from telemetry.topics import status_topic

log = logging.getLogger(__name__)

ONLINE = b"online"
_CONNACK_TIMEOUT_S = 15.0
OFFLINE = b"offline"


class Link:
    """One connection carrying one or more robots. Its Last Will marks the first robot offline
    (MQTT allows one will per connection)."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        brokers: Sequence[tuple[str, int]],
        client_id: str,
        robots: Sequence[str],
        qos: int,
        keepalive_s: int,
        handshakes: asyncio.Semaphore,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._loop = loop
        # The fleet's limit on connects in flight, for reconnects too (Fleet._connect_all).
        self._handshakes = handshakes
        # (host, port) of each node it may use; it uses the first until that goes away.
        self._brokers = list(brokers)
        self.broker = 0
        self.moves = 0  # times it went on to another node
        self._keepalive = keepalive_s
        self.robots = list(robots)
        self.qos = qos
        self.up = False
        self.closing = False
        self.sent = 0  # handed to paho, status messages included
        self.done = 0  # acknowledged (QoS 1) or written to the socket (QoS 0)
        self.backlog: deque[Outgoing] = deque()
        self._connected: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._waiter: tuple[int, asyncio.Future[None]] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._watching_write = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        c.max_inflight_messages_set(0)
        if username is not None:
            c.username_pw_set(username, password)
        c.will_set(status_topic(self.robots[0]), OFFLINE, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        # No register-write callbacks: without them paho writes each packet as it is
        # published, and the loop only watches a socket that is full. With them, every
        # publish would add and remove an epoll writer, once per message when robots are many.
        self.client = c

    # paho callbacks; all run in the event loop's thread, from loop_read/loop_write.
    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        if self._watching_write:
            self._loop.remove_writer(sock)
            self._watching_write = False

    def _watch_write(self) -> None:
        """Called when paho has packets it could not write: the socket is full, or paho was in
        a callback, where it does not write."""
        sock = self.client.socket()
        if not self._watching_write and sock is not None and self.client.want_write():
            self._loop.add_writer(sock, self._writable)
            self._watching_write = True

    def _writable(self) -> None:
        self.client.loop_write()
        sock = self.client.socket()
        if self._watching_write and not self.client.want_write():
            self._watching_write = False
            if sock is not None:
                self._loop.remove_writer(sock)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        fut = self._connected
        if reason.is_failure:
            if fut and not fut.done():
                fut.set_exception(ConnectionError(f"broker refused {self.robots[0]}: {reason}"))
            return
        for robot_id in self.robots:
            self._publish_raw(status_topic(robot_id), ONLINE, qos=1, retain=True)
        self._watch_write()
        if fut and not fut.done():
            fut.set_result(None)
        # Readings produced while the link was down go first, at the pace the window allows.
        self._flushing = self._loop.create_task(self._flush_backlog())

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_up, self.up = self.up, False
        if self._lost and not self._lost.done():
            self._lost.set_result(None)
            return
        if self._reconnecting is not None and not self._reconnecting.done():
            # Its own reconnect replaced the socket: one reconnect at a time, or two would
            # take the session from each other in turn.
            return
        if was_up and not self.closing:
            log.warning("connection %s lost (%s); reconnecting", self.robots[0], reason)
            # A lone broker may be restarting: wait a little. A cluster has other nodes: go on
            # to the next at once (paho resends what the lost node had not acknowledged).
            if len(self._brokers) > 1:
                self._next_broker()
                self._reconnecting = self._loop.create_task(self._reconnect(0.05))
            else:
                self._reconnecting = self._loop.create_task(self._reconnect(1.0))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.done += 1
        w = self._waiter
        if w is not None and self.sent - self.done <= w[0] and not w[1].done():
            w[1].set_result(None)

    # Sending.
    def _publish_raw(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos, retain)
        self.sent += 1
        if self.client.want_write():
            self._watch_write()

    def publish(self, out: Outgoing) -> None:
        """Publishes now, or keeps it for when the link is back; counted once handed to paho."""
        if not self.up:
            self.backlog.append(out)
            return
        client = self.client
        client.publish(out.topic, out.payload, self.qos)
        self.sent += 1
        out.count()
        if client.want_write():
            self._watch_write()

    @property
    def outstanding(self) -> int:
        return self.sent - self.done

    async def wait_outstanding(self, limit: int) -> None:
        """Returns once at most `limit` messages await their PUBACK (or their write, at QoS 0)."""
        while self.sent - self.done > limit:
            fut = self._loop.create_future()
            self._waiter = (limit, fut)
            try:
                await fut
            finally:
                self._waiter = None

    async def _flush_backlog(self, window: int = 1000) -> None:
        while self.backlog:
            out = self.backlog.popleft()
            self.client.publish(out.topic, out.payload, self.qos)
            self.sent += 1
            out.count()
            if self.client.want_write():
                self._watch_write()
            if self.sent - self.done >= window:
                await self.wait_outstanding(window // 2)
        self.up = True

    # Connection lifecycle.
    def _next_broker(self) -> None:
        self.broker = (self.broker + 1) % len(self._brokers)
        self.moves += 1

    async def connect(self) -> None:
        async with self._handshakes:
            self._connected = self._loop.create_future()
            host, port = self._brokers[self.broker]
            # A blocking TCP connect: brokers are near, and paho's own connect_async needs its
            # thread.
            self.client.connect(host, port, keepalive=self._keepalive)
            # A node that accepted the TCP connection may still never answer (a NATS node whose
            # session stream is electing a leader): TimeoutError is an OSError, so a reconnect
            # goes on to the next node.
            async with asyncio.timeout(_CONNACK_TIMEOUT_S):
                await self._connected
        if self._flushing:
            await self._flushing

    async def _reconnect(self, delay_s: float) -> None:
        while not self.closing:
            # Spread: a fleet that lost its broker at one moment must not come back in one
            # millisecond, past the broker's listen backlog (see Fleet._connect_all).
            await asyncio.sleep(delay_s * random.uniform(0.5, 1.5))
            try:
                await self.connect()
            except OSError as exc:
                log.warning("reconnect of %s failed: %s", self.robots[0], exc)
                if len(self._brokers) > 1:
                    self._next_broker()
                delay_s = min(max(delay_s * 2, 0.2), 10.0)
            else:
                return

    async def drop(self, down_s: float) -> None:
        """Vanishes without DISCONNECT, so the broker publishes the Last Will; back after down_s.

        What was sent before the drop is acknowledged first, so the summary stays exact at
        QoS 1 (and at QoS 0 nothing is left unwritten in the socket)."""
        self.up = False
        if self._flushing:
            await self._flushing
        await self.wait_outstanding(0)
        sock = self.client.socket()
        if sock is None:
            return
        self._lost = self._loop.create_future()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
        else:  # TLS: closing the raw socket is just as abrupt
            sock.close()
        await self._lost
        self._lost = None
        await asyncio.sleep(down_s)
        if not self.closing:
            await self.connect()

    async def close(self, *, timeout_s: float) -> int:
        """Flushes, publishes `offline` for its robots, disconnects cleanly; returns unacked."""
        self.closing = True
        try:
            async with asyncio.timeout(timeout_s):
                if self._reconnecting:
                    await self._reconnecting
                if self._flushing:
                    await self._flushing
                if self.up:
                    for robot_id in self.robots:
                        self._publish_raw(status_topic(robot_id), OFFLINE, qos=1, retain=True)
                await self.wait_outstanding(0)
        except TimeoutError:
            log.warning(
                "link %s: %d messages unacknowledged at close", self.robots[0], self.outstanding
            )
        unacked = self.outstanding + len(self.backlog)
        if self.client.socket() is not None:
            self._lost = self._loop.create_future()
            if self.client.disconnect() == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._watch_write()
                try:
                    async with asyncio.timeout(5.0):
                        await self._lost
                except TimeoutError:
                    log.warning("link %s: no clean disconnect", self.robots[0])
        return unacked


class Fleet:
    """All links of a run, connected on entry and closed cleanly on exit."""

    def __init__(
        self,
        *,
        groups: Sequence[Sequence[str]],
        brokers: Sequence[tuple[str, int]],
        qos: int,
        keepalive_s: int,
        client_prefix: str,
        logins: Sequence[tuple[str | None, str | None]] | None = None,
        close_timeout_s: float = 30.0,
        connects_in_flight: int = 25,
    ) -> None:
        self._groups = groups
        self._connects_in_flight = connects_in_flight
        # (username, password) per group; the broker makes the username the client id.
        self._logins = logins or [(None, None)] * len(groups)
        self._brokers = list(brokers)
        self._qos = qos
        self._keepalive = keepalive_s
        self._client_prefix = client_prefix
        self._close_timeout = close_timeout_s
        self.links: list[Link] = []
        self.unacknowledged = 0
        self._keepalive_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Fleet:
        loop = asyncio.get_running_loop()
        handshakes = asyncio.Semaphore(self._connects_in_flight)
        self.links = [
            Link(
                loop=loop,
                # Spread over the nodes: link i starts on node i mod n.
                brokers=self._brokers[i % len(self._brokers) :]
                + self._brokers[: i % len(self._brokers)],
                client_id=f"{self._client_prefix}-{group[0]}",
                robots=group,
                qos=self._qos,
                keepalive_s=self._keepalive,
                handshakes=handshakes,
                username=login[0],
                password=login[1],
            )
            for i, (group, login) in enumerate(zip(self._groups, self._logins, strict=True))
        ]
        try:
            await self._connect_all()
        except BaseException:
            await self._close_all()
            raise
        self._keepalive_task = loop.create_task(self._keepalive_loop())
        return self

    async def _connect_all(self) -> None:
        """At most `connects_in_flight` handshakes at a time (the links share one semaphore),
        the next starting as soon as one ends. More than the broker's listen backlog
        (Mosquitto's is 100) at once overflows it, and each dropped SYN costs its robot a 1 s
        (then 3 s, 7 s) resend; chunks of 200 also waited for each chunk's slowest
        (BENCHMARKS.md, "1,000 → 10,000 connected robots"). The same limit holds for the
        reconnects after a broker restart, which all start within a second (round 8).
        Raises the first failure; the other connects are cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for link in self.links:
                    tg.create_task(link.connect())
        except BaseExceptionGroup as failed:
            # The callers handle an OSError (the broker unreachable), as before the group.
            raise failed.exceptions[0] from failed

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for link in self.links:
                if link.client.socket() is not None:
                    link.client.loop_misc()
                    link._watch_write()

    async def _close_all(self) -> None:
        results = await asyncio.gather(
            *(link.close(timeout_s=self._close_timeout) for link in self.links)
        )
        self.unacknowledged = sum(results)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close_all()
        finally:
            if self._keepalive_task:
                self._keepalive_task.cancel()
