"""Live counters in Redis: this module owns every key, the script that writes them and the
one read API (the bridge, the API, the rebuild and the tests all go through `Counters`).

Layout, under a configurable prefix (default `rs:`); minutes are epoch seconds of the minute's start
in the reading's own time (so a window's count equals COUNT(*) over `ts` in that window):
  m:{minute}:t   hash   `*` -> all readings, `{sensor_type}` -> readings of that type
  m:{minute}:r   zset   robot_id -> readings (top-N robots is a ZUNION over the window)
  m:{minute}:rs  hash   `{robot_id}/{sensor_type}` -> readings
  m:{minute}:x   hash   reason -> rejected (minute of receipt)
  latest:{robot} hash   `{sensor_type}` -> JSON of the newest reading, `{sensor_type}:ts` -> its ms
  seq:{robot}/{sensor_type} hash  n, min, max of inserted seqs: gaps = max - min + 1 - n
  last_seen      zset   robot_id -> ms of the last reading received
  status         hash   robot_id -> JSON {"status": "online"|"offline", "at": ms of the change};
                        registered robots only (the bridge filters and prunes)
  journal:{id}   string marker: this journal entry was applied (makes apply idempotent)
  meta:built     string when the counters were last rebuilt from PostgreSQL; its absence means
                 Redis lost them (restart without persistence), so they are rebuilt
  meta:run_id    string the Redis server's run_id when last looked at (a restart changes it)

Every update of one batch (a JournalEntry, `ingest/journal_entry.py`) runs in one Lua script,
so a batch is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

# Redis is away (down, restarting, unreachable): counter updates wait in the journal.
COUNTERS_AWAY_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

# cjson turns integers into doubles and Lua 5.1 prints them with 14 digits: milliseconds since
# the epoch (13 digits) survive, microseconds would not.
_APPLY_LUA = """
local p = ARGV[1]
if not redis.call('SET', p .. 'journal:' .. ARGV[2], '1', 'NX', 'EX', ARGV[4]) then
  return 0
end
local e = cjson.decode(ARGV[3])
local ttl = ARGV[4]
local touched = {}
for _, g in ipairs(e.groups) do
  local robot, sensor, minute, n = g.robot, g.sensor, g.minute, g.count
  local mk = p .. 'm:' .. string.format('%d', minute)
  redis.call('HINCRBY', mk .. ':t', '*', n)
  redis.call('HINCRBY', mk .. ':t', sensor, n)
  redis.call('ZINCRBY', mk .. ':r', n, robot)
  redis.call('HINCRBY', mk .. ':rs', robot .. '/' .. sensor, n)
  touched[mk] = true
  if g.seq_count > 0 then
    local sk = p .. 'seq:' .. robot .. '/' .. sensor
    redis.call('HINCRBY', sk, 'n', g.seq_count)
    local cur = redis.call('HMGET', sk, 'min', 'max')
    if (not cur[1]) or tonumber(cur[1]) > g.seq_min then
      redis.call('HSET', sk, 'min', string.format('%d', g.seq_min))
    end
    if (not cur[2]) or tonumber(cur[2]) < g.seq_max then
      redis.call('HSET', sk, 'max', string.format('%d', g.seq_max))
    end
  end
end
for _, x in ipairs(e.rejected) do
  local mk = p .. 'm:' .. string.format('%d', x.minute)
  redis.call('HINCRBY', mk .. ':x', x.reason, x.count)
  touched[mk] = true
end
for mk, _ in pairs(touched) do
  redis.call('EXPIRE', mk .. ':t', ttl)
  redis.call('EXPIRE', mk .. ':r', ttl)
  redis.call('EXPIRE', mk .. ':rs', ttl)
  redis.call('EXPIRE', mk .. ':x', ttl)
end
for _, l in ipairs(e.latest) do
  local lk = p .. 'latest:' .. l.robot
  local cur = redis.call('HGET', lk, l.sensor .. ':ts')
  if (not cur) or tonumber(cur) < l.ts_ms then
    redis.call('HSET', lk, l.sensor, l.reading, l.sensor .. ':ts', string.format('%d', l.ts_ms))
  end
end
for _, s in ipairs(e.last_seen) do
  redis.call('ZADD', p .. 'last_seen', 'GT', string.format('%d', s.at_ms), s.robot)
end
return 1
"""


# Rewrites one minute's reading counts, if its total is still what the caller saw (a batch
# applied meanwhile changes it, and the caller's figures would be stale).
_REPLACE_MINUTE_LUA = """
local mk = ARGV[1] .. 'm:' .. ARGV[2]
local cur = redis.call('HGET', mk .. ':t', '*')
if (cur or '') ~= ARGV[3] then
  return 0
end
redis.call('DEL', mk .. ':t', mk .. ':r', mk .. ':rs')
local groups = cjson.decode(ARGV[5])
for _, g in ipairs(groups) do
  local robot, sensor, n = g[1], g[2], g[3]
  redis.call('HINCRBY', mk .. ':t', '*', n)
  redis.call('HINCRBY', mk .. ':t', sensor, n)
  redis.call('ZINCRBY', mk .. ':r', n, robot)
  redis.call('HINCRBY', mk .. ':rs', robot .. '/' .. sensor, n)
