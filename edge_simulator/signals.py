"""Plausible sensor signals, one stateful generator per robot and sensor type.

Each generator owns a `random.Random` seeded from (seed, robot, sensor type) alone, so a
robot's stream does not depend on which other robots run, in which process, or how fast: the
same seed gives the same bytes. Readings are formatted straight to JSON text with f-strings:
at 100 Hz per robot and a thousand robots this is the simulator's hot path, and building a
dict per reading only to serialise it would cost about twice as much.
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
        return (
            f'{{"ts":{ts_ms},"seq":{seq},"data":{{"accel":{{"x":{ax:.4f},"y":{ay:.4f},'
            f'"z":{az:.4f}}},"gyro":{{"x":{gx:.5f},"y":{gy:.5f},"z":{gz:.5f}}},'
            f'"temperature":{temp:.2f}}}}}'
        )


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
        return (
            f'{{"ts":{ts_ms},"seq":{seq},"data":{{"lat":{self._lat:.7f},"lon":{self._lon:.7f},'
            f'"alt":{alt:.2f},"speed":{speed:.2f},"heading":{self._heading:.1f},'
            f'"hdop":{hdop:.2f}}}}}'
        )


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
        return (
            f'{{"ts":{ts_ms},"seq":{seq},"data":{{"points":{points},'
            f'"min_distance":{nearest:.3f},"max_distance":{farthest:.3f},'
            f'"mean_distance":{mean:.3f}}}}}'
        )


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
        return (
            f'{{"ts":{ts_ms},"seq":{seq},"data":{{"level":{level:.2f},"voltage":{voltage:.3f},'
            f'"current":{current:.2f},"charging":{charging},"temperature":{temp:.1f}}}}}'
        )


_SIGNALS: dict[str, type[ImuSignal | GpsSignal | LidarSignal | BatterySignal]] = {
    "imu": ImuSignal,
    "gps": GpsSignal,
    "lidar": LidarSignal,
    "battery": BatterySignal,
}


def make_signal(sensor_type: str, *, seed: int, robot_id: str) -> Signal:
    return _SIGNALS[sensor_type](stream_rng(seed, robot_id, sensor_type))
