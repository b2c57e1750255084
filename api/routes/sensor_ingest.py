"""POST /api/sensors: HTTP ingest through group commit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.auth import IngestRes
from api.compat import older_ingest_fields
from api.http_errors import ReadingsRejectedError
from api.lean_route import LeanRoute
from api.responses import JSONBytes
from api.schemas import ErrorOut, IngestResult
from api.sensor_bodies import ingest_body_schema, parse_ingest_body
from telemetry.errors import ContractError, UnknownRobotError
from telemetry.payload import Rejection

# A LeanRoute: the hottest endpoint, no per-request dependency solving (api/lean_route.py).
router = APIRouter(prefix="/api/sensors", tags=["sensors"], route_class=LeanRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 415, 422, 503)
}

INGEST_BODY_SCHEMA, INGEST_BODY_COMPONENTS = ingest_body_schema()


@router.post(
    "",
    status_code=201,
    response_model=IngestResult,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": INGEST_BODY_SCHEMA}},
        }
    },
)
async def ingest(request: Request, res: IngestRes) -> Response:
    """Stores readings, answering once they are committed (shared with concurrent requests).

    A refused reading (e.g. `data: null`) is listed in `rejected` without refusing its
    siblings; 422 when none is left. Readings already stored count as accepted (idempotent).
    """
    body = await request.body()
    received_at = datetime.now(UTC)
    try:
        parsed = parse_ingest_body(
            body,
            decoder=res.decoder,
            received_at=received_at,
            naive_tz=res.settings.naive_tz,
        )
    except ContractError as exc:
        res.committer.count_rejections(
            [Rejection.of(received_at, "http", exc.reason, exc.detail, body)]
        )
        raise
    if not parsed.readings:
        res.committer.count_rejections(parsed.rejections)
        raise ReadingsRejectedError(parsed.refused)
    unknown = await res.committer.commit(parsed.readings, parsed.rejections)
    if parsed.robot_id in unknown:
        raise UnknownRobotError(parsed.robot_id)
    return JSONBytes(
        {
            "accepted": len(parsed.readings),
            "rejected": parsed.refused,
            **older_ingest_fields(parsed.robot_id, len(parsed.readings)),
        },
        status_code=201,
    )
