"""The live hub's per-client bounds and the subscriber's newest-per-topic inbox, in process
(the stream itself: tests/api/test_live.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api import live_hub
from api.http_errors import LiveStreamFullError
from api.live_hub import DROPPED, SUMMARY, LiveClient, LiveFilter, LiveHub
from api.live_mqtt import LatestInbox
from telemetry.live import (
    FLEET_ALERTS_TOPIC,
    FLEET_SUMMARY_TOPIC,
    ROBOT_SUMMARIES_FILTER,
    RobotState,
    RobotSummary,
    SensorLatest,
    encode,
    robot_summary_topic,
)

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


def robots(*ids: str) -> LiveFilter:
    return LiveFilter(robots=frozenset(ids), sensor_types=None, min_interval_s=0)


def test_the_worker_takes_what_its_clients_watch() -> None:
    hub = LiveHub(max_clients=10, client_max_bytes=4096, retry_after_s=1)
    changes = []
    hub.on_interest_changed(lambda: changes.append(hub.interest()))
    always = {FLEET_SUMMARY_TOPIC, FLEET_ALERTS_TOPIC}
    assert hub.interest() == always
    r1_r2 = hub.open_client(robots("r1", "r2"))
    r2 = hub.open_client(robots("r2"))
    assert hub.interest() == always | {robot_summary_topic("r1"), robot_summary_topic("r2")}
    everything = hub.open_client(EVERYTHING)
    assert hub.interest() == always | {ROBOT_SUMMARIES_FILTER}
    hub.close_client(everything)
    hub.close_client(r1_r2)
    assert hub.interest() == always | {robot_summary_topic("r2")}
    hub.close_client(r2)
    hub.close_client(r2)  # twice: nothing changes
    assert hub.interest() == always
    # Told once per change, not per client: r2 watched by a second client changed nothing.
    assert len(changes) == 5


def test_past_the_topic_limit_one_wildcard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_hub, "MAX_ROBOT_TOPICS", 2)
    hub = LiveHub(max_clients=10, client_max_bytes=4096, retry_after_s=1)
    hub.open_client(robots("r1", "r2"))
    assert ROBOT_SUMMARIES_FILTER not in hub.interest()
    three = hub.open_client(robots("r3"))
    assert ROBOT_SUMMARIES_FILTER in hub.interest()
    hub.close_client(three)
    assert ROBOT_SUMMARIES_FILTER not in hub.interest()


async def test_a_robot_no_longer_watched_is_forgotten() -> None:
    """Its summaries stop coming when the worker unsubscribes: kept, it would go stale and be
    a later client's first state. One that still arrives (sent before the unsubscribe) is not
    kept either; the next watcher gets the state with its subscription."""
    hub = LiveHub(max_clients=10, client_max_bytes=1 << 20, retry_after_s=1)
    first = hub.open_client(robots("r1"))
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 1))
    hub.close_client(first)
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 2))
    later = hub.open_client(robots("r1"))
    assert await later.next_event(within_s=0) is None
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 3))
    event = await later.next_event(within_s=0)
    assert event is not None and json.loads(event.data)["at"] == 3


async def test_summaries_nobody_watches_are_decoded_when_someone_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the worker takes every robot's summaries (past the topic limit), the newest of each
    robot is kept while nobody watches it and decoded for the first client that does (its
    current state); one that does not decode is found and counted then, and skipped as on
    arrival."""
    monkeypatch.setattr(live_hub, "MAX_ROBOT_TOPICS", 1)
    hub = LiveHub(max_clients=10, client_max_bytes=1 << 20, retry_after_s=1)
    hub.open_client(robots("w1", "w2"))
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 1))
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 2))
    hub.dispatch(robot_summary_topic("r2"), b"not json")
    hub.dispatch(robot_summary_topic("r3"), summary("r3", 1))
    assert hub.undecodable == 0  # nothing was decoded yet
    r1_and_r2 = hub.open_client(robots("r1", "r2"))
    assert hub.undecodable == 1
    first = await r1_and_r2.next_event(within_s=0)
    assert first is not None and json.loads(first.data) == json.loads(summary("r1", 2))
    assert await r1_and_r2.next_event(within_s=0) is None
    everything = hub.open_client(EVERYTHING)
    states = []
    while (event := await everything.next_event(within_s=0)) is not None:
        states.append((json.loads(event.data)["robot_id"], json.loads(event.data)["at"]))
    assert sorted(states) == [("r1", 2), ("r3", 1)]
    assert hub.undecodable == 1


