"""/api/live: the live view for browsers (Server-Sent Events) and the token that opens it
(docs/api.md, "Live stream")."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.auth import ReadPrincipal
from api.http_errors import LiveTokenError, NotConfiguredError
from api.keys import Scope as KeyScope
from api.live_hub import LiveClient, LiveFilter, LiveHub
from api.metrics import LIVE_DROPPED, LIVE_STREAMS
from api.query_params import RobotIds, SensorTypes, parse_robot_ids, parse_sensor_types
from api.resources import Resources, ResourcesDep
from api.responses import JSONBytes
from api.schemas import ErrorOut, LiveTokenOut

router = APIRouter(prefix="/api/live", tags=["live"])

# A filter is a set lookup per summary, not a query plan: far more than the reads' ten.
MAX_LIVE_ROBOTS = 1000
MAX_RATE_HZ = 50.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 409, 422, 503)
}


@router.post("/token", response_model=LiveTokenOut, responses=_ERRORS)
async def create_live_token(principal: ReadPrincipal, res: ResourcesDep) -> Response:
    """A short-lived token (`LIVE_TOKEN_TTL_S`, 60 s) for `GET /api/live?token=`, for a read
    key: browsers cannot send `X-API-Key` on an EventSource. It opens a stream until it
    expires; an open stream keeps running, while its key stays valid."""
    token, expires_s = res.live_tokens.issue(principal.key_id, now_s=time.time())
    return JSONBytes({"token": token, "expires_at": datetime.fromtimestamp(expires_s, UTC)})


class _LiveResponse(EventSourceResponse):
    """Gives the client's slot back however the response ends (even before it started)."""

    def __init__(self, hub: LiveHub, client: LiveClient, content: Any, *, ping: float) -> None:
        super().__init__(
            content,
            ping=ping,
            # Proxies must neither cache nor buffer a stream.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._hub = hub
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        LIVE_STREAMS.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.close_client(self._client)
            LIVE_STREAMS.dec()


async def _events(res: Resources, client: LiveClient, key_id: str) -> AsyncIterator[Any]:
    heartbeat = res.settings.live_heartbeat_s
    checked = time.monotonic()
    while not client.closed:
        event = await client.next_event(within_s=heartbeat)
        if time.monotonic() - checked >= heartbeat:
            # A revoked key's streams end within a heartbeat; the browser's reconnect then
            # meets an expired token (401), or gets a new one only with a valid key.
            if not await res.keys.still_allows(key_id, KeyScope.READ):
                return
            checked = time.monotonic()
        if event is None:
            continue
        if event.missed:
            LIVE_DROPPED.inc(event.missed)
        yield ServerSentEvent(data=event.data, event=event.event)


@router.get(
    "",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events `summary`, `fleet`, `alert` and `dropped` (docs/api.md).",
        },
        **_ERRORS,
    },
)
async def live_stream(
    res: ResourcesDep,
    token: Annotated[
        str | None, Query(max_length=256, description="From `POST /api/live/token`.")
    ] = None,
    robot_id: RobotIds = [],  # noqa: B006
    sensor_type: SensorTypes = [],  # noqa: B006
    max_rate_hz: Annotated[
        float | None,
        Query(gt=0, le=MAX_RATE_HZ, description="Summaries per robot per second, at most."),
    ] = None,
) -> Response:
    """Server-Sent Events: each robot's newest summary (its sensors filtered by
    `sensor_type`), the fleet roll-up and alerts. A client that reads slower than summaries
    arrive, or asks for a lower `max_rate_hz`, gets the newest summary per robot and a
    `dropped` event counting those it missed."""
    key_id = res.live_tokens.key_id(token, now_s=time.time())
    if not await res.keys.still_allows(key_id, KeyScope.READ):
        raise LiveTokenError("of a revoked key")
    robots = parse_robot_ids(robot_id, most=MAX_LIVE_ROBOTS)
    types = parse_sensor_types(sensor_type)
    if res.live is None:
        raise NotConfiguredError("the live stream", "MQTT_URL's user or LIVE_PROVISION_IDENTITY")
    client = res.live.open_client(
        LiveFilter(
            robots=frozenset(robots) or None,
            sensor_types=frozenset(types) or None,
            min_interval_s=1 / max_rate_hz if max_rate_hz else 0.0,
        )
    )
    return _LiveResponse(
        res.live, client, _events(res, client, key_id), ping=res.settings.live_heartbeat_s
    )
