"""A run's configuration: the fleet, its sensor mix, timing, faults and the broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_simulator.faults import OUT_OF_WINDOW_MS, FaultConfig
from telemetry.payload import MAX_READINGS_PER_MESSAGE, TimeWindow
from telemetry.sensors import SENSOR_TYPES
from telemetry.topics import is_valid_robot_id

# Above 1 kHz two readings of one sensor would share a millisecond timestamp, i.e. an identity.
MAX_RATE_HZ = 1000.0
# How close to the bridge's time limits the schedule may come; covers a slow receive path.
_WINDOW_MARGIN_MS = 60_000
_AGE_MARGIN_MS = 3600_000
_BRIDGE_WINDOW = TimeWindow()


@dataclass(frozen=True, slots=True)
class SensorRate:
    rate_hz: float
    batch: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate must be within (0, {MAX_RATE_HZ}] Hz, not {self.rate_hz}")
        if not 1 <= self.batch <= MAX_READINGS_PER_MESSAGE:
            raise ValueError(f"batch must be 1..{MAX_READINGS_PER_MESSAGE}, not {self.batch}")


# IMU at 100 Hz in batches of 20 (5 messages/s), GPS 2 Hz, LiDAR summaries 5 Hz, battery 1 Hz:
# 108 readings and 13 messages per robot and second.
DEFAULT_MIX: dict[str, SensorRate] = {
    "imu": SensorRate(100.0, 20),
    "gps": SensorRate(2.0, 1),
    "lidar": SensorRate(5.0, 1),
    "battery": SensorRate(1.0, 1),
}


@dataclass(frozen=True, slots=True)
class Partition:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition must be i/n with 0 <= i < n, not {self}")

    def bounds(self, robots: int) -> tuple[int, int]:
        """This partition's slice [lo, hi) of robot indices; slices of one fleet do not overlap."""
        return robots * self.index // self.count, robots * (self.index + 1) // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    robots: int
    # 0: until stopped, in real time.
    duration_s: float
    # None: the moment publishing starts (after connecting), so that in real time a reading's
    # ts is when it is sent, and `received_at - ts` is the pipeline's latency.
    start_ts_ms: int | None = None
    seed: int = 0
    mix: dict[str, SensorRate] = field(default_factory=lambda: dict(DEFAULT_MIX))
    robot_prefix: str = "sim"
    partition: Partition = field(default_factory=Partition)
    robots_per_connection: int = 1
    qos: int = 1
    flat_out: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1884  # our broker's (telemetry.topics.DEFAULT_MQTT_URL)
    # The other nodes of a clustered broker (NATS, docs/nats.md), as (host, port): connection i
    # starts on node i mod n, the first being mqtt_host:mqtt_port, and moves on to the next
    # when its node goes away.
    mqtt_failover: tuple[tuple[str, int], ...] = ()
    # One identity for every connection (mqtt://user:pass@...), or each connection its own,
    # with passwords derived from this secret (edge_simulator/identities.py).
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_secret: str | None = None
    keepalive_s: int = 30
    # Connects (TCP handshake, CONNECT, CONNACK) this process has in flight at a time. Mosquitto
    # 2.0.11 listens with a backlog of 100: keep partitions times this under it.
    connects_in_flight: int = 25
    # QoS 1 messages a connection may have unacknowledged. Our broker admits 1,000 in flight
    # per client (mosquitto.conf); beyond that it would only queue them.
    window: int = 1000

    def __post_init__(self) -> None:
        if self.robots < 1:
            raise ValueError("at least one robot")
        if self.start_ts_ms is None and self.flat_out:
            raise ValueError("a flat-out run needs a start time: it runs ahead of the clock")
        if self.duration_s == 0:
            if self.flat_out:
                raise ValueError("a run until stopped (duration 0) must be in real time")
        elif not 0 < self.duration_s * 1000 <= OUT_OF_WINDOW_MS // 4:
            # Skewed-out readings sit 30 days off: a longer flat-out run could bring them back
            # in (in real time they stay 30 days off the clock).
            raise ValueError("duration must be 0 (until stopped) or positive, at most 7.5 days")
        if self.qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if self.connects_in_flight < 1:
            raise ValueError("connects in flight must be at least 1")
        if self.robots_per_connection < 1:
            raise ValueError("robots per connection must be at least 1")
        if self.mqtt_secret is not None and self.mqtt_username is not None:
            raise ValueError("credentials in the MQTT URL or a secret for the fleet, not both")
        if self.mqtt_username is not None and len(self.connection_groups()) > 1:
            # The broker makes the username the client id: connections sharing one identity
            # would keep replacing each other.
            raise ValueError(
                "one username serves one connection: raise --robots-per-connection to the fleet "
                "size, or give each connection its own identity with --mqtt-secret-file"
            )
        unknown = set(self.mix) - SENSOR_TYPES
        if unknown:
            raise ValueError(
                f"unknown sensor types {sorted(unknown)}; known: {sorted(SENSOR_TYPES)}"
            )
        if not self.mix:
            raise ValueError("at least one sensor type")
        for robot_id in (self.robot_id(0), self.robot_id(self.robots - 1)):
            if not is_valid_robot_id(robot_id) or len(f"ghost-{robot_id}") > 64:
                raise ValueError(f"robot prefix gives an invalid robot id {robot_id!r}")

    @property
    def brokers(self) -> list[tuple[str, int]]:
        return [(self.mqtt_host, self.mqtt_port), *self.mqtt_failover]

    def connection_groups(self) -> list[list[str]]:
        """This partition's robots, as they share connections."""
        robots = self.fleet_ids()
        k = self.robots_per_connection
        return [robots[i : i + k] for i in range(0, len(robots), k)]

    def robot_id(self, index: int) -> str:
        width = max(4, len(str(self.robots - 1)))
        return f"{self.robot_prefix}-{index:0{width}d}"

    def fleet_ids(self) -> list[str]:
        """This partition's robots."""
        lo, hi = self.partition.bounds(self.robots)
        return [self.robot_id(i) for i in range(lo, hi)]

    def check_time_window(self, *, now_ms: int, window: TimeWindow = _BRIDGE_WINDOW) -> None:
        """Refuses a start time whose readings the bridge could refuse as too new or too old.

        Only the skew-out fault may leave the window, and it leaves it by far, so what is valid
        does not depend on when the run happens to be received.
        """
        duration_ms = int(self.duration_s * 1000)
        start_ms = now_ms if self.start_ts_ms is None else self.start_ts_ms
        skew_ms = int(self.faults.skew_max_s * 1000) if self.faults.skew else 0
        late_ms = int(self.faults.late_max_s * 1000) if self.faults.late else 0
        future_limit = now_ms + int(window.max_future.total_seconds() * 1000) - _WINDOW_MARGIN_MS
        newest = start_ms + skew_ms + (duration_ms if self.flat_out else 0)
        if newest > future_limit:
            raise ValueError(
                f"readings would reach {(newest - now_ms) / 1000:.0f} s ahead of now; the bridge "
                f"refuses more than {window.max_future}. Use an earlier --start-ts"
                + (" (flat out, the whole duration is published at once)" if self.flat_out else "")
            )
        oldest_limit = now_ms - int(window.max_age.total_seconds() * 1000) + _AGE_MARGIN_MS
        received_last = now_ms + late_ms + duration_ms + int(self.faults.drop_down_s * 1000)
        oldest_age = received_last - (start_ms - skew_ms)
        if now_ms - oldest_age < oldest_limit:
            raise ValueError(
                f"readings would be up to {oldest_age / 86_400_000:.2f} days old when received; "
                f"the bridge refuses more than {window.max_age}. Use a later --start-ts"
            )

    @property
    def requested_readings_per_s(self) -> float:
        lo, hi = self.partition.bounds(self.robots)
        return (hi - lo) * sum(s.rate_hz for s in self.mix.values())

    @property
    def requested_messages_per_s(self) -> float:
        lo, hi = self.partition.bounds(self.robots)
        return (hi - lo) * sum(s.rate_hz / s.batch for s in self.mix.values())
