"""Decoding and validating a message's payload into readings, or reasons to refuse them.

One message may carry one reading or a batch. A batch is all-or-nothing only in the happy path:
when any reading in it is bad, each reading is decoded on its own so that good ones still land
and each bad one is refused with its own reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple

import msgspec

from telemetry.errors import ContractError, RejectReason
from telemetry.sensors import SENSOR_SCHEMAS

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 1000
DEAD_LETTER_PAYLOAD_CAP = 4096
# The contract nests 4 deep (batch, readings, reading, data, accel). msgspec decodes nested
# values recursively and raises RecursionError near Python's recursion limit (~1,000 levels),
# and has no depth limit of its own: so depth is checked before any decoder sees the bytes.
MAX_NESTING_DEPTH = 16

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Epoch milliseconds outside these bounds are certainly not a real clock (1970 .. 2200).
_MIN_EPOCH_MS = 0
_MAX_EPOCH_MS = 7_258_118_400_000

Timestamp = int | Annotated[datetime, msgspec.Meta(tz=True)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]

# msgspec words a failed bound as "Expected `float` <= 100.0"; that is our out_of_range.
_RANGE_ERROR = re.compile(r"^(Number out of range|Expected `\w+` [<>]=? )")


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'[]{}"\\')
_BRACES_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")


def check_nesting(payload: bytes, limit: int = MAX_NESTING_DEPTH) -> None:
    """Raises ContractError(nesting_too_deep) if arrays and objects nest deeper than `limit`
    (counting unclosed ones).

    All in C-speed bytes operations: keep only brackets and quotes, drop the (bracket-free)
    strings, then strip innermost `[]` pairs once per level. Its cost against decoding:
    BENCHMARKS.md, "The nesting-depth check on the decode path".
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return
    structure = payload.translate(_BRACES_TO_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure or b"\\" in structure:
        # Strings that hold brackets or escapes: remove them exactly (slower, rare).
        structure = _JSON_STRING.sub(b"", payload).translate(_BRACES_TO_BRACKETS, _NOT_STRUCTURE)
    levels = 0
    while structure and levels <= limit:
        reduced = structure.replace(b"[]", b"")
        if len(reduced) == len(structure):
            break  # what is left does not balance, like "]][[": invalid JSON, depth bounded
        structure = reduced
        levels += 1
    if levels + len(structure) > limit:
        raise ContractError(
            RejectReason.NESTING_TOO_DEEP, f"arrays and objects nest deeper than {limit} levels"
        )


def storable_text(text: str) -> str:
    """Text PostgreSQL accepts whatever a message held: NUL (which `text` cannot hold) is
    written as the JSON escape `\\u0000`, and lone surrogates (which UTF-8 cannot encode) as
    `\\udXXX` escapes. Dead letters keep their payload as raw bytes (`bytea`); this is for
    their topic and detail, which quote what the message sent."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


class Reading(NamedTuple):
    """One validated reading, its fields in the order of the COPY into staging."""

    robot_id: str
    sensor_type: str
    ts: datetime
    received_at: datetime
    seq: int | None
    data: str


class Rejection(NamedTuple):
    received_at: datetime
    topic: str
    reason: RejectReason
    detail: str
    payload: bytes  # the first DEAD_LETTER_PAYLOAD_CAP bytes of what was refused
    payload_size: int  # and its whole size

    @classmethod
    def of(
        cls, received_at: datetime, topic: str, reason: RejectReason, detail: str, payload: bytes
    ) -> Rejection:
        """The one way to refuse something: keeps a capped copy of `payload` and its size."""
        return cls(
            received_at, topic, reason, detail, payload[:DEAD_LETTER_PAYLOAD_CAP], len(payload)
        )


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """How far a reading's own clock may be from ours and still be accepted."""

    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=7)


@dataclass(slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _reading_type(data_type: type[msgspec.Struct]) -> type[msgspec.Struct]:
    return msgspec.defstruct(
        f"{data_type.__name__}Reading",
        [("ts", Timestamp), ("data", data_type), ("seq", Seq | None, None)],
        forbid_unknown_fields=True,
    )


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """The outer shape, read without validating readings, to isolate bad ones in a batch."""

    readings: list[msgspec.Raw] | None = None


_READING_TYPES = {name: _reading_type(schema) for name, schema in SENSOR_SCHEMAS.items()}
_READING_DECODERS = {name: msgspec.json.Decoder(t) for name, t in _READING_TYPES.items()}
_BATCH_DECODERS = {
    name: msgspec.json.Decoder(
        msgspec.defstruct(
            f"{t.__name__}Batch",
            [
                (
                    "readings",
                    Annotated[
                        list[t],  # type: ignore[valid-type]
                        msgspec.Meta(min_length=1, max_length=MAX_READINGS_PER_MESSAGE),
                    ],
                )
            ],
            forbid_unknown_fields=True,
        )
    )
    for name, t in _READING_TYPES.items()
}
_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)
_ENCODER = msgspec.json.Encoder()


def _classify(exc: msgspec.ValidationError) -> RejectReason:
    message = str(exc)
    return RejectReason.OUT_OF_RANGE if _RANGE_ERROR.match(message) else RejectReason.INVALID_SCHEMA


def to_datetime(ts: int | datetime) -> datetime:
    if isinstance(ts, datetime):
        return ts
    if not _MIN_EPOCH_MS <= ts <= _MAX_EPOCH_MS:
        raise ContractError(RejectReason.OUT_OF_RANGE, f"epoch milliseconds out of range: {ts}")
    return EPOCH + timedelta(milliseconds=ts)


