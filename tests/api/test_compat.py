"""The older FastAPI service's clients, unchanged, against our API (issue 11).

Requests are written as those clients send them: integer robot ids, ISO timestamps without a
zone (taken as UTC), the older field and query names, `data: null`, /api/sensors/filtered and
/health_check. Timestamps are recent rather than the issue's fixed example so that they stay
inside the contract's time window whenever the suite runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import msgspec
import orjson
import pytest
from pydantic import ValidationError

from api.compat import OLDER_FIELD_NAMES, contract_field
from api.sensor_bodies import parse_ingest_body
from api.settings import ApiSettings
from telemetry.errors import ContractError
from telemetry.payload import PayloadDecoder, TimeWindow
from telemetry.sensors import NUMERIC_FIELDS, SENSOR_SCHEMAS

OLDER_IMU = {
    "acceleration": {"x": 0.1, "y": 0.2, "z": 9.8},
    "gyroscope": {"x": 0.01, "y": 0.02, "z": 0.03},
}
OLDER_GPS = {"latitude": 52.52, "longitude": 13.405, "altitude": 34.0}
OLDER_LIDAR = {"distance": 4.2, "angle": 12.5}


@pytest.fixture
async def older(client: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]) -> httpx.AsyncClient:
    """The client with robots 1-3 registered, as the older clients' fleets are numbered."""
    await clean_db.executemany("INSERT INTO robots (id) VALUES ($1)", [("1",), ("2",), ("3",)])
    # The older clients send a key on every call: the fixture's own once API keys exist,
    # otherwise a placeholder the API ignores.
    client.headers.setdefault("X-API-Key", "older-client-key")
    return client


