"""The older FastAPI service's own load client, as its users run it against us (issue 11).

Requests are the older clients' exactly: integer robot ids, ISO timestamps without a zone,
older field names, `page`/`page_size`/`start_time`/`end_time`, /api/sensors/filtered, an
`X-API-Key` on every call (`ROBOSENSE_API_KEY`, or a placeholder). Task weights are theirs:
ingest 100, robot list 3, robot detail 3, filtered reads 2 tasks of 6, sensors by robot 1,
by type 1, stats 1, PUT 1; zero wait. Robots 1-10 are registered at the start.

    .venv/bin/locust -f loadtest/locustfile_older.py --headless -u 20 -r 20 -t 20s \
        --host http://127.0.0.1:8000 --csv loadtest/results/locust-older

loadtest/locustfile.py is the same mix written in our own API's terms.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from locust import FastHttpUser, constant, events, task

from loadtest.locust_fleet import UniqueClock, register_robots
from loadtest.settings import ClientSettings

ROBOTS = list(range(1, 11))
# Locust is this file's entry point: it reads the key here, once.
API_KEY = ClientSettings().robosense_api_key or "older-client-key"
_IMU = {
    "acceleration": {"x": 0.1, "y": 0.2, "z": 9.8},
    "gyroscope": {"x": 0.01, "y": 0.02, "z": 0.03},
}
_GPS = {"latitude": 52.52, "longitude": 13.405, "altitude": 34.0}
_LIDAR = {"distance": 4.2, "angle": 12.5}
_IMU_FIELDS = ["acceleration.x", "acceleration.y", "acceleration.z", "gyroscope.z"]
_OTHER_FIELDS = [("GPS", "latitude"), ("GPS", "longitude"), ("LiDAR", "distance")]


def _naive(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


_clock = UniqueClock()


def _unique_now() -> str:
    return _naive(_clock.now())


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _register(environment: object, **_kwargs: object) -> None:
    register_robots(
        getattr(environment, "host", None), api_key=API_KEY, robot_ids=ROBOTS, model="old"
    )


class OlderClient(FastHttpUser):
    wait_time = constant(0)
    default_headers = {"X-API-Key": API_KEY}  # noqa: RUF012 - Locust's own class attribute

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
        self.client.post("/api/sensors", json=body, name="POST /api/sensors")

    @task(3)
    def robots(self) -> None:
        self.client.get("/api/robots", name="GET /api/robots")

    @task(3)
    def robot(self) -> None:
        self.client.get(f"/api/robots/{random.choice(ROBOTS)}", name="GET /api/robots/{id}")

    @task(6)
    def filtered_imu(self) -> None:
        self.client.get(
            f"/api/sensors/filtered?robot_id={random.choice(ROBOTS)}&sensor_type=IMU"
            f"&field={random.choice(_IMU_FIELDS)}&window_size=5",
            name="GET /api/sensors/filtered IMU",
        )

    @task(6)
    def filtered_other(self) -> None:
        sensor_type, field = random.choice(_OTHER_FIELDS)
        self.client.get(
            f"/api/sensors/filtered?robot_id={random.choice(ROBOTS)}&sensor_type={sensor_type}"
            f"&field={field}&window_size=5",
            name="GET /api/sensors/filtered GPS/LiDAR",
        )

    @task(1)
    def sensors_by_robot(self) -> None:
        now = datetime.now(UTC)
        self.client.get(
            f"/api/sensors?robot_id={random.choice(ROBOTS)}&sensor_type=IMU"
            f"&start_time={_naive(now - timedelta(minutes=5))}&end_time={_naive(now)}"
            "&page=1&page_size=100",
            name="GET /api/sensors?robot_id&start_time&page",
        )

    @task(1)
    def sensors_by_type(self) -> None:
        self.client.get(
            "/api/sensors?sensor_type=GPS&page=1&page_size=100",
            name="GET /api/sensors?sensor_type&page",
        )

    @task(1)
    def stats(self) -> None:
        self.client.get("/api/stats", name="GET /api/stats")

    @task(1)
    def update_robot(self) -> None:
        self.client.put(
            f"/api/robots/{random.choice(ROBOTS)}",
            json={"status": "active", "battery_level": round(random.uniform(20, 100), 1)},
            name="PUT /api/robots/{id}",
        )
