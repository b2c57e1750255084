"""The contract's exceptions, raised by every RoboSense package; `api/` translates them to HTTP
(the errors only HTTP requests can meet live in `api/http_errors.py`)."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a message or a reading was refused: the dead-letter table and the counters key on it."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_SENSOR_TYPE = "unknown_sensor_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NESTING_TOO_DEEP = "nesting_too_deep"
    INVALID_JSON = "invalid_json"
    INVALID_SCHEMA = "invalid_schema"
    OUT_OF_RANGE = "out_of_range"
    TOO_MANY_READINGS = "too_many_readings"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    UNKNOWN_ROBOT = "unknown_robot"
    REJECTED_BY_DATABASE = "rejected_by_database"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


class RoboSenseError(Exception):
    """Root of the hierarchy, so callers can catch ours and nothing else."""


class ContractError(RoboSenseError):
    """Input that breaks the contract. `reason` is machine-readable, `detail` is for people."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConflictError(RoboSenseError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} already exists")
        self.kind = kind
        self.key = key


class UnknownRobotError(ContractError):
    """Readings for a robot that is not registered (policy `reject`)."""

    def __init__(self, robot_id: str) -> None:
        super().__init__(RejectReason.UNKNOWN_ROBOT, f"robot {robot_id!r} is not registered")
        self.robot_id = robot_id
