"""The live stream against a real Mosquitto and the real app served by uvicorn: summaries,
fleet roll-ups and alerts published on fleet/# reach browsers' Server-Sent Events, filtered,
rate-limited and decimated for slow readers; tokens; the worker's client cap; a broker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import msgspec
import paho.mqtt.client as paho
import pytest
import uvicorn
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, aconnect_sse
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

from api.app import create_app
from api.keys import Scope
from api.live_token import LiveTokens
from api.settings import ApiSettings
from harness.services import Mosquitto, free_port
from harness.waiting import eventually
from mqtt_auth.identities import Identity, Role
from mqtt_auth.store import IdentityStore
from telemetry.live import (
    FLEET_ALERTS_TOPIC,
    FLEET_SUMMARY_TOPIC,
    Alert,
    AlertKind,
    FleetSummary,
    RobotState,
    RobotSummary,
    SensorLatest,
    Severity,
    encode,
    robot_summary_topic,
)
from tests.api.conftest import create_key
from tests.conftest import HARNESS

API_IDENTITY = "api-live-test"
WRITER = "live-writer"
SECRET = "live-test-secret"

pytestmark = pytest.mark.timeout(120)


def summary(robot_id: str, at: int, *, scan: int = 0) -> RobotSummary:
    """`scan`: that many lidar ranges too (a big summary)."""
    lidar = {"lidar": SensorLatest(at, {"ranges": [2.5] * scan})} if scan else {}
    return RobotSummary(
        robot_id=robot_id,
        at=at,
        state=RobotState.ONLINE,
        last_seen=at,
        rate_hz=13.0,
        sensors={
            "gps": SensorLatest(at, {"lat": 48.1, "lon": 11.5}),
            "battery": SensorLatest(at, {"level": 80.0}),
            "imu": SensorLatest(at, {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}}),
            **lidar,
        },
        battery_percent=80.0,
        gaps_total={"gps": 0},
        gaps_new=0,
        rejected_new=0,
        active_alerts=[],
    )


def fleet(at: int) -> FleetSummary:
    return FleetSummary(
        at=at,
        robots=2,
        states={RobotState.ONLINE: 2},
        rate_hz=26.0,
        gaps_new=0,
        rejected_new=0,
        active_alerts=1,
    )


ALERT = Alert(
    id=7,
    kind=AlertKind.BATTERY_LOW,
    severity=Severity.WARNING,
    robot_id="r2",
    raised_at=1,
    cleared_at=None,
    message="battery below 20 %",
)


@dataclass
class Stream:
    """One live-stream client, read by a task: its events as they came, data decoded."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    ended: bool = False

    def add(self, event: ServerSentEvent) -> None:
        self.events.append((event.event, json.loads(event.data)))

    def of(self, kind: str) -> list[Any]:
        return [data for event, data in self.events if event == kind]

    def summaries(self, robot_id: str | None = None) -> list[dict[str, Any]]:
        docs = self.of("summary")
        return [d for d in docs if robot_id is None or d["robot_id"] == robot_id]

    def missed(self) -> int:
        return sum(d["missed"] for d in self.of("dropped"))

    async def has(self, check: Callable[[Stream], bool]) -> bool:
        return check(self)


