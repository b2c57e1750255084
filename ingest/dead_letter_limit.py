"""Bounds how many dead letters one flood can write: per source and in all, per minute.

A refusal beyond the limits is still counted (the refusal counters in Redis and the bridge's
metrics count every one); only its row in `dead_letters` is not written. The source is the
robot id of a `robots/<id>/...` topic, else the topic itself, so a single robot (registered
or not) that floods keeps at most `per_source` rows a minute, and a flood from many ids at
most `total` rows a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from telemetry.payload import Rejection

_SOURCE_CAP = 200  # characters of a topic used as its source key: bounds the memory per key


def rejection_source(topic: str) -> str:
    parts = topic.split("/", 2)
    if len(parts) >= 2 and parts[0] == "robots" and parts[1]:
        return parts[1][:_SOURCE_CAP]
    return topic[:_SOURCE_CAP]


@dataclass(slots=True)
class Admission:
    """What one batch may store; `record` it once the batch has committed."""

    minute: int
    kept: list[Rejection]
    dropped: Counter[str]  # reason -> rejections not stored
    tally: Counter[str] = field(default_factory=Counter)  # source -> stored


class DeadLetterLimit:
    def __init__(self, *, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self._minute = -1
        self._stored_by_source: Counter[str] = Counter()
        self._stored = 0

    def admit(self, rejections: Sequence[Rejection], *, now_s: float) -> Admission:
        """Chooses which rejections to store (first come, within the limits). Changes nothing:
        a batch that fails to commit and is retried must not be charged twice."""
        minute = int(now_s // 60)
        by_source = self._stored_by_source if minute == self._minute else Counter()
        stored = self._stored if minute == self._minute else 0
        admission = Admission(minute, [], Counter())
        for r in rejections:
            source = rejection_source(r.topic)
            if (
                by_source[source] + admission.tally[source] >= self.per_source
                or stored + len(admission.kept) >= self.total
            ):
                admission.dropped[str(r.reason)] += 1
                continue
            admission.tally[source] += 1
            admission.kept.append(r)
        return admission

    def record(self, admission: Admission) -> None:
        if admission.minute != self._minute:
            if admission.minute < self._minute:
                return  # a late batch of a past minute: that minute's budget is gone
            # A new minute: the old tallies go, so memory is bounded by one minute's sources.
            self._minute = admission.minute
            self._stored_by_source = Counter()
            self._stored = 0
        self._stored_by_source.update(admission.tally)
        self._stored += len(admission.kept)
