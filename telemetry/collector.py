"""Python's cyclic garbage collector, tuned the same way in every long-running service.

CPython runs a young collection every 700 new container objects, and every tenth of those
walks older objects too. A batch of readings, or an HTTP request, makes thousands of
containers (tuples, dicts, datetimes) that are freed by reference counting, not by the
collector, yet the collections were a large share of the bridge's loop and a visible share of
an API worker (BENCHMARKS.md, "Issue 15, round 3" and "round 8").
"""

from __future__ import annotations

import gc


def collect_rarely(young_threshold: int) -> None:
    """Moves everything made so far (modules, the app, its routes) out of every future
    collection, and collects young objects every `young_threshold` new containers. Call once,
    when start-up is done."""
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 20)