@dataclass
class LiveApi:
    app: FastAPI
    url: str
    mosquitto: Mosquitto
    read_key: str
    tasks: asyncio.TaskGroup
    # Set: slow streams start reading.
    reading: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def hub(self) -> Any:
        return self.app.state.resources.live

    async def token(self, key: str | None = None) -> str:
        async with httpx.AsyncClient(base_url=self.url) as client:
            response = await client.post(
                "/api/live/token", headers={"X-API-Key": key or self.read_key}
            )
        assert response.status_code == 200, response.text
        doc = response.json()
        assert set(doc) == {"token", "expires_at"}
        token: str = doc["token"]
        return token

    @contextlib.asynccontextmanager
    async def stream(
        self, *, token: str | None = None, slow: bool = False, **params: Any
    ) -> AsyncIterator[Stream]:
        """A client reading the stream in a task; `slow`: it reads nothing until the test
        says so (`reading.set()`), through a tiny receive window."""
        stream = Stream()
        # The kernel buffers what the client does not read: a small window keeps that small,
        # so the server must hold (and decimate) what the client cannot take.
        options = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)] if slow else []
        transport = httpx.AsyncHTTPTransport(socket_options=options)
        query = {"token": token or await self.token(), **params}
        opened = asyncio.Event()

        async def read() -> None:
            async with (
                httpx.AsyncClient(transport=transport, timeout=None) as client,
                aconnect_sse(client, "GET", f"{self.url}/api/live", params=query) as source,
            ):
                assert source.response.status_code == 200, await source.response.aread()
                opened.set()
                if slow:
                    await self.reading.wait()
                    # Now read at full speed: a window this small would take minutes to
                    # drain what the kernel already holds.
                    sock = source.response.extensions["network_stream"].get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                async for event in source.aiter_sse():
                    stream.add(event)
            stream.ended = True

        task = self.tasks.create_task(read())
        await asyncio.wait_for(opened.wait(), 30)
        try:
            yield stream
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """The app on a free port, by uvicorn in this event loop (its lifespan included)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return server.started

    try:
        await eventually(started, True, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def live_api(
    mosquitto: Mosquitto, database_url: str, redis_prefix: str, read_key: str, **settings: Any
) -> AsyncIterator[LiveApi]:
    if API_IDENTITY not in mosquitto.passwords:
        mosquitto.add(Identity(API_IDENTITY, Role.API, None))
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": HARNESS.redis_url,
        "redis_prefix": redis_prefix,
        "cursor_secret": SECRET,
        "mqtt_url": mosquitto.url_for(API_IDENTITY),
        "live_reconnect_max_s": 1.0,
        # Revocation is checked at each heartbeat.
        "live_heartbeat_s": 1.0,
    }
    app = create_app(ApiSettings(**{**base, **settings}))
    async with serve(app) as url, asyncio.TaskGroup() as tasks:
        api = LiveApi(app, url, mosquitto, read_key, tasks)
        await eventually(lambda: _value(api.hub.connected), True, timeout=30)
        yield api


async def _value(value: Any) -> Any:
    return value


@contextlib.asynccontextmanager
async def writer(mosquitto: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    """Publishes on fleet/# as the live service would (its role: writes fleet/# only)."""
    if WRITER not in mosquitto.passwords:
        mosquitto.add(Identity(WRITER, Role.LIVE, None))
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.port, username=WRITER, password=mosquitto.passwords[WRITER]
    ) as client:
        yield client


async def publish(client: aiomqtt.Client, message: RobotSummary | FleetSummary | Alert) -> None:
    """At the live service's QoS: summaries 0 (the API's client parses them itself), alerts 1
    (paho's path, acknowledged)."""
    if isinstance(message, RobotSummary):
        await client.publish(
            robot_summary_topic(message.robot_id), encode(message), qos=0, retain=True
        )
    elif isinstance(message, FleetSummary):
        await client.publish(FLEET_SUMMARY_TOPIC, encode(message), qos=0, retain=True)
    else:
        await client.publish(FLEET_ALERTS_TOPIC, encode(message), qos=1)


@pytest.fixture
async def read_key(pool: Any) -> str:
    return await create_key(pool, Scope.READ, name="live reader")


@pytest.fixture
async def api(
    mosquitto: Mosquitto, database_url: str, redis_prefix: str, read_key: str
) -> AsyncIterator[LiveApi]:
    async with live_api(mosquitto, database_url, redis_prefix, read_key) as running:
        yield running


async def test_events_arrive_filtered_by_robot_and_sensor_type(api: LiveApi) -> None:
    async with (
        api.stream(robot_id="r1", sensor_type="gps") as only_r1_gps,
        api.stream() as everything,
        writer(api.mosquitto) as out,
    ):
        await publish(out, fleet(1))
        await publish(out, summary("r2", 1))
        await publish(out, ALERT)
        await publish(out, summary("r1", 1))
        # Published last: once a client has it, the hub has dispatched everything before it.
        await publish(out, summary("r1", 2))
        done = lambda s: any(d["at"] == 2 for d in s.summaries("r1"))  # noqa: E731
        await eventually(lambda: only_r1_gps.has(done), True, timeout=30)
        await eventually(lambda: everything.has(done), True, timeout=30)

    assert only_r1_gps.summaries("r2") == []
    assert {d["robot_id"] for d in only_r1_gps.summaries()} == {"r1"}
    assert all(set(d["sensors"]) == {"gps"} for d in only_r1_gps.summaries())
    assert only_r1_gps.summaries("r1")[-1]["sensors"]["gps"]["data"] == {"lat": 48.1, "lon": 11.5}
    assert {d["robot_id"] for d in everything.summaries()} == {"r1", "r2"}
    assert set(everything.summaries("r2")[0]["sensors"]) == {"gps", "battery", "imu"}
    for stream in (only_r1_gps, everything):
        assert stream.of("fleet")[0] == json.loads(encode(fleet(1)))
        assert stream.of("alert") == [json.loads(encode(ALERT))]