def test_the_worker_cap() -> None:
    hub = LiveHub(max_clients=2, client_max_bytes=4096, retry_after_s=3)
    first = hub.open_client(EVERYTHING)
    hub.open_client(EVERYTHING)
    with pytest.raises(LiveStreamFullError) as refused:
        hub.open_client(EVERYTHING)
    assert refused.value.retry_after_s == 3
    hub.close_client(first)
    hub.open_client(EVERYTHING)


async def test_summaries_superseded_in_the_subscriber_are_told_to_each_watching_client() -> None:
    inbox = LatestInbox()
    hub = LiveHub(max_clients=10, client_max_bytes=1 << 20, retry_after_s=1)
    watching = hub.open_client(EVERYTHING)
    other = hub.open_client(
        LiveFilter(robots=frozenset({"r2"}), sensor_types=None, min_interval_s=0)
    )
    wakes = [inbox.put(robot_summary_topic("r1"), summary("r1", at)) for at in range(1, 6)]
    wakes.append(inbox.put(robot_summary_topic("r2"), summary("r2", 1)))
    # One wake for the batch, not one per message.
    assert wakes == [True] + [False] * 5
    alerts, alerts_dropped, latest = inbox.take()
    assert (alerts, alerts_dropped) == ([], 0)
    assert [(t, n) for t, (_, n) in latest.items()] == [
        (robot_summary_topic("r1"), 4),
        (robot_summary_topic("r2"), 0),
    ]
    assert (inbox.received, inbox.superseded) == (6, 4)
    for topic, (payload, superseded) in latest.items():
        hub.dispatch(topic, payload, superseded=superseded)
    assert hub.superseded == 4

    async def drain(client: LiveClient) -> tuple[list[dict[str, Any]], int]:
        events = []
        while (event := await client.next_event(within_s=0)) is not None:
            events.append(event)
        delivered = [json.loads(e.data) for e in events if e.event == SUMMARY]
        return delivered, sum(e.missed for e in events if e.event == DROPPED)

    delivered, missed = await drain(watching)
    assert [(d["robot_id"], d["at"]) for d in delivered] == [("r1", 5), ("r2", 1)]
    assert missed == 4
    # r1's losses are not told to a client that does not watch r1.
    assert await drain(other) == ([{**json.loads(summary("r2", 1))}], 0)
    # The next put wakes the loop again.
    assert inbox.put(robot_summary_topic("r1"), summary("r1", 6))


async def test_a_closed_client_is_offered_nothing_and_the_others_still_are() -> None:
    hub = LiveHub(max_clients=10, client_max_bytes=1 << 20, retry_after_s=1)
    only_r1 = LiveFilter(robots=frozenset({"r1"}), sensor_types=None, min_interval_s=0)
    gone = hub.open_client(only_r1)
    stays = hub.open_client(only_r1)
    everything = hub.open_client(EVERYTHING)
    hub.close_client(gone)
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 1))
    assert gone.pending_bytes == 0
    assert stays.pending_bytes > 0 and everything.pending_bytes > 0
    hub.close_client(stays)
    hub.dispatch(robot_summary_topic("r1"), summary("r1", 2))
    events = []
    while (event := await everything.next_event(within_s=0)) is not None:
        events.append(event)
    # r1's first summary was still waiting: superseded, and told.
    assert [(e.event, e.missed) for e in events] == [(DROPPED, 1), (SUMMARY, 0)]
    assert json.loads(events[1].data)["at"] == 2
