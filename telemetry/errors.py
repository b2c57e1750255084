"""The exceptions every RoboSense package raises; `api/` translates them to HTTP."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a message or a reading was refused: the dead-letter table and the counters key on it."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_SENSOR_TYPE = "unknown_sensor_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_JSON = "invalid_json"
    INVALID_SCHEMA = "invalid_schema"
    OUT_OF_RANGE = "out_of_range"
    TOO_MANY_READINGS = "too_many_readings"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    UNKNOWN_ROBOT = "unknown_robot"
    REJECTED_BY_DATABASE = "rejected_by_database"


class RoboSenseError(Exception):
    """Root of the hierarchy, so callers can catch ours and nothing else."""


class ContractError(RoboSenseError):
    """Input that breaks the contract. `reason` is machine-readable, `detail` is for people."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NotFoundError(RoboSenseError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(RoboSenseError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind = kind
        self.key = key


class InvalidCursorError(RoboSenseError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid cursor: {detail}")
        self.detail = detail


class StorageUnavailableError(RoboSenseError):
    """PostgreSQL or Redis could not be reached; the caller may retry later."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is unavailable")
        self.service = service


class UnknownRobotError(ContractError):
    """Readings for a robot that is not registered (policy `reject`)."""

    def __init__(self, robot_id: str) -> None:
        super().__init__(RejectReason.UNKNOWN_ROBOT, f"robot {robot_id!r} is not registered")
        self.robot_id = robot_id


class ReadingsRejectedError(RoboSenseError):
    """Every reading of one request was refused. Each refusal maps `reason`, `detail` and where
    it sat in the request (`sensor_type`, `index`)."""

    def __init__(self, rejections: list[dict[str, object]]) -> None:
        super().__init__(f"all {len(rejections)} readings were rejected")
        self.rejections = rejections


class InvalidQueryError(RoboSenseError):
    """A request parameter that is well-formed but makes no sense (since after until, a field
    the sensor type does not have)."""

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail


class PayloadTooLargeError(RoboSenseError):
    def __init__(self, size: int | None, limit: int) -> None:
        shown = "an unknown number of" if size is None else f"at least {size}"
        super().__init__(f"{shown} bytes > {limit}")
        self.size = size
        self.limit = limit