async def test_a_new_client_gets_the_current_state_at_once(api: LiveApi) -> None:
    async with api.stream() as early, writer(api.mosquitto) as out:
        await publish(out, summary("r1", 5))
        await publish(out, fleet(5))
        await eventually(lambda: early.has(lambda s: len(s.events) == 2), True, timeout=30)
        # Nothing is published while the second client connects: what it gets is the state.
        async with api.stream() as late:
            await eventually(lambda: late.has(lambda s: len(s.events) == 2), True, timeout=30)
    assert [d["at"] for d in late.summaries("r1")] == [5]
    assert [d["at"] for d in late.of("fleet")] == [5]


def received() -> float:
    return REGISTRY.get_sample_value("robosense_api_live_received_total") or 0.0


async def test_the_worker_takes_only_the_robots_its_clients_watch(api: LiveApi) -> None:
    """The subscription follows the clients: r2's summaries never reach a worker whose only
    client watches r1; a client that comes for r2 gets r2's state with the subscription."""
    async with writer(api.mosquitto) as out:
        async with api.stream(robot_id="r1") as r1:
            before = received()
            for at in range(1, 21):
                await publish(out, summary("r2", at))
            # Published last: once the client has it, r2's would have come before it.
            await publish(out, summary("r1", 1))
            await eventually(lambda: r1.has(lambda s: bool(s.summaries("r1"))), True, timeout=30)
            assert received() - before == 1
        async with api.stream(robot_id="r2") as r2:
            await eventually(lambda: r2.has(lambda s: bool(s.summaries("r2"))), True, timeout=30)
    assert [d["at"] for d in r2.summaries("r2")] == [20]
    assert r1.summaries("r2") == []


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_slow_client_gets_the_newest_summaries_and_how_many_it_missed(
    api: LiveApi,
) -> None:
    robots = [f"r{i}" for i in range(20)]
    # ~12 MB of summaries: 3x what the sockets' buffers held before the first drop here (4 MB,
    # the kernel's tcp_wmem maximum).
    rounds = 100
    async with (
        api.stream(slow=True) as slow,
        api.stream() as fast,
        writer(api.mosquitto) as out,
    ):
        for at in range(1, rounds + 1):
            for robot_id in robots:
                await publish(out, summary(robot_id, at, scan=1200))
        await publish(out, summary("marker", 1))
        await eventually(lambda: fast.has(lambda s: bool(s.summaries("marker"))), True, timeout=120)
        api.reading.set()

        def caught_up(s: Stream) -> bool:
            newest = {d["robot_id"]: d["at"] for d in s.summaries()}
            return newest == {**dict.fromkeys(robots, rounds), "marker": 1}

        await eventually(lambda: slow.has(caught_up), True, timeout=120)

    delivered = len(slow.summaries())
    # Every summary published was either delivered or counted as missed, none twice.
    assert delivered + slow.missed() == rounds * len(robots) + 1
    assert slow.missed() > 0
    assert delivered < rounds * len(robots)
    # The fast client kept up (or nearly: it shares this busy event loop).
    assert len(fast.summaries()) + fast.missed() == rounds * len(robots) + 1
    assert fast.missed() < slow.missed()
    # Summaries of one robot never go back in time.
    for robot_id in robots:
        ats = [d["at"] for d in slow.summaries(robot_id)]
        assert ats == sorted(ats) and len(ats) == len(set(ats))


async def test_max_rate_hz_holds_per_robot(api: LiveApi) -> None:
    rate_hz = 0.5
    async with (
        api.stream(max_rate_hz=rate_hz) as limited,
        writer(api.mosquitto) as out,
    ):
        started = time.monotonic()
        await publish(out, summary("r1", 1))
        # Another robot has its own slot: the first robot's limit does not hold it back.
        await publish(out, summary("r2", 1))
        for at in range(2, 31):
            await publish(out, summary("r1", at))
        burst_s = time.monotonic() - started
        await eventually(
            lambda: limited.has(lambda s: any(d["at"] == 30 for d in s.summaries("r1"))),
            True,
            timeout=30,
        )
    r1 = limited.summaries("r1")
    # The first at once, then at most one per 1/rate seconds while the burst lasted, then the
    # newest when its turn came.
    assert len(r1) <= 2 + burst_s * rate_hz, (len(r1), burst_s)
    assert r1[-1]["at"] == 30
    assert len(r1) + limited.missed() == 30
    order = [(d["robot_id"], d["at"]) for d in limited.summaries()]
    assert set(order[:2]) == {("r1", 1), ("r2", 1)}, order


