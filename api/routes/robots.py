"""/api/robots: the registry, with live fields from Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from api.auth import ReadRes, RegistryRes
from api.cursor import query_scope
from api.documents import latest_docs, robot_doc
from api.http_errors import (
    NotConfiguredError,
    NotFoundError,
    StorageUnavailableError,
)
from api.lean_route import LeanRoute
from api.resources import ResourcesDep
from api.responses import JSONBytes
from api.schemas import (
    ErrorOut,
    Model,
    MqttCredentials,
    RobotCreated,
    RobotDetail,
    RobotIn,
    RobotOut,
    RobotPage,
    RobotPatch,
    RobotReplace,
    RobotStatus,
)
from db.robots import (
    RobotChanges,
    RobotFields,
    delete_robot,
    find_robot,
    list_robots,
    register_robot,
    update_robot,
)
from ingest.counters import COUNTERS_AWAY_ERRORS
from mqtt_auth.identities import Identity, IdentityError, Role
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.store import IdentityStore
from telemetry.errors import ConflictError
from telemetry.sensors import SENSOR_SCHEMAS
from telemetry.topics import ROBOT_ID_PATTERN

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/robots", tags=["robots"])
# The reads are LeanRoutes (api/lean_route.py); the registry's writes take a body FastAPI
# validates, so they stay on `router`.
reads = APIRouter(prefix="/api/robots", tags=["robots"], route_class=LeanRoute)

RobotIdPath = Annotated[str, Path(pattern=ROBOT_ID_PATTERN, description="1-64 of [A-Za-z0-9_-]")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 415, 422, 503)
}


async def _robot_live(
    res: ResourcesDep, robot_ids: list[str]
) -> list[tuple[bytes | None, float | None]] | None:
    """Each robot's live fields from Redis, or None when Redis is unavailable: the registry
    is in PostgreSQL, so robots are still served, marked `live_unavailable`."""
    try:
        statuses, seen = await res.counters.robot_live(robot_ids)
    except COUNTERS_AWAY_ERRORS as exc:
        log.warning("redis unavailable, robots served without live fields: %s", exc)
        return None
    return list(zip(statuses, seen, strict=True))


async def _with_live(res: ResourcesDep, row: asyncpg.Record, status: int) -> Response:
    live = await _robot_live(res, [row["id"]])
    return JSONBytes(robot_doc(row, live[0] if live else None), status_code=status)


def _fields(body: RobotIn | RobotReplace) -> RobotFields:
    return RobotFields(
        name=body.name,
        model=body.model,
        status=body.status.value,
        battery_level=body.battery_level,
        metadata=orjson.dumps(body.metadata).decode(),
    )


def _identities(res: ResourcesDep) -> IdentityStore:
    if res.mqtt_identities is None:
        raise NotConfiguredError("MQTT provisioning", "MQTT_AUTH_DIR")
    return res.mqtt_identities


async def _new_mqtt_credentials(store: IdentityStore, robot_id: str) -> dict[str, str]:
    """A new password for the robot's identity (replacing any), hashed into the broker's
    files, which the broker reloads; the password itself is returned once, never stored."""
    password = new_password()
    identity = Identity.robot(robot_id, hash_password(password))
    try:
        await asyncio.to_thread(store.put, identity)
    except IdentityError:
        raise ConflictError("MQTT identity", robot_id) from None
    return {"username": robot_id, "password": password}


@router.post("", status_code=201, response_model=RobotCreated, responses=_ERRORS)
async def create_robot(
    body: RobotIn,
    res: RegistryRes,
    mqtt_credentials: Annotated[
        bool, Query(description="also create its MQTT identity; the password is returned once")
    ] = False,
) -> Response:
    """Registers a robot; its id is generated when absent. 409 when the id exists.

    With `mqtt_credentials=true` the response has `mqtt: {username, password}`: the robot
    connects with them and may publish only under `robots/{id}/` (docs/security.md)."""
    store = _identities(res) if mqtt_credentials else None
    robot_id = body.id or f"robot-{uuid.uuid4().hex}"
    if store is not None and (taken := store.get(robot_id)) and taken.role is not Role.ROBOT:
        raise ConflictError("MQTT identity", robot_id)
    row = await register_robot(res.pool, robot_id, _fields(body))
    if store is None:
        return await _with_live(res, row, 201)
    live = await _robot_live(res, [robot_id])
    doc = robot_doc(row, live[0] if live else None)
    doc["mqtt"] = await _new_mqtt_credentials(store, robot_id)
    return JSONBytes(doc, status_code=201)


@router.post("/{robot_id}/mqtt-credentials", response_model=MqttCredentials, responses=_ERRORS)
async def rotate_mqtt_credentials(robot_id: RobotIdPath, res: RegistryRes) -> Response:
    """A new MQTT password for a registered robot, returned once. The old one stops working
    when the broker reloads (well under a second), and a session using it is closed."""
    store = _identities(res)
    if await find_robot(res.pool, robot_id) is None:
        raise NotFoundError("robot", robot_id)
    return JSONBytes(await _new_mqtt_credentials(store, robot_id))


_SENSOR_TYPES = tuple(SENSOR_SCHEMAS)

# Robots read per round when filtering on the live connection state (Redis, not SQL).
_CONNECTION_SCAN = 500


@reads.get("", response_model=RobotPage, responses=_ERRORS)
async def get_robots(
    res: ReadRes,
    *,
    status: RobotStatus | None = None,
    model: Annotated[Model | None, Query()] = None,
    connection: Annotated[
        Literal["online", "offline", "unknown"] | None,
        Query(description="Live connection state (from the robots' status messages)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Robots in id order, filtered by status, model and connection; `next_cursor` continues
    the list."""
    scope = query_scope("robots", status, model, connection)
    after = res.cursors.decode_after_id(cursor, scope)
    # Without a connection filter one round reads the page (and one more row to know whether
    # another page follows); with it, rounds go on in id order until the page is full.
    batch = limit + 1 if connection is None else max(limit + 1, _CONNECTION_SCAN)
    items: list[dict[str, Any]] = []
    more = False
    while not more:
        rows = await list_robots(
            res.read_pool,
            status=status.value if status else None,
            model=model,
            after_id=after,
            limit=batch,
        )
        live = await _robot_live(res, [r["id"] for r in rows])
        if live is None and connection is not None:
            # The state to filter on lives in Redis only.
            raise StorageUnavailableError("redis")
        for i, row in enumerate(rows):
            doc = robot_doc(row, live[i] if live else None)
            if connection is not None and doc["connection"] != connection:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(doc)
        if len(rows) < batch:
            break
        after = rows[-1]["id"]
    next_cursor = res.cursors.encode(scope, [items[-1]["id"]]) if more else None
    return JSONBytes({"items": items, "next_cursor": next_cursor})


