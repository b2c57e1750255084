"""The live hub's per-client bounds, in process (the stream itself: tests/api/test_live.py)."""

from __future__ import annotations

import json

import pytest

from api.http_errors import LiveStreamFullError
from api.live_hub import DROPPED, SUMMARY, LiveFilter, LiveHub
from telemetry.live import RobotState, RobotSummary, SensorLatest, encode, robot_summary_topic

EVERYTHING = LiveFilter(robots=None, sensor_types=None, min_interval_s=0.0)


def summary(robot_id: str, at: int) -> bytes:
    return encode(
        RobotSummary(
            robot_id=robot_id,
            at=at,
            state=RobotState.ONLINE,
            last_seen=at,
            rate_hz=1.0,
            sensors={"lidar": SensorLatest(at, {"ranges": [1.5] * 200})},  # ~1 KB
            battery_percent=None,
            gaps_total={},
            gaps_new=0,
            rejected_new=0,
            active_alerts=[],
        )
    )


async def test_a_client_that_reads_nothing_holds_at_most_its_byte_cap() -> None:
    hub = LiveHub(max_clients=10, client_max_bytes=4096, retry_after_s=1)
    client = hub.open_client(EVERYTHING)
    for at in range(1, 11):
        for i in range(50):
            hub.dispatch(robot_summary_topic(f"r{i}"), summary(f"r{i}", at))
            assert client.pending_bytes <= 4096
    events = []
    while (event := await client.next_event(within_s=0)) is not None:
        events.append(event)
    delivered = [json.loads(e.data) for e in events if e.event == SUMMARY]
    missed = sum(e.missed for e in events if e.event == DROPPED)
    assert delivered and all(d["at"] == 10 for d in delivered)
    assert len(delivered) + missed == 500


async def test_undecodable_messages_are_skipped_and_counted() -> None:
    hub = LiveHub(max_clients=10, client_max_bytes=4096, retry_after_s=1)
    client = hub.open_client(EVERYTHING)
    hub.dispatch(robot_summary_topic("r1"), b"not json")
    hub.dispatch("fleet/summary", b'{"at": "soon"}')
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 1))
    assert hub.undecodable == 2
    event = await client.next_event(within_s=0)
    assert event is not None and json.loads(event.data)["at"] == 1


def test_the_worker_cap() -> None:
    hub = LiveHub(max_clients=2, client_max_bytes=4096, retry_after_s=3)
    first = hub.open_client(EVERYTHING)
    hub.open_client(EVERYTHING)
    with pytest.raises(LiveStreamFullError) as refused:
        hub.open_client(EVERYTHING)
    assert refused.value.retry_after_s == 3
    hub.close_client(first)
    hub.open_client(EVERYTHING)
