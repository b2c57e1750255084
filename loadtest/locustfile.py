"""The older FastAPI service's load mix, for Locust (zero wait).

Headless, against a running API (`python -m api`; robots 1-10 registered, e.g. by
`python -m loadtest.rest --sizes --duration 0`, or by the test_start hook below), with a key
of the read, ingest and registry scopes in ROBOSENSE_API_KEY (sent as `X-API-Key`):

    export ROBOSENSE_API_KEY=$(.venv/bin/python -m api keys create --name locust \
        --scope read --scope ingest --scope registry)
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 50 -t 60s \
        --host http://127.0.0.1:8000 --csv loadtest/results/locust

Locust spends far more CPU per request than the API does, so on 2 cores it measures itself;
`python -m loadtest.rest` drives the same mix with a lean asyncio client.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, events, task

from loadtest.locust_fleet import UniqueClock, register_robots
from loadtest.settings import ClientSettings

ROBOTS = [str(i) for i in range(1, 11)]
_IMU = {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0.01, "y": 0.02, "z": 0.03}}
_GPS = {"lat": 52.52, "lon": 13.405, "alt": 34.0}
_LIDAR = {"distance": 4.2, "angle": 12.5}
# Locust is this file's entry point: it reads the key here, once.
_HEADERS = {"X-API-Key": ClientSettings().robosense_api_key or ""}


_clock = UniqueClock()


def _unique_now() -> str:
    return _clock.now().isoformat()


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _register(environment: object, **_kwargs: object) -> None:
    register_robots(
        getattr(environment, "host", None),
        api_key=_HEADERS["X-API-Key"],
        robot_ids=ROBOTS,
        model="bench",
    )


class FleetClient(FastHttpUser):
    wait_time = constant(0)

    @task(100)
    def ingest(self) -> None:
        gps = None if random.random() < 0.05 else _GPS
        body = {
            "robot_id": random.choice(ROBOTS),
            "timestamp": _unique_now(),
            "sensors": [
                {"sensor_type": "IMU", "data": _IMU},
                {"sensor_type": "GPS", "data": gps},
                {"sensor_type": "LiDAR", "data": _LIDAR},
            ],
        }
        self.client.post("/api/sensors", json=body, name="POST /api/sensors", headers=_HEADERS)

    @task(3)
    def robots(self) -> None:
        self.client.get("/api/robots", name="GET /api/robots", headers=_HEADERS)

    @task(3)
    def robot(self) -> None:
        self.client.get(
            f"/api/robots/{random.choice(ROBOTS)}", name="GET /api/robots/{id}", headers=_HEADERS
        )

    @task(1)
    def sensors_by_robot(self) -> None:
        self.client.get(
            f"/api/sensors?robot_id={random.choice(ROBOTS)}",
            name="GET /api/sensors?robot_id",
            headers=_HEADERS,
        )

    @task(1)
    def sensors_by_type(self) -> None:
        self.client.get(
            "/api/sensors?sensor_type=gps", name="GET /api/sensors?sensor_type", headers=_HEADERS
        )

    @task(1)
    def stats(self) -> None:
        self.client.get("/api/stats", name="GET /api/stats", headers=_HEADERS)

    @task(1)
    def moving_average(self) -> None:
        self.client.get(
            "/api/sensors/aggregate?sensor_type=imu&field=accel.x"
            f"&robot_id={random.choice(ROBOTS)}&window=20",
            name="GET aggregate window=20",
            headers=_HEADERS,
        )

    @task(1)
    def bucket_average(self) -> None:
        self.client.get(
            "/api/sensors/aggregate?sensor_type=imu&field=accel.x"
            f"&robot_id={random.choice(ROBOTS)}&bucket=1m&fn=avg",
            name="GET aggregate bucket=1m",
            headers=_HEADERS,
        )
