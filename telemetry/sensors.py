"""Sensor types, their fields and units: the schema half of the contract.

Each type's `data` is a msgspec Struct with bounds, so decoding and validating a reading is a
single C-speed pass. Unknown fields are refused: a typo in a field name is an error the robot's
author should hear about, not a silently dropped value.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Bounds sit beyond any real device: a value past them is a unit or encoding bug, not a reading.
# ±200 g and ±100 rad/s for an IMU.
AccelAxis = Annotated[float, msgspec.Meta(ge=-2000.0, le=2000.0)]
GyroAxis = Annotated[float, msgspec.Meta(ge=-100.0, le=100.0)]
Celsius = Annotated[float, msgspec.Meta(ge=-100.0, le=200.0)]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
Altitude = Annotated[float, msgspec.Meta(ge=-1000.0, le=100_000.0)]
Speed = Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)]
Heading = Annotated[float, msgspec.Meta(ge=0.0, le=360.0)]
Hdop = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Distance = Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)]
Angle = Annotated[float, msgspec.Meta(ge=-360.0, le=360.0)]
PointCount = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Volts = Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)]
Amperes = Annotated[float, msgspec.Meta(ge=-1000.0, le=1000.0)]


class Accel(msgspec.Struct, forbid_unknown_fields=True):
    x: AccelAxis
    y: AccelAxis
    z: AccelAxis


class Gyro(msgspec.Struct, forbid_unknown_fields=True):
    x: GyroAxis
    y: GyroAxis
    z: GyroAxis


class ImuData(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """accel in m/s², gyro in rad/s, optional temperature in °C."""

    accel: Accel
    gyro: Gyro
    temperature: Celsius | None = None


class GpsData(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """lat/lon in degrees (WGS84), alt in m, speed in m/s, heading in degrees from north."""

    lat: Latitude
    lon: Longitude
    alt: Altitude | None = None
    speed: Speed | None = None
    heading: Heading | None = None
    hdop: Hdop | None = None


class LidarData(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Either one return (distance in m, angle in degrees) or a scan summary (points, min/max/mean
    distance in m). At least one of the two shapes must be complete."""

    distance: Distance | None = None
    angle: Angle | None = None
    points: PointCount | None = None
    min_distance: Distance | None = None
    max_distance: Distance | None = None
    mean_distance: Distance | None = None

    def __post_init__(self) -> None:
        single = self.distance is not None and self.angle is not None
        lo, hi = self.min_distance, self.max_distance
        if not single and (self.points is None or lo is None or hi is None):
            raise ValueError(
                "lidar needs distance and angle, or points, min_distance, max_distance"
            )
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("lidar min_distance is larger than max_distance")


class BatteryData(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """level in %, voltage in V, current in A (negative while discharging), temperature in °C."""

    level: Percent
    voltage: Volts | None = None
    current: Amperes | None = None
    charging: bool | None = None
    temperature: Celsius | None = None


SENSOR_SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "imu": ImuData,
    "gps": GpsData,
    "lidar": LidarData,
    "battery": BatteryData,
}
SENSOR_TYPES: frozenset[str] = frozenset(SENSOR_SCHEMAS)


def normalize_sensor_type(name: str) -> str | None:
    """Older HTTP clients spell types `IMU`, `GPS`, `LiDAR`: accept any case there."""
    lowered = name.lower()
    return lowered if lowered in SENSOR_TYPES else None


def _numeric_paths(struct: type[msgspec.Struct], prefix: str = "") -> list[str]:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    paths: list[str] = []
    for field in info.fields:
        paths.extend(_paths_of(field.type, f"{prefix}{field.encode_name}"))
    return paths


def _paths_of(t: msgspec.inspect.Type, path: str) -> list[str]:
    if isinstance(t, msgspec.inspect.UnionType):
        return [p for member in t.types for p in _paths_of(member, path)]
    if isinstance(t, msgspec.inspect.FloatType | msgspec.inspect.IntType):
        return [path]
    if isinstance(t, msgspec.inspect.StructType):
        return _numeric_paths(t.cls, f"{path}.")
    return []


NUMERIC_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(_numeric_paths(schema)) for name, schema in SENSOR_SCHEMAS.items()
}