def check_time(ts: datetime, *, now: datetime, window: TimeWindow) -> None:
    if ts > now + window.max_future:
        raise ContractError(
            RejectReason.TS_IN_FUTURE,
            f"ts {ts.isoformat()} is more than {window.max_future} ahead of the pipeline's clock",
        )
    if ts < now - window.max_age:
        raise ContractError(
            RejectReason.TS_TOO_OLD, f"ts {ts.isoformat()} is older than {window.max_age}"
        )


class PayloadDecoder:
    """Turns (topic fields, payload) into readings and rejections. Stateless but for its limits."""

    def __init__(self, *, window: TimeWindow) -> None:
        self.window = window
        self._max_age_us = window.max_age // _MICROSECOND
        self._max_future_us = window.max_future // _MICROSECOND

    def decode(
        self,
        *,
        robot_id: str,
        sensor_type: str,
        topic: str,
        payload: bytes,
        received_at: datetime,
        into: Decoded,
    ) -> None:
        """Append to `into` every reading the payload holds, or why it was refused."""

        def reject(reason: RejectReason, detail: str, raw: bytes = payload) -> None:
            into.rejections.append(Rejection.of(received_at, topic, reason, detail, raw))

        if len(payload) > MAX_PAYLOAD_BYTES:
            reject(RejectReason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
            return
        try:
            check_nesting(payload)
        except ContractError as exc:
            reject(exc.reason, exc.detail)
            return
        is_batch = b'"readings"' in payload
        try:
            if is_batch:
                items: list[Any] = _BATCH_DECODERS[sensor_type].decode(payload).readings  # type: ignore[attr-defined]
            else:
                items = [_READING_DECODERS[sensor_type].decode(payload)]
        except msgspec.ValidationError as exc:
            if not is_batch:
                reject(_classify(exc), str(exc))
                return
            items = self._decode_batch_one_by_one(sensor_type, payload, reject, exc)
        except msgspec.DecodeError as exc:
            reject(RejectReason.INVALID_JSON, str(exc))
            return
        except UnicodeDecodeError as exc:
            # msgspec raises this, not DecodeError, when it quotes a key that is not UTF-8.
            reject(RejectReason.INVALID_JSON, f"not UTF-8: {exc}")
            return
        self._accept_all(
            items,
            robot_id=robot_id,
            sensor_type=sensor_type,
            received_at=received_at,
            reject=reject,
            into=into,
        )

    def _decode_batch_one_by_one(
        self,
        sensor_type: str,
        payload: bytes,
        reject: Any,
        batch_error: msgspec.ValidationError,
    ) -> list[Any]:
        try:
            raws = _ENVELOPE_DECODER.decode(payload).readings
        except (msgspec.ValidationError, UnicodeDecodeError):
            reject(_classify(batch_error), str(batch_error))
            return []
        if not raws:
            reject(RejectReason.INVALID_SCHEMA, "readings must be a non-empty list")
            return []
        if len(raws) > MAX_READINGS_PER_MESSAGE:
            reject(
                RejectReason.TOO_MANY_READINGS,
                f"{len(raws)} readings > {MAX_READINGS_PER_MESSAGE} in one message",
            )
            return []
        decoder = _READING_DECODERS[sensor_type]
        items = []
        for index, raw in enumerate(raws):
            try:
                items.append(decoder.decode(raw))
            except msgspec.ValidationError as exc:
                reject(_classify(exc), f"readings[{index}]: {exc}", bytes(raw))
            except UnicodeDecodeError as exc:
                reject(
                    RejectReason.INVALID_JSON, f"readings[{index}]: not UTF-8: {exc}", bytes(raw)
                )
        return items

    def _accept_all(
        self,
        items: list[Any],
        *,
        robot_id: str,
        sensor_type: str,
        received_at: datetime,
        reject: Any,
        into: Decoded,
    ) -> None:
        """The hot loop (tens of thousands of readings/s): the time window is checked in
        integer milliseconds, and datetimes are made only for readings that are kept."""
        # Exact integer bounds: an epoch-ms timestamp passes iff its datetime would. One
        # datetime subtraction per message; the window's own bounds are integers already.
        received_us = (received_at - EPOCH) // _MICROSECOND
        earliest_us = received_us - self._max_age_us
        latest_us = received_us + self._max_future_us
        append = into.readings.append
        encode = _ENCODER.encode
        for item in items:
            ts = item.ts
            if type(ts) is int:
                # Epoch ms to datetime exactly: fromtimestamp rounds to the microsecond.
                ts = (
                    datetime.fromtimestamp(ts / 1000, UTC)
                    if earliest_us <= ts * 1000 <= latest_us
                    else None
                )
            elif not (
                received_at - self.window.max_age <= ts <= received_at + self.window.max_future
            ):
                ts = None
            if ts is None:
                self._refuse_time(item, received_at, reject)
                continue
            append(
                Reading(
                    robot_id, sensor_type, ts, received_at, item.seq, encode(item.data).decode()
                )
            )

    def _refuse_time(self, item: Any, received_at: datetime, reject: Any) -> None:
        """The slow path: says precisely why a timestamp is outside the window."""
        try:
            check_time(to_datetime(item.ts), now=received_at, window=self.window)
        except ContractError as exc:
            reject(exc.reason, exc.detail, _ENCODER.encode(item))
        else:
            raise AssertionError(f"the fast and the slow time checks disagree on {item.ts!r}")