async def test_tokens(api: LiveApi, pool: Any, api_keys: dict[Scope, str]) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:

        async def status(**params: Any) -> tuple[int, dict[str, Any]]:
            async with client.stream("GET", "/api/live", params=params) as response:
                body = json.loads(await response.aread()) if response.status_code != 200 else {}
                return response.status_code, body

        key_id = api.read_key.split("_")[1]
        expired, _ = LiveTokens(SECRET.encode(), ttl_s=60).issue(key_id, now_s=time.time() - 61)
        foreign, _ = LiveTokens(b"another deployment", ttl_s=60).issue(key_id, now_s=time.time())
        valid = await api.token()
        cases: dict[str, dict[str, Any]] = {
            "no token": {},
            "garbage": {"token": "let-me-in"},
            "edited": {"token": "x" + valid[1:]},
            "another deployment's": {"token": foreign},
            "expired": {"token": expired},
            "an API key instead": {"token": api.read_key},
        }
        for case, params in cases.items():
            code, doc = await status(**params)
            assert (code, doc.get("error")) == (401, "unauthorized"), f"{case}: {code} {doc}"
            assert "live token" in doc["detail"], doc

        # Only a read key gets a token.
        ingest_only = await create_key(pool, Scope.INGEST)
        refused = await client.post("/api/live/token", headers={"X-API-Key": ingest_only})
        assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
        assert (await client.post("/api/live/token")).status_code == 401

        # A revoked key's token opens nothing, and its open streams end.
        doomed = await create_key(pool, Scope.READ)
        token = await api.token(doomed)
        async with api.stream(token=token) as open_stream:
            revoked = await client.delete(
                f"/api/keys/{doomed.split('_')[1]}", headers={"X-API-Key": api_keys[Scope.ADMIN]}
            )
            assert revoked.status_code == 204
            code, doc = await status(token=token)
            assert (code, doc.get("error")) == (401, "unauthorized")
            await eventually(lambda: open_stream.has(lambda s: s.ended), True, timeout=30)


async def test_the_worker_refuses_clients_past_its_cap(
    mosquitto: Mosquitto, database_url: str, redis_prefix: str, read_key: str
) -> None:
    async with live_api(mosquitto, database_url, redis_prefix, read_key, live_max_clients=2) as api:
        token = await api.token()
        async with api.stream(token=token), api.stream(token=token):
            async with httpx.AsyncClient(base_url=api.url) as client:
                response = await client.get("/api/live", params={"token": token})
            assert response.status_code == 503
            assert response.json()["error"] == "overloaded"
            assert int(response.headers["Retry-After"]) >= 1
        # Both closed: their slots are free again.
        await eventually(lambda: _value(api.hub.clients), 0, timeout=30)
        async with api.stream(token=token):
            assert api.hub.clients == 1


async def test_the_subscriber_recovers_after_a_broker_restart(api: LiveApi) -> None:
    async with api.stream(robot_id="r1") as stream:
        async with writer(api.mosquitto) as out:
            await publish(out, summary("r1", 1))

        async def got(at: int) -> bool:
            return at in [d["at"] for d in stream.summaries("r1")]

        await eventually(lambda: got(1), True, timeout=30)
        old_pid = api.mosquitto.proc.pid if api.mosquitto.proc else None

        api.mosquitto.stop()
        await eventually(lambda: _value(api.hub.connected), False, timeout=30)
        api.mosquitto.start()
        assert api.mosquitto.proc is not None and api.mosquitto.proc.pid != old_pid
        await eventually(lambda: _value(api.hub.connects), 2, timeout=60)

        async with writer(api.mosquitto) as out:
            await publish(out, summary("r1", 2))
        await eventually(lambda: got(2), True, timeout=30)
        # The same stream, open throughout.
        assert not stream.ended


async def test_each_worker_provisions_its_own_identity(
    mosquitto: Mosquitto, database_url: str, redis_prefix: str, read_key: str, tmp_path: Path
) -> None:
    store = IdentityStore(mosquitto.auth)

    def live_identities() -> list[Identity]:
        return [i for i in store.identities() if i.role is Role.API]

    async with live_api(
        mosquitto,
        database_url,
        redis_prefix,
        read_key,
        mqtt_url=mosquitto.url,  # no user: the worker makes its own
        live_provision_identity=True,
        mqtt_auth_dir=str(mosquitto.auth.directory),
        mosquitto_pid_file=str(mosquitto.auth.pid_file),
    ) as api:
        mine = [i.username for i in live_identities() if i.username != API_IDENTITY]
        assert len(mine) == 1 and mine[0].startswith("api-live-")
        async with writer(api.mosquitto) as out, api.stream() as stream:
            await publish(out, summary("r1", 1))
            await eventually(lambda: stream.has(lambda s: bool(s.summaries("r1"))), True)
    assert [i.username for i in live_identities()] == [API_IDENTITY]


