"""Prometheus metrics of the API process, and the count and timing of its requests.

With several workers, `python -m api` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
and /metrics aggregates every worker's samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "robosense_api_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "robosense_api_request_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INGEST_READINGS = Counter(
    "robosense_api_ingest_readings_total", "Readings committed over HTTP, new or duplicate"
)
INGEST_INSERTED = Counter(
    "robosense_api_ingest_inserted_total", "Readings inserted over HTTP (duplicates excluded)"
)
INGEST_REJECTED = Counter(
    "robosense_api_ingest_rejected_total", "Readings refused over HTTP", ["reason"]
)
BATCH_READINGS = Histogram(
    "robosense_api_commit_batch_readings",
    "Readings per group commit",
    buckets=(1, 3, 10, 30, 100, 300, 1000, 3000, 10000),
)
BATCH_REQUESTS = Histogram(
    "robosense_api_commit_batch_requests",
    "Requests per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
COMMIT_SECONDS = Histogram(
    "robosense_api_commit_seconds",
    "Time of one group commit (PostgreSQL and Redis)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LIVE_CONNECTS = Counter(
    "robosense_api_live_connects_total", "Live subscriptions made to the broker (fleet/#)"
)
LIVE_DISCONNECTS = Counter(
    "robosense_api_live_disconnects_total", "Live subscriptions lost or refused, then retried"
)
LIVE_RECEIVED = Counter(
    "robosense_api_live_received_total",
    "Messages of fleet/# the live subscriber received from the broker",
)
LIVE_SUPERSEDED = Counter(
    "robosense_api_live_superseded_total",
    "Robot summaries the live subscriber dropped for a newer one of the same robot before the "
    "hub took them (each watching client is told: robosense_api_live_dropped_total)",
)
LIVE_STREAMS = Gauge(
    "robosense_api_live_streams", "Open live-stream clients", multiprocess_mode="livesum"
)
LIVE_DROPPED = Counter(
    "robosense_api_live_dropped_total", "Summaries a live-stream client missed (superseded)"
)
JOURNAL_REPLAY_FAILURES = Counter(
    "robosense_api_journal_replay_failures_total",
    "Failed rounds of the journal replay (counter updates Redis missed); retried with backoff",
)


class _FleetGauges(Collector):
    """Fleet-wide values read from Redis at scrape time. Gaps live in Redis, shared by every
    bridge and worker: one process's own counter would see only its share, and a late reading
    that fills a hole lowers the total, so this is a gauge of the current value. Labelled by
    sensor type only (a handful of series whatever the fleet's size); per robot it is in
    `GET /api/robots/{id}`. A scrape reads every robot's sequence hashes (one pipeline)."""

    def __init__(self, sequence_gaps: dict[str, int]) -> None:
        self.sequence_gaps = sequence_gaps

    def collect(self) -> Iterator[Metric]:
        gaps = GaugeMetricFamily(
            "robosense_sequence_gaps",
            "Sequence numbers missing between each robot's lowest and highest stored seq, "
            "summed over the fleet",
            labels=["sensor_type"],
        )
        for sensor_type, total in sorted(self.sequence_gaps.items()):
            gaps.add_metric([sensor_type], total)
        yield gaps


def render_metrics(*, sequence_gaps: dict[str, int] | None = None) -> tuple[bytes, str]:
    """The process's metrics (every worker's, with several), then the fleet's gauges (left
    out when Redis could not be read)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    if sequence_gaps is not None:
        fleet = CollectorRegistry()
        fleet.register(_FleetGauges(sequence_gaps))
        body += generate_latest(fleet)
    return body, CONTENT_TYPE_LATEST


_MAX_CHILDREN = 1000


class RequestMetrics:
    """Counts and times HTTP requests by method, route template (bounded label values) and
    status; the app's request gate (api/request_gate.py) notes each request it passes on."""

    def __init__(self) -> None:
        # The labelled children by their labels: `labels()` validates and locks on every
        # call (~40 % of the metrics' cost per request). Bounded, as a client's method names
        # are its own.
        self._timers: dict[tuple[str, str], Any] = {}
        self._counts: dict[tuple[str, str, int], Any] = {}

    def note(self, method: str, route: str, status: int, seconds: float) -> None:
        timer = self._timers.get((method, route))
        if timer is None:
            timer = LATENCY.labels(method, route)
            if len(self._timers) < _MAX_CHILDREN:
                self._timers[method, route] = timer
        timer.observe(seconds)
        count = self._counts.get((method, route, status))
        if count is None:
            count = REQUESTS.labels(method, route, str(status))
            if len(self._counts) < _MAX_CHILDREN:
                self._counts[method, route, status] = count
        count.inc()
