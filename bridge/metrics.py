"""The bridge's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter("bridge_messages_received_total", "MQTT messages taken from the inbox")
READINGS_INSERTED = Counter("bridge_readings_inserted_total", "Readings newly stored")
READINGS_DUPLICATE = Counter(
    "bridge_readings_duplicate_total", "Valid readings already stored (redeliveries, resends)"
)
READINGS_CONFLICTING = Counter(
    "bridge_readings_conflicting_total",
    "Readings skipped because a different reading with the same identity is stored "
    "(dead-lettered as conflicting_duplicate)",
)
RETAINED_IGNORED = Counter(
    "bridge_retained_readings_ignored_total",
    "Retained copies on reading topics replayed by the broker at subscription (acked, ignored)",
)
REJECTED = Counter("bridge_rejected_total", "Refused messages or readings", ["reason"])
DEAD_LETTERS_OVER_QUOTA = Counter(
    "bridge_dead_letters_over_quota_total",
    "Refusals counted but not written to dead_letters: a source past its per-minute quota",
    ["reason"],
)
DEAD_LETTERS_EXPIRED = Counter(
    "bridge_dead_letters_expired_total", "Dead letters deleted past DEAD_LETTER_RETENTION_DAYS"
)
BATCH_SIZE = Histogram(
    "bridge_batch_readings",
    "Readings and refusals per committed batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
FLUSH_SECONDS = Histogram(
    "bridge_flush_seconds",
    "Time to commit a batch, retries included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG_SECONDS = Histogram(
    "bridge_commit_lag_seconds",
    "From receipt of a batch's oldest message to its commit",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DB_ERRORS = Counter(
    "bridge_db_errors_total",
    "Failed commit attempts: transient and other are retried; data is isolated to its row",
    ["kind"],
)
DEAD_LETTERS_DROPPED = Counter(
    "bridge_dead_letters_dropped_total",
    "Dead letters PostgreSQL refused even with ASCII-only text (logged, acknowledged)",
)
COUNTER_UPDATES_DEFERRED = Counter(
    "bridge_counter_updates_deferred_total", "Batches whose Redis update waits for journal replay"
)
STATUSES_IGNORED = Counter(
    "bridge_statuses_ignored_total", "Status messages of unregistered robots (not tracked)"
)
STATUS_UPDATES_LOST = Counter(
    "bridge_status_updates_lost_total",
    "Batches whose statuses were not recorded (PostgreSQL or Redis away); the broker resends "
    "retained statuses at the next subscription and the hourly refresh",
)
STATUSES_PRUNED = Counter(
    "bridge_statuses_pruned_total", "Statuses dropped from Redis: robot no longer registered"
)
COUNTER_REPAIRS = Counter(
    "bridge_counter_repairs_total",
    "Minute buckets whose Redis counts differed from PostgreSQL and were rewritten",
)
COUNTER_DRIFT = Counter(
    "bridge_counter_drift_readings_total",
    "Readings by which repaired minute buckets were off (absolute, summed)",
)
INBOX_DEPTH = Gauge("bridge_inbox_depth", "Messages received but not yet batched")
SUBSCRIBED = Gauge("bridge_subscribed", "1 while the MQTT subscription is active")
READY = Gauge("bridge_ready", "1 while /readyz says ready (subscribed, not stalled)")
STALLED_SECONDS = Gauge(
    "bridge_stalled_seconds", "Seconds without a commit while messages wait (0 when none wait)"
)
SERVICE_WAITS = Counter(
    "bridge_service_waits_total",
    "Failed attempts to reach PostgreSQL or Redis at start (retried with backoff)",
    ["service"],
)
JOB_FAILURES = Counter(
    "bridge_job_failures_total",
    "Failed rounds of a periodic job: partitions, housekeeping, counters (journal replay, "
    "rebuild, reconciliation); retried with backoff",
    ["job"],
)