async def test_summaries_that_arrive_while_the_loop_is_busy_are_superseded_and_told(
    api: LiveApi,
) -> None:
    """The worker's event loop busy (here: blocked) while summaries arrive: the subscriber's
    thread keeps reading them, keeps the newest per robot, and each client is told how many it
    missed; nothing is lost without a count."""
    robots = [f"r{i}" for i in range(5)]
    rounds = 40
    published = len(robots) * rounds
    mosquitto = api.mosquitto
    if WRITER not in mosquitto.passwords:
        mosquitto.add(Identity(WRITER, Role.LIVE, None))

    def publish_while_the_loop_is_blocked() -> None:
        received0 = received()
        out = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        out.username_pw_set(WRITER, mosquitto.passwords[WRITER])
        out.connect("127.0.0.1", mosquitto.port)
        out.loop_start()
        try:
            for at in range(1, rounds + 1):
                for robot_id in robots:
                    info = out.publish(
                        robot_summary_topic(robot_id), encode(summary(robot_id, at)), qos=1
                    )
                    info.wait_for_publish(timeout=10)
        finally:
            out.disconnect()
            out.loop_stop()
        # paho's thread receives them all while this loop does nothing.
        deadline = time.monotonic() + 30
        while received() - received0 < published:
            if time.monotonic() > deadline:
                raise TimeoutError("the subscriber did not receive every summary")
            time.sleep(0.01)

    async with api.stream() as stream:
        superseded0 = api.hub.superseded
        publish_while_the_loop_is_blocked()

        def caught_up(s: Stream) -> bool:
            return {d["robot_id"]: d["at"] for d in s.summaries()} == dict.fromkeys(robots, rounds)

        await eventually(lambda: stream.has(caught_up), True, timeout=30)
        await eventually(
            lambda: stream.has(lambda s: len(s.summaries()) + s.missed() >= published),
            True,
            timeout=30,
        )
    # The fault happened: the hub got far fewer than were published.
    assert api.hub.superseded - superseded0 >= published - 2 * len(robots)
    assert len(stream.summaries()) + stream.missed() == published
    assert len(stream.summaries()) < published


async def test_summaries_and_alerts_interleaved_at_fleet_rate_all_arrive(api: LiveApi) -> None:
    """A burst as the live service sends it: summaries at QoS 0, which the subscriber's own
    reader parses (many per socket read), and QoS 1 alerts between them, which go to paho
    (tests/telemetry/test_mqtt_reader.py checks that paho acknowledges them). Every alert
    and the newest summary, published last, reach the stream: nothing is lost or reordered
    where the two paths meet."""
    robots = [f"r{i}" for i in range(3000)]
    alerts = 100
    mosquitto = api.mosquitto
    if WRITER not in mosquitto.passwords:
        mosquitto.add(Identity(WRITER, Role.LIVE, None))
    out = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    out.username_pw_set(WRITER, mosquitto.passwords[WRITER])
    out.max_inflight_messages_set(alerts)
    out.connect("127.0.0.1", mosquitto.port)
    out.loop_start()
    async with api.stream(robot_id="r0") as stream:
        try:
            sent: list[paho.MQTTMessageInfo] = []
            for i, robot_id in enumerate(robots):
                out.publish(robot_summary_topic(robot_id), encode(summary(robot_id, 1)), qos=0)
                if i % (len(robots) // alerts) == 0:
                    alert = msgspec.structs.replace(ALERT, id=1000 + len(sent), robot_id=robot_id)
                    sent.append(out.publish(FLEET_ALERTS_TOPIC, encode(alert), qos=1))
            out.publish(robot_summary_topic("r0"), encode(summary("r0", 2)), qos=0)
            for info in sent:
                await asyncio.to_thread(info.wait_for_publish, 10)
        finally:
            out.disconnect()
            out.loop_stop()

        def complete(s: Stream) -> bool:
            return len(s.of("alert")) == alerts and any(d["at"] == 2 for d in s.summaries("r0"))

        await eventually(lambda: stream.has(complete), True, timeout=30)
    assert sorted(a["id"] for a in stream.of("alert")) == list(range(1000, 1000 + alerts))
