"""`ReadAheadClient`: paho's client for a subscriber that receives at fleet rates.

paho's reading costs more than what our subscribers do with a message. It reads a packet's
first byte, each length byte and its body with a `recv` each and goes through its select loop
(a `select`, keepalive checks) for every packet: 4-5 system calls and a loop turn per message.
It decodes each PUBLISH into an MQTTMessage, and it matches every message's topic against the
filters of `message_callback_add` (a trie walk, ~9 % of a bridge's samples with
single-reading messages, 21 % of the API's live subscription at 10,000 robots), even when
there are none and `on_message` takes everything. BENCHMARKS.md has the profiles
("Single-reading messages: CPU per message"; issue 15, round 6, for the live subscription).

This client:
- hands a message straight to `on_message`, under the same lock and with the same error
  behaviour (exceptions propagate), without the matching;
- `recv`s up to 64 KiB into a buffer that paho's reads are served from, and `loop_read` goes on
  with the packets already in the buffer before paho's loop runs again. It never reads the
  socket again while doing so: what the kernel still holds keeps the socket readable for
  paho's `select`, and paho's loop turns (PUBACK writes, keepalive) at least once per chunk;
- after `deliver_fields(callback, max_qos=...)`, parses the PUBLISH packets at the head of the
  buffer itself and hands their fields to the callback. A QoS 1 message taken this way is not
  acknowledged by paho: with `max_qos=1` the client acks on its own (the bridge does, after
  the commit). Everything else goes through paho and `on_message` as before.

Overrides private methods of the pinned paho version (constraints.txt); tests/telemetry/
test_mqtt_reader.py covers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

# What one read from the socket may take: ~400 single-reading messages.
_READ_SIZE = 1 << 16

# (mid, qos, topic, payload, retain) of a PUBLISH the client parsed itself.
PublishFields = Callable[[int, int, str, bytes, bool], None]


class ReadAheadClient(paho.Client):
    """paho's client without its per-message topic matching, reading the socket in chunks and
    parsing PUBLISH packets itself (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # None: every packet goes through paho (and `on_message`).
        self._on_fields: PublishFields | None = None
        self._fields_max_qos = 0
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None
        self._refill = True

    def deliver_fields(self, callback: PublishFields, *, max_qos: Literal[0, 1]) -> None:
        """PUBLISH packets of QoS up to `max_qos` go to `callback` (in paho's thread, under
        its callback lock) instead of `on_message`, except a chunk's first, which paho reads.
        With 1 the QoS 1 ones taken here are the caller's to acknowledge."""
        self._on_fields = callback
        self._fields_max_qos = max_qos

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._sock is not self._rsock:  # a new connection: nothing of the old one
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            if not self._refill:
                raise BlockingIOError  # paho keeps the partial packet and selects again
            buf = super()._sock_recv(_READ_SIZE)  # b"" at end of stream: paho's "lost"
            pos = 0
            self._rbuf = buf
        end = pos + bufsize
        self._rpos = min(end, len(buf))
        return buf[pos:end]

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        return len(self._rbuf) - self._rpos if self._sock is self._rsock else 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        self._refill = False
        try:
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None:
                if not self.buffered():
                    break
                if self._publishes():
                    continue
                rc = super().loop_read(1)
        finally:
            self._refill = True
        return rc

    def _publishes(self) -> int:
        """Hands the whole PUBLISH packets at the head of the buffer (QoS up to the
        `deliver_fields` bound) to its callback, parsed here (MQTT 3.1.1, 3.3) instead of by
        paho: paho's reading state, its packet decoder and an MQTTMessage per message were a
        third of a single-reading bridge's samples. Stops at anything else (another packet
        type, a higher QoS, a partial or malformed packet, a topic that is not UTF-8), which
        paho's own reading then takes. Returns how many it handed over."""
        on_publish = self._on_fields
        if on_publish is None or self._in_packet["command"] or self._protocol != paho.MQTTv311:
            return 0
        max_qos = self._fields_max_qos
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        n = 0
        with self._in_callback_mutex:
            while pos < end:
                command = buf[pos]
                qos = (command >> 1) & 3
                if command >> 4 != 3 or qos > max_qos:
                    break
                length, mult, i = 0, 1, pos + 1
                while i < end and mult <= 128**3:
                    byte = buf[i]
                    i += 1
                    length += (byte & 127) * mult
                    mult *= 128
                    if not byte & 128:
                        break
                else:
                    break  # the length is not all here, or longer than 4 bytes
                stop = i + length
                head = i + 2 + (buf[i] << 8 | buf[i + 1]) if i + 1 < end else stop + 1
                body = head + 2 if qos else head
                if stop > end or length < 2 or body > stop:
                    break
                try:
                    topic = buf[i + 2 : head].decode()
                except UnicodeDecodeError:
                    break
                mid = buf[head] << 8 | buf[head + 1] if qos else 0
                pos = self._rpos = stop
                n += 1
                on_publish(mid, qos, topic, buf[body:stop], bool(command & 1))
        if n:
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
        return n
