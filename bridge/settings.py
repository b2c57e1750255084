"""The bridge's settings, read from the environment by the entry point only."""

from __future__ import annotations

import socket
from enum import StrEnum

from pydantic import Field

from telemetry.settings import ServiceSettings

# The group name every bridge used before the secret one (docs/security.md): public.
PUBLIC_SHARE_GROUP = "robosense"


class BridgeSource(StrEnum):
    MQTT = "mqtt"  # Mosquitto (MQTT_URL): one machine, the default
    NATS = "nats"  # a JetStream consumer on a NATS cluster (NATS_URLS; docs/nats.md)


class BridgeSettings(ServiceSettings):
    bridge_source: BridgeSource = BridgeSource.MQTT
    # Comma-separated nats://user:pass@host:port, any or all nodes of the cluster: the client
    # connects to one and fails over to the others (and to those the cluster announces).
    nats_urls: str = "nats://127.0.0.1:4222"
    nats_stream: str = Field(default="ROBOSENSE", pattern=r"^[A-Za-z0-9_-]+$")
    nats_consumer: str = Field(default="bridges", pattern=r"^[A-Za-z0-9_-]+$")
    # Messages one pull asks for (at most what the inbox has room for), and how long a pull
    # waits when the stream has nothing new. Chosen with loadtest/ingest --source nats
    # (BENCHMARKS.md, "NATS cluster").
    nats_fetch_batch: int = Field(default=1_000, ge=1)
    nats_fetch_wait_s: float = Field(default=1.0, gt=0)
    # What `python -m bridge nats-setup` gives the stream and the consumer. The ack wait must
    # exceed a batch's time from fetch to commit under load, or batches are delivered twice
    # (absorbed, but wasted); a killed bridge's messages go to the others after it.
    nats_replicas: int = Field(default=3, ge=1, le=5)
    nats_ack_wait_s: float = Field(default=30.0, gt=0)
    # Unacknowledged messages across all bridges: the cluster stops handing out more beyond.
    nats_max_ack_pending: int = Field(default=50_000, ge=1)
    nats_max_age_days: float = Field(default=7.0, gt=0)
    nats_max_bytes: int = Field(default=20 * 1024**3, ge=1024**2)

    # Several bridges split the stream when they share the group; each needs its own client id,
    # and must keep it across restarts to resume its persistent session.
    bridge_client_id: str = Field(
        default_factory=lambda: f"robosense-bridge-{socket.gethostname()}"
    )
    # Empty (the default): a plain subscription, for one bridge. Mosquitto 2.0 keeps a plain
    # subscription of a persistent session across its own restarts but not a `$share` one (see
    # README, "What a broker restart loses"), so only a plain one queues what robots publish
    # while the bridge is reconnecting to a restarted broker. Several bridges need a group name
    # to split the stream between them; since Mosquitto 2.0 lets any client join a share group
    # and take its turn (docs/security.md), in production it is the secret name
    # `python -m mqtt_auth share-group` prints. A plain subscription has no such exposure.
    share_group: str = Field(default="", pattern=r"^[^/+#]*$")
    # Messages the bridge holds before paho's thread stops reading the socket. At QoS 1 the
    # broker's in-flight window (max_inflight_messages, 20,000 in mosquitto.conf) binds first;
    # this bounds QoS 0 traffic, which has no flow control. Must exceed the batch size.
    inbox_high_water: int = Field(default=40_000, ge=100)
    # Python hands the GIL between paho's thread and the event loop every 5 ms by default, so
    # each database round trip could wait 5 ms for the loop to run again; a shorter interval
    # drains a backlog markedly faster (BENCHMARKS.md, "Measurements behind design choices").
    gil_switch_interval_s: float = 0.0002

    # Chosen with loadtest/ingest: where larger batches stop paying off, and a delay that keeps
    # p99 publish-to-commit latency within target (BENCHMARKS.md).
    batch_max_readings: int = Field(default=5_000, ge=1)
    batch_max_delay_ms: int = Field(default=50, ge=1)
    # When the database is idle a batch goes as soon as it is this old (group commit).
    batch_min_delay_ms: int = Field(default=10, ge=0)

    retention_days: int = 30
    # Dead letters are for finding out what went wrong: kept a week, deleted by the hourly
    # maintenance. A source (a robot id, or the topic) that floods keeps this many rows a
    # minute, and all sources together this many; the rest are counted, not stored.
    dead_letter_retention_days: float = Field(default=7, gt=0)
    dead_letters_per_source_per_minute: int = Field(default=100, ge=0)
    dead_letters_per_minute: int = Field(default=10_000, ge=0)
    partition_days_ahead: int = 3
    partition_interval_s: int = 3_600
    # On SIGTERM with PostgreSQL unavailable, how long to keep retrying before exiting with the
    # batch unacknowledged (the broker redelivers it). Keep below the supervisor's kill timeout.
    stop_grace_s: float = 10.0
    # How often to replay missed counter updates and check that Redis still has the counters
    # (and has not restarted: then every counted minute is reconciled).
    journal_replay_interval_s: float = 15.0
    # How often to compare the last `reconcile_minutes` minute buckets with PostgreSQL and
    # repair drift (ingest/reconcile.py); each round is one GROUP BY over those minutes.
    reconcile_interval_s: float = Field(default=300.0, gt=0)
    reconcile_minutes: int = Field(default=15, ge=1)

    # /readyz turns false when messages have waited this long without a commit.
    stall_after_s: float = Field(default=30.0, gt=0)

    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108

    @property
    def partition_days_back(self) -> int:
        # Every reading the time window accepts must have a partition to land in.
        return int(self.max_age_s // 86_400) + 1
