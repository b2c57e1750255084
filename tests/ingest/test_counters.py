"""The counters' shards: entries spread over them, reads merge them, corrections add up right
(on one Redis server with one shard and on a 3-master Redis Cluster with three)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from redis.asyncio import RedisCluster as RedisClusterClient
from redis.crc import key_slot

from db.readings import SLOT_SECONDS
from db.sensor_aggregates import MinutePartial
from harness.services import RedisCluster
from harness.waiting import eventually
from ingest.counters import (
    ROLLING_WINDOW_MINUTES,
    SLOT_COUNTS_S,
    Counters,
    MinuteBucket,
    open_redis,
    shard_tags,
)
from ingest.journal_entry import JournalEntry, LastSeen, LatestReading, MinuteCount


def entry(robot: str, minute: int, n: int, *, ts_ms: int, seq0: int) -> str:
    return JournalEntry(
        groups=[MinuteCount(robot, "gps", minute, n, n, seq0, seq0 + n - 1)],
        latest=[LatestReading(robot, "gps", ts_ms, orjson.dumps({"ts": ts_ms}).decode())],
        last_seen=[LastSeen(robot, ts_ms)],
    ).to_json()


def shard_of_each(counters: Counters, ids: range) -> dict[str, int]:
    """Which shard (by its journal key's tag) each entry id goes to: entry id -> shard index."""
    tags = shard_tags(counters.shards)
    return {
        str(i): next(k for k, t in enumerate(tags) if f"{{{t}}}" in counters._journal_key(i))
        for i in ids
    }


def test_shard_tags_slice_the_slot_range_evenly() -> None:
    for shards in (1, 3, 5):
        slots = [key_slot(t.encode()) for t in shard_tags(shards)]
        assert [s * shards // 16384 for s in slots] == list(range(shards))


async def test_reads_merge_what_the_shards_hold(counters: Counters) -> None:
    minute = 60 * 29_000_000
    # Ten entries, newest first: on several shards, an older reading is applied after a newer.
    ids = range(1, 11)
    for i in ids:
        applied = await counters.apply(i, entry("r1", minute, 10, ts_ms=1000 - i, seq0=10 * i))
        assert applied
    assert not await counters.apply(3, entry("r1", minute, 10, ts_ms=5000, seq0=0))
    if counters.shards > 1:
        assert len(set(shard_of_each(counters, ids).values())) == counters.shards

    window = await counters.window([minute], top=3)
    assert window.totals == [{"*": 100, "gps": 100}]
    assert window.top_robots == [("r1", 100)]
    [latest] = await counters.latest(["r1"])
    assert orjson.loads(latest["gps"]) == {"ts": 999}
    _, seen = await counters.robot_live(["r1"])
    assert seen == [999.0]
    assert await counters.recently_seen(5) == ["r1"]
    seq = await counters.seq_stats("r1", "gps")
    assert seq is not None and (seq.count, seq.first, seq.last, seq.gaps) == (100, 10, 109, 0)
    assert await counters.applied_entries(list(range(1, 13))) == set(ids)


async def test_a_correction_commutes_with_batches_and_is_not_made_twice(
    counters: Counters,
) -> None:
    minute = 60 * 29_000_001
    for i in range(1, 5):
        await counters.apply(i, entry("r1", minute, 10, ts_ms=i, seq0=10 * i))
    [seen] = await counters.minute_buckets([minute])
    assert seen.total == 40
    # A batch lands after the reconciler read the minute; the correction must not erase it.
    await counters.apply(5, entry("r2", minute, 7, ts_ms=5, seq0=0))
    want = [("r1", "gps", 30)]
    assert await counters.replace_minute(minute, seen=seen, groups=want)
    # A second reconciler that read the minute before the first corrected it is refused.
    assert not await counters.replace_minute(minute, seen=seen, groups=want)
    [after] = await counters.minute_buckets([minute])
    assert after.same_counts(MinuteBucket.of([("r1", "gps", 30), ("r2", "gps", 7)]))
    assert (await counters.window([minute], top=5)).top_robots == [("r1", 30), ("r2", 7)]


async def test_a_different_shard_count_finds_no_counters(counters: Counters) -> None:
    await counters.mark_built(datetime.now(UTC))
    assert await counters.present()
    other = Counters(redis=counters.redis, prefix=counters.prefix, shards=counters.shards + 1)
    assert not await other.present()


@pytest.mark.slow
async def test_a_restarted_cluster_node_is_noticed_and_its_shard_missed(tmp_path: Path) -> None:
    """A master restarted without persistence comes back empty: the shard it held has lost its
    counters, so they count as lost (the bridge rebuilds them) until rebuilt."""
    with RedisCluster(workdir=tmp_path / "cluster") as cluster:
        async with open_redis(cluster.url, cluster=True) as client:
            counters = Counters(redis=client, prefix="t:", shards=3)
            await counters.mark_built(datetime.now(UTC))
            assert not await counters.restarted_since_last_look()
            assert await counters.present()

            node = cluster.nodes[1]
            node.kill()
            node.start()
            assert isinstance(client, RedisClusterClient)

            async def present() -> bool | str:
                try:
                    return await counters.present()
                except Exception as exc:  # noqa: BLE001 - the node rejoining: ask again
                    return repr(exc)

            assert await eventually(present, False) is False
            # The restarted node holds one shard: the other two kept their markers.
            found = [bool(await client.exists(k)) for k in counters._built_keys]
            assert sorted(found) == [False, True, True]
            await counters.mark_built(datetime.now(UTC))
            assert await counters.present()


async def test_the_live_views_reads_merge_the_shards(counters: Counters) -> None:
    minute = 60 * 29_000_000
    for i in range(1, 11):
        # r1: seq 10..109 in tens, with 20-29 left out (10 missing); r2 in minute + 60.
        if i != 2:
            assert await counters.apply(i, entry("r1", minute, 10, ts_ms=1000 + i, seq0=10 * i))
    assert await counters.apply(11, entry("r2", minute + 60, 5, ts_ms=2000, seq0=0))
    latest, stats = await counters.latest_with_seq(
        ["r1", "r3"], [("r1", "gps"), ("r2", "gps"), ("r3", "gps")]
    )
    assert [{k: orjson.loads(v) for k, v in r.items()} for r in latest] == [
        {"gps": {"ts": 1010}},
        {},
    ]
    assert set(stats) == {("r1", "gps"), ("r2", "gps")}
    assert stats["r1", "gps"].gaps == 10 and stats["r1", "gps"].count == 90
    assert stats["r2", "gps"].gaps == 0
    assert await counters.robot_minute_counts([minute, minute + 60, minute + 120]) == [
        {"r1": 90},
        {"r2": 5},
        {},
    ]


async def test_a_kept_windows_top_robots_are_its_minutes_sums_as_it_moves(
    counters: Counters,
) -> None:
    """A window of ROLLING_WINDOW_MINUTES ranks robots from sums each shard keeps and rolls
    (ingest/counters.py): through batches inside, before and after it, a correction, and moves
    forward, back and further than its length, they equal the sums of its minutes' robot
    sets, read here one minute at a time. On one server also with three shards (the cluster
    runs three)."""
    variants = [counters]
    if counters.shards == 1 and not isinstance(counters.redis, RedisClusterClient):
        variants.append(Counters(redis=counters.redis, prefix=f"{counters.prefix}3:", shards=3))
    for c in variants:
        await _window_moves(c)
        await c.clear()


async def _window_moves(counters: Counters) -> None:
    length = 15
    assert length in ROLLING_WINDOW_MINUTES
    base = 60 * 29_000_100
    rng = random.Random(15)
    ids = iter(range(1, 10_000))

    async def batches(lo: int, hi: int, count: int = 8) -> None:
        """Readings of random robots in random minutes lo..hi (offsets from base)."""
        for _ in range(count):
            robot, m = f"r{rng.randrange(9)}", base + 60 * rng.randrange(lo, hi + 1)
            n = rng.randrange(1, 50)
            assert await counters.apply(next(ids), entry(robot, m, n, ts_ms=m * 1000, seq0=0))

    async def check(first: int) -> None:
        minutes = [base + 60 * (first + i) for i in range(length)]
        want: dict[str, int] = {}
        for counts in await counters.robot_minute_counts(minutes):
            for robot, n in counts.items():
                want[robot] = want.get(robot, 0) + n
        ranked = (await counters.window(minutes, top=100)).top_robots
        assert dict(ranked) == want
        assert [n for _, n in ranked] == sorted(want.values(), reverse=True)
        top3 = (await counters.window(minutes, top=3)).top_robots
        assert [n for _, n in top3] == sorted(want.values(), reverse=True)[:3]

    await batches(-5, 40, count=40)
    await check(0)  # kept from here on
    for first in (0, 1, 4, 2, 2, 30, 31):
        await batches(first - 3, first + length + 3)  # inside, before and after the window
        await check(first)
    # A correction of a minute inside the window (the reconciler's) moves the sums too.
    minute = base + 60 * 40
    [seen] = await counters.minute_buckets([minute])
    assert await counters.replace_minute(minute, seen=seen, groups=[("r1", "gps", 3)])
    await check(31)
    await check(32)


async def test_robots_online_is_a_count_kept_through_changes_and_drops(
    counters: Counters,
) -> None:
    """/api/stats' robots online come from a count the status scripts keep in the status hash
    (not from reading every robot's status): it follows changes, resends and drops, and a
    hash written before the count existed is counted once."""
    minutes = [60 * 29_000_200]

    async def counts() -> tuple[int, int]:
        window = await counters.window(minutes, top=0)
        return window.robots_online, window.robots_with_status

    def doc(status: str) -> bytes:
        return orjson.dumps({"status": status, "at": 1})

    # As the scripts before the count left it.
    await counters.redis.hset(
        f"{counters.prefix}status", mapping={"r1": doc("online"), "r2": doc("offline")}
    )
    assert await counts() == (1, 2)
    await counters.set_statuses([("r3", "online", 2)])
    assert await counts() == (2, 3)
    await counters.set_statuses(
        [("r1", "online", 3), ("r1", "offline", 4), ("r2", "online", 5), ("r4", "offline", 6)]
    )
    assert await counts() == (2, 4)
    await counters.set_statuses([("r2", "online", 7), ("r3", "online", 8)])  # resent
    assert await counts() == (2, 4)
    assert await counters.drop_statuses(["r2", "r4", "r9"]) == 2
    assert await counts() == (1, 2)
    assert sorted(await counters.status_robot_ids()) == ["r1", "r3"]


async def test_fleet_sequence_gaps_merge_each_robot_over_shards_past_a_read_chunk(
    counters: Counters,
) -> None:
    """The fleet's gaps per sensor type (for /metrics) are read a chunk of robots at a time:
    every robot counts once, its seq hashes merged over the shards first, past the chunk's
    size (ingest/counters.py)."""
    minute = 60 * 29_000_300
    robots = [f"r{i:04d}" for i in range(1_205)]
    for k in range(3):  # three entries, so the shards each hold a part of every robot
        groups = [MinuteCount(r, "gps", minute, 10, 10, 100 * k, 100 * k + 9) for r in robots]
        assert await counters.apply(
            f"gaps-{k}",
            JournalEntry(groups=groups, last_seen=[LastSeen(r, 1) for r in robots]).to_json(),
        )
    # Each robot: seq 0-9, 100-109 and 200-209, 30 of 210 numbers: 180 missing.
    assert await counters.fleet_sequence_gaps(["imu", "gps"]) == {"gps": 180 * len(robots)}


def slotted(robot: str, minute: int, slots: list[int]) -> str:
    return JournalEntry(
        groups=[MinuteCount(robot, "gps", minute, sum(slots), 0, 0, 0, slots)]
    ).to_json()


async def test_slots_of_recent_minutes_are_counted_and_check_kept_slot_partials(
    counters: Counters,
) -> None:
    """A slot partial holds while the slot counts (over every shard) are the ones it was made
    from; minutes too old or ahead of Redis's clock get no slot counts, nor does a minute
    after reconciliation corrected it."""
    now = int(time.time())
    minute = now - now % 60
    old, ahead = minute - 60 - SLOT_COUNTS_S, minute + 120
    ids = iter(range(1, 100))
    for _ in range(6):  # on every shard
        for m in (minute, old, ahead):
            assert await counters.apply(next(ids), slotted("r1", m, [1, 2, 0, 0, 0, 0]))
    await counters.apply(next(ids), slotted("r2", minute, [0, 5, 0, 0, 0, 0]))
    first, second, third = minute, minute + SLOT_SECONDS, minute + 2 * SLOT_SECONDS

    def partial(readings: int) -> MinutePartial:
        return MinutePartial(readings, readings, float(readings), 0.0, 1.0)

    for robot_id, counts in (("r1", (6, 12, 0)), (None, (6, 17, 0))):
        await counters.store_partials(
            sensor_type="gps",
            path=["x"],
            robot_id=robot_id,
            minutes={},
            slots={s: partial(n) for s, n in zip((first, second, third), counts, strict=True)}
            | {old: partial(6), ahead: partial(6)},
        )
        minutes, slots = await counters.kept_partials(
            sensor_type="gps",
            path=["x"],
            robot_id=robot_id,
            minutes=[],
            slots=[first, second, third, old, ahead],
        )
        assert minutes == {}
        assert slots == {s: partial(n) for s, n in zip((first, second, third), counts, strict=True)}

    # A reading more in the second slot: its partial no longer holds, the others do.
    await counters.apply(next(ids), slotted("r1", minute, [0, 1, 0, 0, 0, 0]))
    _, slots = await counters.kept_partials(
        sensor_type="gps", path=["x"], robot_id="r1", minutes=[], slots=[first, second]
    )
    assert slots == {first: partial(6), second: None}

    [seen] = await counters.minute_buckets([minute])
    assert await counters.replace_minute(minute, seen=seen, groups=[("r1", "gps", 19)])
    _, slots = await counters.kept_partials(
        sensor_type="gps", path=["x"], robot_id="r1", minutes=[], slots=[first, second]
    )
    assert slots == {}
