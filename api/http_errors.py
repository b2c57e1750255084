"""Errors only an HTTP request can meet; `api/errors.py` turns them into responses."""

from __future__ import annotations

from telemetry.errors import RoboSenseError


class NotFoundError(RoboSenseError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class InvalidCursorError(RoboSenseError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid cursor: {detail}")
        self.detail = detail


class NotConfiguredError(RoboSenseError):
    """A feature this server was not configured for (MQTT provisioning without
    MQTT_AUTH_DIR)."""

    def __init__(self, feature: str, setting: str) -> None:
        super().__init__(f"{feature} is not configured on this server ({setting})")
        self.feature = feature
        self.setting = setting


class StorageUnavailableError(RoboSenseError):
    """PostgreSQL or Redis could not be reached; the caller may retry later."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is unavailable")
        self.service = service


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


class NotAuthenticatedError(RoboSenseError):
    """401: no API key, or one that is malformed, unknown, wrong or revoked. Which of these
    is not told beyond missing/invalid: a caller learns nothing about which keys exist."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"API key {reason}")
        self.reason = reason


class ForbiddenError(RoboSenseError):
    """403: a valid API key without the scope the route requires."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the {scope!r} scope")
        self.scope = scope


class LiveTokenError(RoboSenseError):
    """401 on the live stream: its token is missing, malformed, not ours, expired, or its
    key was revoked or lost the read scope."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"live token {reason}")
        self.reason = reason


class LiveStreamFullError(RoboSenseError):
    """503: this worker already serves its `LIVE_MAX_CLIENTS` streams."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"this server already serves {limit} live streams; retry later")
        self.limit = limit
        self.retry_after_s = retry_after_s
