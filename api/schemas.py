"""The API's documented shapes: request bodies it validates with pydantic, and the response
models its OpenAPI schema promises (responses themselves are built with orjson)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from api.keys import Scope
from telemetry.topics import ROBOT_ID_PATTERN

MAX_METADATA_BYTES = 16 * 1024


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate: refuse them
    # here as a 422 rather than fail in the database.
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return text


def _storable_metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        raw = orjson.dumps(value)
    except TypeError as exc:
        raise ValueError("must be JSON with valid Unicode text") from exc
    if b"\\u0000" in raw:
        raise ValueError("must not contain NUL characters")
    if len(raw) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


RobotId = Annotated[str, Field(pattern=ROBOT_ID_PATTERN, examples=["robot-1"])]
Name = Annotated[str, Field(max_length=200), AfterValidator(_storable)]
Model = Annotated[str, Field(max_length=100), AfterValidator(_storable)]
Battery = Annotated[float, Field(ge=0, le=100)]
Metadata = Annotated[dict[str, Any], AfterValidator(_storable_metadata)]


class RobotStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    MAINTENANCE = "maintenance"


class RobotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RobotId | None = Field(default=None, description="Generated when absent.")
    name: Name = ""
    model: Model = ""
    status: RobotStatus = RobotStatus.ACTIVE
    battery_level: Battery | None = None
    metadata: Metadata = Field(default_factory=dict)


class RobotReplace(BaseModel):
    """PUT: every writable field; what is left out gets its default."""

    model_config = ConfigDict(extra="forbid")

    name: Name = ""
    model: Model = ""
    status: RobotStatus = RobotStatus.ACTIVE
    battery_level: Battery | None = None
    metadata: Metadata = Field(default_factory=dict)


class RobotPatch(BaseModel):
    """PATCH: only the fields present change; `battery_level: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    model: Model | None = None
    status: RobotStatus | None = None
    battery_level: Battery | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _null_only_for_battery(self) -> RobotPatch:
        for name in ("name", "model", "status", "metadata"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class Liveness(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class RobotOut(BaseModel):
    id: str
    name: str
    model: str
    status: RobotStatus
    battery_level: float | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    connection: Liveness | None = Field(
        description="From the robot's retained status topic; null when live_unavailable."
    )
    connection_changed_at: datetime | None
    last_seen: datetime | None = Field(description="When its newest reading was received.")
    live_unavailable: bool = Field(
        description="Redis could not be reached: the live fields (connection, "
        "connection_changed_at, last_seen, latest) are null, the rest is from PostgreSQL."
    )


class MqttCredentials(BaseModel):
    username: str = Field(description="The robot id: the broker makes it the client id too.")
    password: str = Field(description="Shown once; only its hash is kept.")


class RobotCreated(RobotOut):
    mqtt: MqttCredentials | None = Field(
        default=None, description="With `?mqtt_credentials=true` only."
    )


class RobotPage(BaseModel):
    items: list[RobotOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    """An alert (telemetry/live.py, Alert): times in epoch milliseconds."""

    id: int
    kind: str
    severity: Literal["warning", "critical"]
    robot_id: str | None
    raised_at: int
    cleared_at: int | None
    message: str
    detail: dict[str, Any]
    site_id: str | None = Field(
        default=None, description="The site of a `site_unreachable` alert (robot_id is null)."
    )


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class LatestReading(BaseModel):
    ts: datetime
    received_at: datetime
    seq: int | None
    data: dict[str, Any]


class RobotDetail(RobotOut):
    latest: dict[str, LatestReading] | None = Field(
        description="Newest reading per sensor type; null when live_unavailable."
    )
    sequence_gaps: dict[str, int] | None = Field(
        description="Per sensor type that sent sequence numbers: how many numbers between its "
        "lowest and highest stored `seq` never arrived (readings lost before the broker, or "
        "still to come). Null when live_unavailable."
    )


class PayloadEncoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


class DeadLetterOut(BaseModel):
    id: int
    received_at: datetime
    topic: str
    robot_id: str | None = Field(description="The topic's robot (`robots/{id}/...`), if any.")
    reason: str
    detail: str
    payload: str = Field(
        description="What was refused, as sent: the text when it is valid UTF-8, else base64 "
        "(`payload_encoding` says which). A JSON string, never markup: escape it before "
        "putting it in a page."
    )
    payload_encoding: PayloadEncoding
    payload_size: int = Field(description="Bytes that arrived; only the first ones are kept.")
    payload_truncated: bool


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None


class SensorReadingOut(BaseModel):
    robot_id: str
    sensor_type: str
    ts: datetime
    received_at: datetime
    seq: int | None
    data: dict[str, Any]


class SensorPage(BaseModel):
    items: list[SensorReadingOut]
    next_cursor: str | None
    data: list[SensorReadingOut] | None = Field(
        default=None, description="`items` again, when the request used an older query name."
    )


class RobotLatest(BaseModel):
    robot_id: str
    sensors: dict[str, LatestReading]


class LatestPage(BaseModel):
    items: list[RobotLatest]


class RejectedReading(BaseModel):
    sensor_type: str | None
    index: int | None = Field(description="Position in `sensors` (older shape), else null.")
    reason: str
    detail: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Readings committed (stored now or already stored).")
    rejected: list[RejectedReading]
    status: Literal["success"] = Field(description="For the older clients.")
    inserted_count: int = Field(description="For the older clients: `accepted`.")
    robot_id: str


class Bucket(BaseModel):
    start: datetime
    value: float | None
    samples: int


class AggregateOut(BaseModel):
    sensor_type: str
    field: str
    fn: str
    bucket_seconds: float
    since: datetime
    until: datetime
    buckets: list[Bucket]


class MovingPoint(BaseModel):
    ts: datetime
    robot_id: str
    value: float | None
    moving_avg: float | None


class MovingAverageOut(BaseModel):
    sensor_type: str
    field: str
    window: int
    points: list[MovingPoint]


class FilteredOut(BaseModel):
    """The older clients' moving average (GET /api/sensors/filtered)."""

    robot_id: str
    sensor_type: str
    field: str
    original_data: list[float | None] = Field(description="Newest samples, oldest first.")
    filtered_data: list[float | None] = Field(description="Moving average at each sample.")
    window_size: int


class MinuteCount(BaseModel):
    minute: datetime
    readings: int


class RobotCount(BaseModel):
    robot_id: str
    readings: int


class StatsOut(BaseModel):
    since: datetime
    until: datetime
    total_readings: int
    by_sensor_type: dict[str, int]
    top_robots: list[RobotCount]
    per_minute: list[MinuteCount]
    readings_per_second: float
    robots_online: int
    robots_with_status: int
    rejected: dict[str, int]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    postgresql: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]


class ErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    error: str
    detail: Any


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(default="", description="For people: who or what uses the key.")
    scopes: list[Scope] = Field(
        min_length=1, max_length=4, description="admin implies every other scope."
    )


class ApiKeyOut(BaseModel):
    id: str = Field(description="Public: the key's `rsk_<id>_...` part; revoke by it.")
    name: str
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The whole key. Shown this once: only its hash is stored.")


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None


class LiveTokenOut(BaseModel):
    token: str = Field(description="For `GET /api/live?token=`; opens a stream until it expires.")
    expires_at: datetime