@reads.get("/{robot_id}", response_model=RobotDetail, responses=_ERRORS)
async def get_robot(robot_id: RobotIdPath, res: ReadRes) -> Response:
    """A robot with its newest reading and its sequence gaps per sensor type (from Redis, no
    table scan)."""
    row = await find_robot(res.read_pool, robot_id)
    if row is None:
        raise NotFoundError("robot", robot_id)
    try:
        live = await res.counters.robot_detail(robot_id, _SENSOR_TYPES)
    except COUNTERS_AWAY_ERRORS as exc:
        log.warning("redis unavailable, robot served without live fields: %s", exc)
        return JSONBytes({**robot_doc(row, None), "latest": None, "sequence_gaps": None})
    doc = robot_doc(row, (live.status, live.last_seen_ms))
    doc["latest"] = latest_docs(live.latest)
    doc["sequence_gaps"] = live.sequence_gaps
    return JSONBytes(doc)


@router.patch("/{robot_id}", response_model=RobotOut, responses=_ERRORS)
async def patch_robot(robot_id: RobotIdPath, body: RobotPatch, res: RegistryRes) -> Response:
    """Changes the fields present in the body (name, model, status, battery_level, metadata)."""
    given = frozenset(body.model_fields_set)
    fields = RobotFields(
        name=body.name or "",
        model=body.model or "",
        status=body.status.value if body.status else "active",
        battery_level=body.battery_level,
        metadata=orjson.dumps(body.metadata if body.metadata is not None else {}).decode(),
    )
    row = await update_robot(res.pool, robot_id, RobotChanges(given, fields))
    if row is None:
        raise NotFoundError("robot", robot_id)
    return await _with_live(res, row, 200)


@router.put("/{robot_id}", response_model=RobotOut, responses=_ERRORS)
async def put_robot(robot_id: RobotIdPath, body: RobotReplace, res: RegistryRes) -> Response:
    """Replaces every writable field of an existing robot (404 if absent: POST registers)."""
    changes = RobotChanges(
        frozenset(("name", "model", "status", "battery_level", "metadata")), _fields(body)
    )
    row = await update_robot(res.pool, robot_id, changes)
    if row is None:
        raise NotFoundError("robot", robot_id)
    return await _with_live(res, row, 200)


@router.delete("/{robot_id}", status_code=204, response_class=Response, responses=_ERRORS)
async def remove_robot(robot_id: RobotIdPath, res: RegistryRes) -> Response:
    """Unregisters the robot. Its readings stay (until retention drops their partitions) and
    stay readable by robot_id; new readings from it are refused as `unknown_robot`. Its MQTT
    identity, if this API provisions them, is removed and its open session closed."""
    if not await delete_robot(res.pool, robot_id):
        raise NotFoundError("robot", robot_id)
    if res.mqtt_identities is not None:
        await asyncio.to_thread(res.mqtt_identities.remove, [robot_id])
    return Response(status_code=204)