end
if #groups > 0 then
  redis.call('EXPIRE', mk .. ':t', ARGV[4])
  redis.call('EXPIRE', mk .. ':r', ARGV[4])
  redis.call('EXPIRE', mk .. ':rs', ARGV[4])
end
return 1
"""


_SET_STATUSES_LUA = """
local key = ARGV[1]
for i = 2, #ARGV, 3 do
  local cur = redis.call('HGET', key, ARGV[i])
  if (not cur) or cjson.decode(cur).status ~= ARGV[i + 1] then
    redis.call('HSET', key, ARGV[i], ARGV[i + 2])
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class MinuteBucket:
    """One minute's reading counts as Redis holds them."""

    total: int | None  # `*` of m:{minute}:t; None when the bucket is absent
    by_robot_sensor: dict[str, int]  # `{robot_id}/{sensor_type}` -> readings


@dataclass(frozen=True, slots=True)
class SeqStats:
    count: int
    first: int
    last: int

    @property
    def gaps(self) -> int:
        return self.last - self.first + 1 - self.count


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the per-minute counters hold for a run of minutes, fetched in one round trip."""

    totals: list[dict[str, int]]  # per minute: `*` and each sensor type
    rejected: list[dict[str, int]]  # per minute: reason -> count
    top_robots: list[tuple[str, int]]  # most readings first
    robots_online: int
    robots_with_status: int


class Counters:
    """The Redis side of the pipeline: writes (the Lua script, statuses, rebuild support) and
    the read API. Every read is one Redis round trip. Takes a connected client; does not own
    it."""

    def __init__(self, *, redis: Redis, prefix: str = "rs:", ttl_s: int = 26 * 3600) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._apply = redis.register_script(_APPLY_LUA)
        self._replace_minute = redis.register_script(_REPLACE_MINUTE_LUA)
        self._set_statuses = redis.register_script(_SET_STATUSES_LUA)

    # Keys (the layout above; the Lua script builds the same names from the prefix).

    def _minute_key(self, minute: int, kind: str) -> str:
        return f"{self.prefix}m:{minute}:{kind}"

    def _latest_key(self, robot_id: str) -> str:
        return f"{self.prefix}latest:{robot_id}"

    def _seq_key(self, robot_id: str, sensor_type: str) -> str:
        return f"{self.prefix}seq:{robot_id}/{sensor_type}"

    def _journal_key(self, entry_id: int | str) -> str:
        return f"{self.prefix}journal:{entry_id}"

    @property
    def _status_key(self) -> str:
        return f"{self.prefix}status"

    @property
    def _last_seen_key(self) -> str:
        return f"{self.prefix}last_seen"

    @property
    def _built_key(self) -> str:
        return f"{self.prefix}meta:built"

    @property
    def _run_id_key(self) -> str:
        return f"{self.prefix}meta:run_id"

    # Writes.

    async def apply(self, entry_id: int | str, entry: str) -> bool:
        """Applies a journal entry (JournalEntry JSON) once; False when it had been already."""
        applied = await self._apply(args=[self.prefix, str(entry_id), entry, self.ttl_s])
        return bool(applied)

    async def set_statuses(self, statuses: Iterable[tuple[str, str, int]]) -> None:
        """Records each robot's status, keeping `at` (when it changed) if it is unchanged: the
        broker resends retained statuses on every re-subscription."""
        args: list[str | bytes] = [self._status_key]
        for robot, status, at_ms in statuses:
            args += [robot, status, orjson.dumps({"status": status, "at": at_ms})]
        if len(args) > 1:
            await self._set_statuses(args=args)

    async def statuses(self, robot_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not robot_ids:
            return {}
        values = await self.redis.hmget(self._status_key, list(robot_ids))
        return {r: orjson.loads(v) for r, v in zip(robot_ids, values, strict=True) if v is not None}

    async def minute_buckets(self, minutes: Sequence[int]) -> list[MinuteBucket]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hget(self._minute_key(minute, "t"), "*")
                pipe.hgetall(self._minute_key(minute, "rs"))
            results = await pipe.execute()
        return [
            MinuteBucket(
                None if total is None else int(total),
                {k.decode(): int(v) for k, v in rs.items()},
            )
            for total, rs in zip(results[::2], results[1::2], strict=True)
        ]

    async def replace_minute(
        self, minute: int, *, total_before: int | None, groups: Sequence[tuple[str, str, int]]
    ) -> bool:
        """Sets a minute's counts to `groups` (robot, sensor type, readings) unless its total
        changed from `total_before`; True when it did."""
        done = await self._replace_minute(
            args=[
                self.prefix,
                minute,
                "" if total_before is None else str(total_before),
                self.ttl_s,
                orjson.dumps([list(g) for g in groups]).decode() if groups else "[]",
            ]
        )
        return bool(done)

    async def applied_entries(self, entry_ids: Sequence[int]) -> set[int]:
        """Which of these journal entries Redis has applied (their marker is there)."""
        if not entry_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.exists(self._journal_key(entry_id))
            found = await pipe.execute()
        return {i for i, f in zip(entry_ids, found, strict=True) if f}

    async def restarted_since_last_look(self) -> bool:
        """True when the Redis server restarted since any process last asked, which it may do
        stale (from an older snapshot) or empty. The server's run_id changes at each start;
        the one last seen is kept in Redis itself, so a snapshot brings back an older one, and
        GETSET tells one asker only."""
        run_id = str((await self.redis.info("server"))["run_id"])
        previous = cast(bytes | None, await self.redis.getset(self._run_id_key, run_id))
        return previous is not None and previous.decode() != run_id

    async def status_robot_ids(self) -> list[str]:
        ids = await self.redis.hkeys(self._status_key)
        return [i.decode() for i in cast(list[bytes], ids)]

    async def drop_statuses(self, robot_ids: Sequence[str]) -> int:
        if not robot_ids:
            return 0
        dropped: int = await self.redis.hdel(self._status_key, *robot_ids)
        return dropped

    async def clear(self) -> int:
        """Deletes every key under the prefix (before a rebuild)."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.redis.unlink(*batch)
        return deleted

    async def mark_applied(self, entry_ids: Iterable[int]) -> None:
        """Marks journal entries as applied without applying them (a rebuild counted them)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.set(self._journal_key(entry_id), "1", ex=self.ttl_s)
            await pipe.execute()

    async def mark_built(self, at: datetime) -> None:
        await self.redis.set(self._built_key, at.isoformat())

    async def present(self) -> bool:
        """Whether Redis still holds counters (built once and not lost since)."""
        return bool(await self.redis.exists(self._built_key))

    # Reads.

    async def robot_live(
        self, robot_ids: Sequence[str]
    ) -> tuple[list[bytes | None], list[float | None]]:
        """For each robot: its status document (JSON) and its last-seen milliseconds."""
        if not robot_ids:
            return [], []
        ids = list(robot_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._status_key, ids)
            pipe.zmscore(self._last_seen_key, ids)
            statuses, seen = await pipe.execute()
        return list(statuses), list(seen)

    async def robot_detail(
        self, robot_id: str
    ) -> tuple[bytes | None, float | None, dict[str, bytes]]:
        """A robot's status document, last-seen ms and latest readings (as in `latest`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._status_key, robot_id)
            pipe.zscore(self._last_seen_key, robot_id)
            pipe.hgetall(self._latest_key(robot_id))
            status, seen, latest = await pipe.execute()
        return status, seen, _latest_readings(latest)

    async def latest(self, robot_ids: Sequence[str]) -> list[dict[str, bytes]]:
        """For each robot, its newest reading of each sensor type: type -> the reading's JSON."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for robot_id in robot_ids:
                pipe.hgetall(self._latest_key(robot_id))
            results: list[dict[bytes, bytes]] = await pipe.execute()
        return [_latest_readings(r) for r in results]

    async def recently_seen(self, limit: int) -> list[str]:
        """Robot ids by last-seen time, newest first."""
        ids = await self.redis.zrevrange(self._last_seen_key, 0, limit - 1)
        return [i.decode() for i in cast(list[bytes], ids)]

    async def seq_stats(self, robot_id: str, sensor_type: str) -> SeqStats | None:
        """The sequence numbers inserted for a robot's sensor type (gaps: readings missing)."""
        raw = cast(
            dict[bytes, bytes], await self.redis.hgetall(self._seq_key(robot_id, sensor_type))
        )
        if not raw:
            return None
        return SeqStats(int(raw[b"n"]), int(raw[b"min"]), int(raw[b"max"]))

    async def window(self, minutes: Sequence[int], *, top: int) -> WindowCounts:
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in minutes:
                pipe.hgetall(self._minute_key(m, "t"))
            for m in minutes:
                pipe.hgetall(self._minute_key(m, "x"))
            # ZUNION answers in ascending score order: the top N are its tail.
            pipe.zunion([self._minute_key(m, "r") for m in minutes], withscores=True)
            pipe.hvals(self._status_key)
            results = await pipe.execute()
        n = len(minutes)

        def ints(raw: dict[bytes, bytes]) -> dict[str, int]:
            return {k.decode(): int(v) for k, v in raw.items()}

        union: list[tuple[bytes, float]] = results[2 * n]
        statuses: list[bytes] = results[2 * n + 1]
        return WindowCounts(
            totals=[ints(r) for r in results[:n]],
            rejected=[ints(r) for r in results[n : 2 * n]],
            top_robots=[(m.decode(), int(s)) for m, s in reversed(union[-top:] if top else [])],
            robots_online=sum(1 for s in statuses if b'"online"' in s),
            robots_with_status=len(statuses),
        )


def _latest_readings(raw: dict[bytes, bytes]) -> dict[str, bytes]:
    """A `latest:{robot}` hash without its `{type}:ts` fields, which only order updates."""
    return {k.decode(): v for k, v in raw.items() if not k.endswith(b":ts")}
