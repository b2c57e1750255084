"""Plausible sensor signals, one stateful generator per robot and sensor type.

Each generator owns a `random.Random` seeded from (seed, robot, sensor type) alone, so a
robot's stream does not depend on which other robots run, in which process, or how fast: the
same seed gives the same bytes. Readings are formatted straight to JSON text from %-templates:
at 100 Hz per robot and a thousand robots this is the simulator's hot path. Building a dict per
reading to serialise it costs about twice as much, and so do f-strings with format specs
(BENCHMARKS.md, "Measurements behind design choices"), hence `noqa: UP031`.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

# Metres per degree of latitude; a degree of longitude is this times cos(latitude).
_M_PER_DEG = 111_320.0
_G = 9.80665

# Robots start around a few plausible sites (warehouses, campuses, a port), spread by ~1 km.
_SITES = ((52.5200, 13.4050), (37.7749, -122.4194), (35.6762, 139.6503), (-33.8688, 151.2093))


_IMU = (
    '{"ts":%d,"seq":%d,"data":{"accel":{"x":%.4f,"y":%.4f,"z":%.4f},'
    '"gyro":{"x":%.5f,"y":%.5f,"z":%.5f},"temperature":%.2f}}'
)
_GPS = (
    '{"ts":%d,"seq":%d,"data":{"lat":%.7f,"lon":%.7f,"alt":%.2f,"speed":%.2f,"heading":%.1f,'
    '"hdop":%.2f}}'
)
_LIDAR = (
    '{"ts":%d,"seq":%d,"data":{"points":%d,"min_distance":%.3f,"max_distance":%.3f,'
    '"mean_distance":%.3f}}'
)
_BATTERY = (
    '{"ts":%d,"seq":%d,"data":{"level":%.2f,"voltage":%.3f,"current":%.2f,"charging":%s,'
    '"temperature":%.1f}}'
)


def stream_rng(seed: int, robot_id: str, sensor_type: str) -> random.Random:
    """String seeds are hashed with SHA-512 by `random`: stable across processes and runs."""
    return random.Random(f"{seed}/{robot_id}/{sensor_type}")


class Signal(Protocol):
    def reading(self, seq: int, ts_ms: int, t: float) -> str:
        """The reading's JSON text; `t` is seconds since the run's start (the signal's clock)."""
        ...


class ImuSignal:
    """A ground robot: gravity on z, surge from speed changes, centripetal from turns, vibration."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._surge_period = rng.uniform(5.0, 12.0)
        self._turn_period = rng.uniform(8.0, 20.0)
        self._phase = rng.uniform(0.0, 2 * math.pi)
        self._speed = rng.uniform(0.5, 2.0)
        self._vibration = rng.uniform(0.05, 0.3)
        self._temp0 = rng.uniform(30.0, 45.0)

    def reading(self, seq: int, ts_ms: int, t: float) -> str:
        r = self._rng.random
        v = self._vibration
        yaw_rate = 0.3 * math.sin(2 * math.pi * t / self._turn_period + self._phase)
        ax = 0.4 * math.sin(2 * math.pi * t / self._surge_period + self._phase) + v * (r() - 0.5)
        ay = self._speed * yaw_rate + v * (r() - 0.5)
        az = _G + v * (r() - 0.5)
        gx = 0.02 * (r() - 0.5)
        gy = 0.02 * (r() - 0.5)
        gz = yaw_rate + 0.01 * (r() - 0.5)
        temp = self._temp0 + 3.0 * math.sin(t / 600.0)
        return _IMU % (ts_ms, seq, ax, ay, az, gx, gy, gz, temp)


class GpsSignal:
    """Dead reckoning along a path whose heading wanders; speed and fix quality vary a little."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        lat0, lon0 = _SITES[rng.randrange(len(_SITES))]
        self._lat = lat0 + rng.uniform(-0.01, 0.01)
        self._lon = lon0 + rng.uniform(-0.01, 0.01)
        self._alt = rng.uniform(5.0, 120.0)
        self._heading = rng.uniform(0.0, 360.0)
        self._cruise = rng.uniform(0.5, 2.5)
        self._t = 0.0

    def reading(self, seq: int, ts_ms: int, t: float) -> str:
        r = self._rng.random
        dt = t - self._t
        self._t = t
        speed = max(0.0, self._cruise + 0.3 * (r() - 0.5))
        self._heading = (self._heading + 20.0 * (r() - 0.5) * dt) % 360.0
        rad = math.radians(self._heading)
        dist = speed * dt
        self._lat += dist * math.cos(rad) / _M_PER_DEG
        self._lon += dist * math.sin(rad) / (_M_PER_DEG * math.cos(math.radians(self._lat)))
        alt = self._alt + 0.5 * (r() - 0.5)
        hdop = 0.8 + 1.5 * r()
        return _GPS % (ts_ms, seq, self._lat, self._lon, alt, speed, self._heading, hdop)


class LidarSignal:
    """Scan summaries: the number of returns and the nearest, farthest and mean distances."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._points = rng.randrange(10_000, 60_000)
        self._room = rng.uniform(8.0, 60.0)

    def reading(self, seq: int, ts_ms: int, t: float) -> str:
        r = self._rng.random
        points = self._points + int(2000 * (r() - 0.5))
        nearest = 0.15 + 3.0 * r() * r()
        farthest = self._room * (0.8 + 0.4 * r())
        mean = nearest + (farthest - nearest) * (0.3 + 0.2 * r())
        return _LIDAR % (ts_ms, seq, points, nearest, farthest, mean)


class BatterySignal:
    """Drains while working, charges from 15% back to 95%; voltage and current follow."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._level = rng.uniform(30.0, 100.0)
        self._drain = rng.uniform(0.01, 0.05)  # % per second: 30 min to 3 h per charge
        self._charge = rng.uniform(0.1, 0.3)
        self._charging = False
        self._t = 0.0

    def reading(self, seq: int, ts_ms: int, t: float) -> str:
        dt = t - self._t
        self._t = t
        if self._charging:
            self._level = min(100.0, self._level + self._charge * dt)
            self._charging = self._level < 95.0
        else:
            self._level = max(0.0, self._level - self._drain * dt)
            self._charging = self._level <= 15.0
        level = self._level
        noise = 0.05 * (self._rng.random() - 0.5)
        voltage = 21.0 + 4.2 * level / 100.0 + noise
        current = 8.0 if self._charging else -3.0 - 2.0 * self._rng.random()
        charging = "true" if self._charging else "false"
        temp = 25.0 + (10.0 if self._charging else 5.0) + noise * 10
        return _BATTERY % (ts_ms, seq, level, voltage, current, charging, temp)


_SIGNALS: dict[str, type[ImuSignal | GpsSignal | LidarSignal | BatterySignal]] = {
    "imu": ImuSignal,
    "gps": GpsSignal,
    "lidar": LidarSignal,
    "battery": BatterySignal,
}


def make_signal(sensor_type: str, *, seed: int, robot_id: str) -> Signal:
    return _SIGNALS[sensor_type](stream_rng(seed, robot_id, sensor_type))