def naive(ts: datetime) -> str:
    """As the older clients write it: `2026-11-27T10:15:00.123456`, no zone."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def recent(seconds_ago: float = 60) -> datetime:
    """A recent time with a microsecond part, which must survive the round trip."""
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).replace(microsecond=123456)


async def rows(pool: asyncpg.Pool[Any]) -> dict[str, asyncpg.Record]:
    found = await pool.fetch(
        "SELECT robot_id, sensor_type, ts, data::text AS data FROM sensor_readings"
    )
    return {r["sensor_type"]: r for r in found}


async def test_older_body_is_stored_in_the_contract_names(
    older: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    ts = recent()
    body = {
        "robot_id": 1,
        "timestamp": naive(ts),
        "sensors": [
            {"sensor_type": "IMU", "data": OLDER_IMU},
            {"sensor_type": "GPS", "data": OLDER_GPS},
            {"sensor_type": "LiDAR", "data": OLDER_LIDAR},
        ],
    }
    response = await older.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "status": "success",
        "inserted_count": 3,
        "robot_id": "1",
        "accepted": 3,
        "rejected": [],
    }
    stored = await rows(clean_db)
    assert set(stored) == {"imu", "gps", "lidar"}
    for row in stored.values():
        assert row["robot_id"] == "1"
        assert row["ts"] == ts  # the naive time read as UTC, to the microsecond
    assert orjson.loads(stored["imu"]["data"]) == {
        "accel": {"x": 0.1, "y": 0.2, "z": 9.8},
        "gyro": {"x": 0.01, "y": 0.02, "z": 0.03},
    }
    assert orjson.loads(stored["gps"]["data"]) == {"lat": 52.52, "lon": 13.405, "alt": 34.0}
    assert orjson.loads(stored["lidar"]["data"]) == {"distance": 4.2, "angle": 12.5}


@pytest.mark.parametrize("suffix, offset", [("Z", timedelta(0)), ("+02:00", timedelta(hours=2))])
async def test_timestamp_with_a_zone(
    older: httpx.AsyncClient, clean_db: asyncpg.Pool[Any], suffix: str, offset: timedelta
) -> None:
    utc = recent()
    local = naive(utc + offset) + suffix
    body = {
        "robot_id": 2,
        "timestamp": local,
        "sensors": [{"sensor_type": "GPS", "data": OLDER_GPS}],
    }
    response = await older.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text
    assert (await rows(clean_db))["gps"]["ts"] == utc


async def test_null_data_is_refused_alone(
    older: httpx.AsyncClient, clean_db: asyncpg.Pool[Any]
) -> None:
    body = {
        "robot_id": 3,
        "timestamp": naive(recent()),
        "sensors": [
            {"sensor_type": "IMU", "data": OLDER_IMU},
            {"sensor_type": "GPS", "data": None},
            {"sensor_type": "LiDAR", "data": OLDER_LIDAR},
        ],
    }
    response = await older.post("/api/sensors", json=body)
    assert response.status_code == 201, response.text
    doc = response.json()
    assert (doc["status"], doc["inserted_count"], doc["robot_id"]) == ("success", 2, "3")
    assert [(r["index"], r["sensor_type"], r["reason"]) for r in doc["rejected"]] == [
        (1, "gps", "invalid_schema")
    ]
    assert set(await rows(clean_db)) == {"imu", "lidar"}

    only_null = {**body, "sensors": [{"sensor_type": "GPS", "data": None}]}
    refused = await older.post("/api/sensors", json=only_null)
    assert refused.status_code == 422
    assert refused.json()["error"] == "readings_rejected"


@pytest.mark.parametrize(
    "sensor_type, older_data, contract_data",
    [
        ("GPS", {"latitude": 91.0, "longitude": 0.0}, {"lat": 91.0, "lon": 0.0}),
        ("GPS", {"latitude": 0.0, "longitude": -180.5}, {"lat": 0.0, "lon": -180.5}),
        (
            "IMU",
            {**OLDER_IMU, "acceleration": {"x": 2000.5, "y": 0.0, "z": 0.0}},
            {"accel": {"x": 2000.5, "y": 0.0, "z": 0.0}, "gyro": OLDER_IMU["gyroscope"]},
        ),
        (
            "IMU",
            {**OLDER_IMU, "gyroscope": {"x": 0.0, "y": 0.0, "z": -101.0}},
            {"accel": OLDER_IMU["acceleration"], "gyro": {"x": 0.0, "y": 0.0, "z": -101.0}},
        ),
        ("LiDAR", {"distance": -1.0, "angle": 0.0}, {"distance": -1.0, "angle": 0.0}),
        ("GPS", {"latitude": 1.0}, {"lat": 1.0}),
        ("IMU", {"acceleration": {"x": 1, "y": 2, "z": 3}}, {"accel": {"x": 1, "y": 2, "z": 3}}),
    ],
)
async def test_range_and_schema_checks_are_the_contracts(
    older: httpx.AsyncClient,
    clean_db: asyncpg.Pool[Any],
    sensor_type: str,
    older_data: dict[str, Any],
    contract_data: dict[str, Any],
) -> None:
    ts = naive(recent())
    reasons = []
    for data in (older_data, contract_data):
        body = {
            "robot_id": 1,
            "timestamp": ts,
            "sensors": [
                {"sensor_type": sensor_type, "data": data},
                {"sensor_type": "battery", "data": {"level": 50.0}},
            ],
        }
        response = await older.post("/api/sensors", json=body)
        assert response.status_code == 201, response.text
        [rejected] = response.json()["rejected"]
        reasons.append(rejected["reason"])
    assert reasons[0] == reasons[1]
    assert reasons[0] in {"out_of_range", "invalid_schema"}
    assert set(await rows(clean_db)) == {"battery"}


async def test_older_and_contract_name_together_is_refused(older: httpx.AsyncClient) -> None:
    data = {"latitude": 1.0, "lat": 1.0, "longitude": 2.0}
    body = {
        "robot_id": 1,
        "timestamp": naive(recent()),
        "sensors": [{"sensor_type": "GPS", "data": data}],
    }
    response = await older.post("/api/sensors", json=body)
    assert response.status_code == 422
    [rejected] = response.json()["rejected"]
    assert rejected["reason"] == "invalid_schema"
    assert "`lat` given twice" in rejected["detail"]


@pytest.mark.parametrize("robot_id", [-1, 1.5, True, "not an id!"])
async def test_robot_ids_that_are_not_ids(older: httpx.AsyncClient, robot_id: Any) -> None:
    body = {
        "robot_id": robot_id,
        "timestamp": naive(recent()),
        "sensors": [{"sensor_type": "GPS", "data": OLDER_GPS}],
    }
    response = await older.post("/api/sensors", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_schema"


def _decoder() -> PayloadDecoder:
    return PayloadDecoder(window=TimeWindow())


def test_naive_timestamps_in_the_configured_zone() -> None:
    wall = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=3)
    body = orjson.dumps(
        {
            "robot_id": 7,
            "timestamp": wall.isoformat(),
            "sensors": [{"sensor_type": "GPS", "data": OLDER_GPS}],
        }
    )
    now = datetime.now(UTC)
    berlin = ZoneInfo("Europe/Berlin")
    parsed = parse_ingest_body(body, decoder=_decoder(), received_at=now, naive_tz=berlin)
    [reading] = parsed.readings
    assert reading.robot_id == "7"
    assert reading.ts == wall.replace(tzinfo=berlin)
    assert reading.ts != wall.replace(tzinfo=UTC)  # Berlin is never at UTC's offset
    assert msgspec.json.decode(reading.data) == {"lat": 52.52, "lon": 13.405, "alt": 34.0}

    refused = ApiSettings(naive_timestamp_tz="reject").naive_tz
    assert refused is None
    with pytest.raises(ContractError, match="timestamp needs a time zone"):
        parse_ingest_body(body, decoder=_decoder(), received_at=now, naive_tz=refused)
    # A zone given in the timestamp is used whatever the setting.
    zoned = body.replace(wall.isoformat().encode(), (wall.isoformat() + "Z").encode())
    parsed = parse_ingest_body(zoned, decoder=_decoder(), received_at=now, naive_tz=None)
    assert parsed.readings[0].ts == wall.replace(tzinfo=UTC)


def test_the_zone_setting_is_checked() -> None:
    assert ApiSettings().naive_tz == ZoneInfo("UTC")
    with pytest.raises(ValidationError, match="IANA"):
        ApiSettings(naive_timestamp_tz="Mars/Olympus_Mons")


def test_older_names_map_onto_contract_fields() -> None:
    """The renaming table cannot drift from the schemas: each older name becomes a field the
    contract has, and every path the older clients filter on is a numeric contract field."""
    assert set(OLDER_FIELD_NAMES) == set(SENSOR_SCHEMAS)
    for sensor_type, renames in OLDER_FIELD_NAMES.items():
        fields = set(SENSOR_SCHEMAS[sensor_type].__struct_fields__)
        assert set(renames.values()) <= fields
        assert not set(renames) & fields
    for sensor_type, path in [
        ("imu", "acceleration.x"),
        ("imu", "gyroscope.z"),
        ("gps", "latitude"),
        ("gps", "longitude"),
        ("gps", "altitude"),
        ("lidar", "distance"),
    ]:
        assert contract_field(sensor_type, path) in NUMERIC_FIELDS[sensor_type]


async def test_robots_with_integer_ids_and_partial_put(older: httpx.AsyncClient) -> None:
    listed = await older.get("/api/robots")
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["items"]] == ["1", "2", "3", "r1", "r2", "r3"]

    put = await older.put("/api/robots/2", json={"status": "maintenance", "battery_level": 42.5})
    assert put.status_code == 200, put.text
    assert (put.json()["status"], put.json()["battery_level"]) == ("maintenance", 42.5)

    body = {
        "robot_id": 2,
        "timestamp": naive(recent()),
        "sensors": [{"sensor_type": "IMU", "data": OLDER_IMU}],
    }
    assert (await older.post("/api/sensors", json=body)).status_code == 201
    detail = await older.get("/api/robots/2")
    assert detail.status_code == 200
    doc = detail.json()
    assert (doc["id"], doc["status"], doc["battery_level"]) == ("2", "maintenance", 42.5)
    assert doc["latest"]["imu"]["data"]["accel"] == OLDER_IMU["acceleration"]
    assert (await older.get("/api/robots/99")).status_code == 404


async def _ingest_series(
    client: httpx.AsyncClient, start: datetime, n: int, robot_id: int = 1
) -> list[datetime]:
    times = []
    for i in range(n):
        ts = start + timedelta(seconds=i)
        times.append(ts)
        body = {
            "robot_id": robot_id,
            "timestamp": naive(ts),
            "sensors": [
                {
                    "sensor_type": "IMU",
                    "data": {
                        "acceleration": {"x": float(i + 1), "y": 0.0, "z": 9.8},
                        "gyroscope": {"x": 0.0, "y": 0.0, "z": float(-i)},
                    },
                },
                {
                    "sensor_type": "GPS",
                    "data": {"latitude": 10.0 + i, "longitude": 20.0 - i},
                },
                {"sensor_type": "LiDAR", "data": {"distance": 2.0 * i, "angle": 0.0}},
            ],
        }
        response = await client.post("/api/sensors", json=body)
        assert response.status_code == 201, response.text
    return times


async def test_sensors_with_older_query_names(older: httpx.AsyncClient) -> None:
    start = recent(600)
    times = await _ingest_series(older, start, 6)
    await _ingest_series(older, start, 2, robot_id=2)
    query = (
        f"/api/sensors?robot_id=1&sensor_type=IMU&start_time={naive(times[1])}"
        f"&end_time={naive(times[5])}&page=1&page_size=100"
    )
    response = await older.get(query)
    assert response.status_code == 200, response.text
    doc = response.json()
    # start_time inclusive, end_time exclusive, newest first; `data` is `items` again.
    got = [datetime.fromisoformat(r["ts"]) for r in doc["items"]]
    assert got == [times[4], times[3], times[2], times[1]]
    assert doc["data"] == doc["items"]
    assert {(r["robot_id"], r["sensor_type"]) for r in doc["items"]} == {("1", "imu")}
    assert doc["items"][0]["data"]["accel"]["x"] == 5.0
    assert doc["next_cursor"] is None

    small = await older.get("/api/sensors?robot_id=1&sensor_type=IMU&page=1&page_size=4")
    assert small.status_code == 200
    assert len(small.json()["data"]) == 4
    cursor = small.json()["next_cursor"]
    assert cursor is not None
    rest = await older.get(
        "/api/sensors",
        params={"robot_id": "1", "sensor_type": "IMU", "page_size": 4, "cursor": cursor},
    )
    assert [datetime.fromisoformat(r["ts"]) for r in rest.json()["data"]] == [times[1], times[0]]

    ours = await older.get("/api/sensors?robot_id=1&sensor_type=imu&limit=4")
    assert "data" not in ours.json()
    assert ours.json()["items"] == small.json()["items"]


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("page=2&page_size=10", "page"),
        ("page=0", "page"),
        ("start_time=2026-11-27T10:00:00&since=2026-11-27T10:00:00", "start_time"),
        ("end_time=2026-11-27T10:00:00&until=2026-11-27T10:00:00", "end_time"),
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
    ],
)
async def test_older_query_names_refused_clearly(
    older: httpx.AsyncClient, query: str, parameter: str
) -> None:
    response = await older.get(f"/api/sensors?robot_id=1&{query}")
    assert response.status_code == 422, response.text
    doc = response.json()
    if doc["error"] == "invalid_query":
        assert doc["parameter"] == parameter
        if parameter == "page" and "page=2" in query:
            assert "cursor" in doc["detail"] and "next_cursor" in doc["detail"]
    else:
        assert doc["error"] == "invalid_request"
        assert any(parameter in e["loc"] for e in doc["detail"])


@pytest.mark.parametrize(
    "sensor_type, field, values",
    [
        ("IMU", "acceleration.x", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ("IMU", "gyroscope.z", [0.0, -1.0, -2.0, -3.0, -4.0, -5.0]),
        ("GPS", "latitude", [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]),
        ("GPS", "longitude", [20.0, 19.0, 18.0, 17.0, 16.0, 15.0]),
        ("LiDAR", "distance", [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
    ],
)
async def test_filtered_is_a_moving_average(
    older: httpx.AsyncClient, sensor_type: str, field: str, values: list[float]
) -> None:
    await _ingest_series(older, recent(600), 6)
    await _ingest_series(older, recent(300), 3, robot_id=2)  # another robot's, not counted
    response = await older.get(
        f"/api/sensors/filtered?robot_id=1&sensor_type={sensor_type}&field={field}&window_size=3"
    )
    assert response.status_code == 200, response.text
    doc = response.json()
    expected = [
        sum(values[max(0, i - 2) : i + 1]) / len(values[max(0, i - 2) : i + 1]) for i in range(6)
    ]
    assert doc["robot_id"] == "1"
    assert (doc["sensor_type"], doc["field"], doc["window_size"]) == (sensor_type, field, 3)
    assert doc["original_data"] == values
    assert doc["filtered_data"] == pytest.approx(expected)

    # The same figures as our own moving average.
    ours = await older.get(
        "/api/sensors/aggregate",
        params={
            "robot_id": "1",
            "sensor_type": sensor_type.lower(),
            "field": contract_field(sensor_type.lower(), field),
            "window": 3,
        },
    )
    assert ours.status_code == 200
    assert [p["moving_avg"] for p in ours.json()["points"]] == doc["filtered_data"]


async def test_filtered_keeps_the_newest_readings(older: httpx.AsyncClient) -> None:
    await _ingest_series(older, recent(600), 8)
    response = await older.get(
        "/api/sensors/filtered?robot_id=1&sensor_type=IMU&field=acceleration.x"
        "&window_size=2&limit=3"
    )
    assert response.status_code == 200
    doc = response.json()
    assert doc["original_data"] == [6.0, 7.0, 8.0]
    assert doc["filtered_data"] == [5.5, 6.5, 7.5]  # each window reaches before the first point


@pytest.mark.parametrize(
    "query, error",
    [
        ("field=acceleration.x&window_size=0", "invalid_request"),
        ("field=acceleration.x&window_size=1001", "invalid_request"),
        ("field=acceleration.x&window_size=-3", "invalid_request"),
        ("field=acceleration.w&window_size=3", "invalid_query"),
        ("field=latitude&window_size=3", "invalid_query"),  # not an IMU field
    ],
)
async def test_filtered_refusals(older: httpx.AsyncClient, query: str, error: str) -> None:
    response = await older.get(f"/api/sensors/filtered?robot_id=1&sensor_type=IMU&{query}")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == error


async def test_stats_and_health_check(older: httpx.AsyncClient) -> None:
    await _ingest_series(older, recent(120), 4)
    stats = await older.get("/api/stats")
    assert stats.status_code == 200
    doc = stats.json()
    assert doc["total_readings"] == 12
    assert doc["by_sensor_type"] == {"imu": 4, "gps": 4, "lidar": 4}
    health = await older.get("/health_check")
    assert health.status_code == 200
    assert health.json() == {"status": "ready", "postgresql": "ok", "redis": "ok"}


async def test_older_routes_in_the_openapi_schema(older: httpx.AsyncClient) -> None:
    schema = (await older.get("/openapi.json")).json()
    assert "/api/sensors/filtered" in schema["paths"]
    assert "/health_check" in schema["paths"]
    names = {p["name"] for p in schema["paths"]["/api/sensors"]["get"]["parameters"]}
    assert {"start_time", "end_time", "page", "page_size"} <= names
