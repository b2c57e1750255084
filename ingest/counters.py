"""Live counters in Redis: this module owns every key, the scripts that write them and the one
read API (the bridge, the API, the rebuild and the tests all go through `Counters`).

Redis may be one server or a Redis Cluster (`open_redis`). In a cluster, a Lua script may touch
only keys of one hash slot, so the keys a journal entry updates are split into `shards`: each
shard's keys carry the shard's hash tag `{tag}`, one entry is applied whole to the one shard
its id picks (a stable hash of the id, so a replay hits the same journal marker), and reads
ask every shard and merge (counts summed, latest by the greatest timestamp, last seen by the
greatest time). Tags are chosen so the shards' slots spread evenly over the slot range, so N
shards land on N masters of an evenly sliced cluster. One server runs with one shard
(`REDIS_COUNTER_SHARDS=1`), the same commands as before sharding, reads merging nothing.
Every process must use the same shard count; the count is part of the tags, so after a change
the counters look lost and are rebuilt (docs/scaling.md).

Layout, under a configurable prefix (default `rs:`), per shard `S` = `{prefix}{tag}:` (e.g.
`rs:{3.0.17}:`); minutes are epoch seconds of the minute's start in the reading's own time
(so a window's count equals COUNT(*) over `ts` in that window):
  S m:{minute}:t   hash   `*` -> all readings, `{sensor_type}` -> readings of that type
  S m:{minute}:r   zset   robot_id -> readings (a window's top-N robots: its w:{len}:r below,
                          or a ZUNION of its minutes)
  S m:{minute}:rs  hash   `{robot_id}/{sensor_type}` -> readings
  S m:{minute}:x   hash   reason -> rejected (minute of receipt)
  S m:{minute}:q   hash   `{robot_id}/{sensor_type}/{i}` and `*/{sensor_type}/{i}` -> readings
                          in the i-th slot (db.readings.SLOT_SECONDS) of the minute, of the
                          robot or of every robot; only for recent minutes (SLOT_COUNTS_S);
                          and `!` -> 1 once reconciliation corrected the minute (its slot
                          partials are no longer trusted)
  S w:{len}:r      zset   robot_id -> readings over the `len` minutes from S w:{len}:from: the
                          rolling window of a top-N read (len in ROLLING_WINDOW_MINUTES), below
  S w:{len}:from   string its first minute; absent: the window is not kept (never read, or
                          idle for ROLLING_IDLE_S)
  S m:{minute}:v   string first shard only: corrections of the minute by reconciliation; a
                          correction adds the difference (so it commutes with batches applied
                          meanwhile on any shard) and is refused when this moved (another
                          reconciler corrected it first)
  S latest:{robot} hash   `{sensor_type}` -> JSON of the newest reading,
                          `{sensor_type}:ts` -> its ms
  S seq:{robot}/{sensor_type} hash  n, min, max of inserted seqs: gaps = max - min + 1 - n
  S last_seen      zset   robot_id -> ms of the last reading received
  S journal:{id}   string marker: this journal entry was applied (makes apply idempotent)
  S meta:built     string when the counters were last rebuilt from PostgreSQL; its absence on
                          any shard means Redis lost them (a restart without persistence, a
                          node lost), so they are rebuilt
  S meta:run_id    string the run_id of the server holding this shard when last looked at (a
                          restart changes it)
  {prefix}status   hash   robot_id -> JSON {"status": "online"|"offline", "at": ms of the change};
                          registered robots only (the bridge filters and prunes); one key, so
                          any slot; and `*online` -> how many of them are online (kept by the
                          scripts that change the hash)
  {prefix}agg:{sensor_type}:{field}:{robot_id or *}:{hour}  hash  minute -> JSON [readings,
                          samples, sum, min, max] of the field over that minute's readings (a
                          bucket aggregate's MinutePartial, db/sensor_aggregates.py), for the
                          minutes of one hour (epoch seconds of its start); any slot; trusted
                          only while `readings` equals the minute's count above (`rs`, or `t`
                          for every robot), which any later write to the minute changes; kept
                          only for minutes the counters hold, and expires as they do; and
                          `s{start}` -> the same of a slot, trusted by its count in `q`

The per-robot top-N of a window (GET /api/stats) would be a ZUNION of the window's minute sets:
O(minutes x robots) in Redis at every read (an hour of 10,000 robots: 600,000 entries, ~100 ms
of Redis, which blocks every other client meanwhile). For the windows read most
(ROLLING_WINDOW_MINUTES) each shard keeps the sum instead, `w:{len}:r` over the minutes from
`w:{len}:from`: every write to a minute's robot set inside the window adds to it in the same
script (the batches' and the corrections'), and a read of a window that has moved on rolls it
first: the minutes that left are subtracted and those that entered added (a ZUNIONSTORE each,
O(robots) per minute moved, once), or, after a gap as long as the window, it is built again
from the minutes. So the sum always equals the minutes' ZUNION, and a read is a ZREVRANGE.
A window no one reads for ROLLING_IDLE_S expires, and writes stop keeping it; a rebuild drops
them all (`forget_windows`). Every process that writes counters must run this code: a bridge
from before the windows would not add to them (upgrade the bridges with the API).

Every update of one batch (a JournalEntry, `ingest/journal_entry.py`) runs in one Lua script,
so a batch is applied whole or not at all. A script declares its shard's journal marker (or
the status key) in KEYS, which routes it to the node holding that slot; the other keys it
builds carry the same hash tag, so they are in that slot too (Redis refuses a script touching
a key of another slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from types import MappingProxyType
from typing import Any, cast

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisClusterException, RedisError

from db.readings import SLOT_SECONDS
from db.sensor_aggregates import MinutePartial
from ingest.redis_packing import hiredis_packed_client

# Redis is away (down, restarting, unreachable; in a cluster also a slot no reachable node
# serves, which redis-py raises outside RedisError): counter updates wait in the journal.
COUNTERS_AWAY_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

# One Redis server or a Redis Cluster: the commands used here exist on both clients.
AnyRedis = Redis | RedisCluster


def redis_client(url: str, *, cluster: bool = False, **options: Any) -> AnyRedis:
    """A client of one server, or of a cluster reached through any of its nodes (`url`); the
    caller closes it (`aclose`)."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    return hiredis_packed_client(url, **options)


@contextlib.asynccontextmanager
async def open_redis(url: str, *, cluster: bool = False, **options: Any) -> AsyncIterator[AnyRedis]:
    client = redis_client(url, cluster=cluster, **options)
    try:
        yield client
    finally:
        await client.aclose()


def shard_tags(shards: int) -> list[str]:
    """The hash tag of each of `shards` shards: shard i's slot lies in the i-th of `shards`
    equal slices of the slot range, as `redis-cli --cluster create` slices it among masters.
    The count is part of each tag: keys of different counts never mix."""
    if shards < 1:
        raise ValueError(f"counter shards must be >= 1, not {shards}")
    tags = []
    for i in range(shards):
        low = i * REDIS_CLUSTER_HASH_SLOTS // shards
        high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        k = 0
        while not low <= key_slot(f"{shards}.{i}.{k}".encode()) < high:
            k += 1
        tags.append(f"{shards}.{i}.{k}")
    return tags


# The windows (in minutes) whose per-robot sums each shard keeps while they are read: the
# API's documented ones (15m, the default 1h, 24h). Others are summed at each read.
ROLLING_WINDOW_MINUTES = (15, 60, 1440)
# A kept window no read asked for in this long expires, and writes stop adding to it.
ROLLING_IDLE_S = 600

# Lua, in a script whose shard key prefix is `p`: `kept`, the windows this shard keeps, each
# {first minute, last minute, its sum's key}.
_ROLLING_WINDOWS_KEPT = (
    """
local kept = {}
for _, len in ipairs({"""
    + ", ".join(map(str, ROLLING_WINDOW_MINUTES))
    + """}) do
  local from = redis.call('GET', p .. 'w:' .. len .. ':from')
  if from then
    from = tonumber(from)
    kept[#kept + 1] = {from, from + 60 * (len - 1), p .. 'w:' .. len .. ':r'}
  end
end
"""
)

# A window's per-robot sums in one shard, rolled to start at ARGV[3] first: the minutes that
# left it subtracted and those that entered added, or built again from the minutes after a
# move as long as the window. Every key is the shard's (one slot).
# KEYS[1]: the window's `from`; ARGV: shard key prefix, minutes in the window, first minute,
# how many robots (0: all, ascending), idle ttl. Replies robot, readings, robot, ...
_ROLL_WINDOW_LUA = """
local p = ARGV[1]
local len = tonumber(ARGV[2])
local first = tonumber(ARGV[3])
local top = tonumber(ARGV[4])
local sum = p .. 'w:' .. ARGV[2] .. ':r'
local function robots_of(minute)
  return p .. 'm:' .. string.format('%d', minute) .. ':r'
end
local function add(minute, weight)
  redis.call('ZUNIONSTORE', sum, 2, sum, robots_of(minute), 'WEIGHTS', 1, weight)
end
local was = redis.call('GET', KEYS[1])
was = was and tonumber(was)
if was ~= first then
  if (not was) or math.abs(first - was) >= 60 * len then
    local minutes = {}
    for i = 0, len - 1 do
      minutes[i + 1] = robots_of(first + 60 * i)
    end
    redis.call('DEL', sum)
    redis.call('ZUNIONSTORE', sum, len, unpack(minutes))
  elseif first > was then
    for m = was, first - 60, 60 do add(m, -1) end
    for m = was + 60 * len, first + 60 * (len - 1), 60 do add(m, 1) end
  else
    for m = first + 60 * len, was + 60 * (len - 1), 60 do add(m, -1) end
    for m = first, was - 60, 60 do add(m, 1) end
  end
  -- A robot summing to 0 is as if absent; one below 0 is not removed: another shard may hold
  -- what makes it up (a correction lands on the first shard only).
  redis.call('ZREMRANGEBYSCORE', sum, 0, 0)
  redis.call('SET', KEYS[1], string.format('%d', first))
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', sum, ARGV[5])
if top > 0 then
  return redis.call('ZREVRANGE', sum, 0, top - 1, 'WITHSCORES')
end
return redis.call('ZRANGE', sum, 0, -1, 'WITHSCORES')
"""


# Slot counts (`m:{minute}:q`) are written only for minutes that started at most this long ago
# by Redis's clock (not for minutes ahead of it): a bucket aggregate needs them only for the
# minute still being written and the one or two before it, and at 10,000 robots each minute
# holds 180,000 of them. A minute's key outlives the last write it can get (its TTL is
# refreshed by every write, each at most SLOT_COUNTS_S after the minute's start), so a count
# never starts again from nothing: a batch not counted in it leaves it below the rows for good.
SLOT_COUNTS_S = 180
_SLOT_COUNTS_TTL_S = SLOT_COUNTS_S + 60
# Slot partials are trusted only for minutes that started at most this long ago by the
# reader's clock: every batch applied to such a minute is counted in its slots, with a
# minute's margin for the clocks of Redis and the API. Older minutes use minute partials.
SLOT_PARTIALS_S = SLOT_COUNTS_S - 60
# A field of a minute's slot counts (in every shard) set when reconciliation corrects it.
_SLOTS_WRONG = "!"

# cjson turns integers into doubles and Lua 5.1 prints them with 14 digits: milliseconds since
# the epoch (13 digits) survive, microseconds would not.
# KEYS[1]: the journal marker (in the shard); ARGV: shard key prefix, entry JSON, ttl.
_APPLY_LUA = (
    """
local p = ARGV[1]
local ttl = ARGV[3]
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ttl) then
  return 0
end
local e = cjson.decode(ARGV[2])
"""
    + _ROLLING_WINDOWS_KEPT
    + """
local touched = {}
local slotted = {}
local now = tonumber(redis.call('TIME')[1])
local slots_from = now - """
    + str(SLOT_COUNTS_S)
    + """
for _, g in ipairs(e.groups) do
  local robot, sensor, minute, n = g.robot, g.sensor, g.minute, g.count
  local mk = p .. 'm:' .. string.format('%d', minute)
  redis.call('HINCRBY', mk .. ':t', '*', n)
  redis.call('HINCRBY', mk .. ':t', sensor, n)
  redis.call('ZINCRBY', mk .. ':r', n, robot)
  for _, w in ipairs(kept) do
    if minute >= w[1] and minute <= w[2] then
      redis.call('ZINCRBY', w[3], n, robot)
    end
  end
  redis.call('HINCRBY', mk .. ':rs', robot .. '/' .. sensor, n)
  touched[mk] = true
  if minute >= slots_from and minute <= now and g.slots then
    local qk = mk .. ':q'
    for i, c in ipairs(g.slots) do
      if c > 0 then
        redis.call('HINCRBY', qk, robot .. '/' .. sensor .. '/' .. (i - 1), c)
        redis.call('HINCRBY', qk, '*/' .. sensor .. '/' .. (i - 1), c)
      end
    end
    slotted[qk] = true
  end
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
for qk, _ in pairs(slotted) do
  redis.call('EXPIRE', qk, """
    + str(_SLOT_COUNTS_TTL_S)
    + """)
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
)


# Adds a correction to one minute's reading counts in the first shard, unless another
# correction landed since the caller read the minute (its figures would be stale). Batches
# applied meanwhile need no check: a difference adds to them rather than overwriting them.
# KEYS[1]: the minute's correction counter; ARGV: the first shard's key prefix, the counter as
# read, ttl, the differences {"t": {field: n}, "r": {robot: n}, "rs": {robot/sensor: n}}, the
# minute.
_CORRECT_MINUTE_LUA = (
    """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[2] then
  return 0
end
local p = ARGV[1]
local minute = tonumber(ARGV[5])
local mk = p .. 'm:' .. ARGV[5]
local ttl = ARGV[3]
local d = cjson.decode(ARGV[4])
"""
    + _ROLLING_WINDOWS_KEPT
    + """
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ttl)
for f, n in pairs(d.t) do
  redis.call('HINCRBY', mk .. ':t', f, n)
end
for robot, n in pairs(d.r) do
  redis.call('ZINCRBY', mk .. ':r', n, robot)
  for _, w in ipairs(kept) do
    if minute >= w[1] and minute <= w[2] then
      redis.call('ZINCRBY', w[3], n, robot)
    end
  end
end
for f, n in pairs(d.rs) do
  redis.call('HINCRBY', mk .. ':rs', f, n)
end
redis.call('EXPIRE', mk .. ':t', ttl)
redis.call('EXPIRE', mk .. ':r', ttl)
redis.call('EXPIRE', mk .. ':rs', ttl)
return 1
"""
)


# A cluster's read of one shard in one round trip: the commands of ARGV[1] (a JSON list of
# [command, key, args...], every key of the shard), their replies in a list. redis-py's cluster
# pipeline spends ~0.1 ms of Python per command; a stats read is hundreds of commands.
# KEYS[1]: any key of the shard (routes the script).
_SHARD_READ_LUA = """#!lua flags=no-writes
local out = {}
for i, op in ipairs(cjson.decode(ARGV[1])) do
  out[i] = redis.call(unpack(op))
end
return out
"""


# The status hash's field counting the robots whose status is `online` (not a robot id: those
# never hold `*`), kept by the two scripts below that change the hash, so that /api/stats reads
# a count instead of every robot's status.
STATUS_ONLINE_FIELD = "*online"

# One shard's `seq` hashes of these robots' sensor types, those that exist: robot's index,
# type's index (from 0), n, min, max, robot's index, ... KEYS[1]: any key of the shard (routes
# the script); ARGV: shard key prefix, how many types, the types, the robots.
_SEQ_READ_ROBOTS = 1000
_SEQ_READ_LUA = """#!lua flags=no-writes
local p = ARGV[1]
local types = tonumber(ARGV[2])
local out = {}
for r = 3 + types, #ARGV do
  for t = 1, types do
    local seq = redis.call('HMGET', p .. 'seq:' .. ARGV[r] .. '/' .. ARGV[2 + t], 'n', 'min', 'max')
    if seq[1] then
      out[#out + 1] = r - 3 - types
      out[#out + 1] = t - 1
      out[#out + 1] = seq[1]
      out[#out + 1] = seq[2]
      out[#out + 1] = seq[3]
    end
  end
end
return out
"""


# KEYS[1]: the status hash; ARGV: robot, status, document, robot, status, document, ...
_SET_STATUSES_LUA = """
local key = KEYS[1]
local online = '*online'
if redis.call('HEXISTS', key, online) == 0 then
  -- A hash written before the count was kept: counted once.
  local n = 0
  for _, doc in ipairs(redis.call('HVALS', key)) do
    if cjson.decode(doc).status == 'online' then n = n + 1 end
  end
  redis.call('HSET', key, online, n)
end
for i = 1, #ARGV, 3 do
  local cur = redis.call('HGET', key, ARGV[i])
  local was = cur and cjson.decode(cur).status
  if was ~= ARGV[i + 1] then
    redis.call('HSET', key, ARGV[i], ARGV[i + 2])
    if was == 'online' then
      redis.call('HINCRBY', key, online, -1)
    elseif ARGV[i + 1] == 'online' then
      redis.call('HINCRBY', key, online, 1)
    end
  end
end
return 1
"""

# KEYS[1]: the status hash; ARGV: robots. Returns how many had a status.
_DROP_STATUSES_LUA = """
local key = KEYS[1]
local online = '*online'
local counted = redis.call('HEXISTS', key, online) == 1
local dropped = 0
for _, robot in ipairs(ARGV) do
  local cur = redis.call('HGET', key, robot)
  if cur then
    if counted and cjson.decode(cur).status == 'online' then
      redis.call('HINCRBY', key, online, -1)
    end
    redis.call('HDEL', key, robot)
    dropped = dropped + 1
  end
end
return dropped
"""


@dataclass(frozen=True, slots=True)
class MinuteBucket:
    """One minute's reading counts as Redis holds them, summed over the shards (counts that sum
    to 0 left out, as if never counted)."""

    total: int | None  # `*` of m:{minute}:t; None when the bucket is absent (or sums to 0)
    by_robot_sensor: dict[str, int]  # m:{minute}:rs, `{robot_id}/{sensor_type}` -> readings
    by_sensor: dict[str, int] = field(default_factory=dict)  # m:{minute}:t without `*`
    by_robot: dict[str, int] = field(default_factory=dict)  # m:{minute}:r
    corrections: int = 0  # m:{minute}:v: a correction must see it unchanged

    @classmethod
    def of(cls, groups: Iterable[tuple[str, str, int]]) -> MinuteBucket:
        """The bucket that counts exactly `groups` (robot, sensor type, readings)."""
        by_robot_sensor: dict[str, int] = {}
        by_sensor: dict[str, int] = {}
        by_robot: dict[str, int] = {}
        for robot, sensor, n in groups:
            if n:
                by_robot_sensor[f"{robot}/{sensor}"] = n
                by_sensor[sensor] = by_sensor.get(sensor, 0) + n
                by_robot[robot] = by_robot.get(robot, 0) + n
        return cls(
            sum(by_robot_sensor.values()) or None,
            by_robot_sensor,
            {k: v for k, v in by_sensor.items() if v},
            {k: v for k, v in by_robot.items() if v},
        )

    def same_counts(self, other: MinuteBucket) -> bool:
        return (self.total, self.by_robot_sensor, self.by_sensor, self.by_robot) == (
            other.total,
            other.by_robot_sensor,
            other.by_sensor,
            other.by_robot,
        )


@dataclass(frozen=True, slots=True)
class SeqStats:
    count: int
    first: int
    last: int

    @property
    def gaps(self) -> int:
        return self.last - self.first + 1 - self.count


@dataclass(frozen=True, slots=True)
class RobotDetail:
    status: bytes | None  # the status document (JSON)
    last_seen_ms: float | None
    latest: dict[str, bytes]  # as in `latest`
    sequence_gaps: dict[str, int]  # sensor types that sent sequence numbers only


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the per-minute counters hold for a run of minutes, fetched in one round trip."""

    totals: list[dict[str, int]]  # per minute: `*` and each sensor type
    rejected: list[dict[str, int]]  # per minute: reason -> count
    top_robots: list[tuple[str, int]]  # most readings first
    robots_online: int
    robots_with_status: int


def _sum_nonzero(parts: Sequence[Mapping[bytes, bytes | int]]) -> dict[str, int]:
    """Hashes of counts added up field by field; fields summing to 0 (a correction may leave
    +n on one shard and -n on another) are left out, as if never counted."""
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            key = k.decode()
            out[key] = out.get(key, 0) + int(v)
    return {k: v for k, v in out.items() if v}


class Counters:
    """The Redis side of the pipeline: writes (the Lua script, statuses, rebuild support) and
    the read API. Every read is one Redis round trip: a pipeline on one server; on a cluster a
    pipeline that the client splits by node, or for the large reads (stats, latest) one script
    per shard, the shards at once. Takes a connected client; does not own it."""

    def __init__(
        self, *, redis: AnyRedis, prefix: str = "rs:", ttl_s: int = 26 * 3600, shards: int = 1
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.shards = shards
        self._shard_prefixes = [f"{prefix}{{{tag}}}:" for tag in shard_tags(shards)]
        self._apply = redis.register_script(_APPLY_LUA)
        self._correct_minute = redis.register_script(_CORRECT_MINUTE_LUA)
        self._set_statuses = redis.register_script(_SET_STATUSES_LUA)
        self._drop_statuses = redis.register_script(_DROP_STATUSES_LUA)
        self._shard_read = redis.register_script(_SHARD_READ_LUA)
        self._roll_window = redis.register_script(_ROLL_WINDOW_LUA)
        self._seq_read = redis.register_script(_SEQ_READ_LUA)
        # Reads of several shards on a cluster: a script per shard, run at once.
        self._read_by_script = isinstance(redis, RedisCluster)

    # Keys (the layout above; the Lua scripts build the same names from a shard's prefix).

    def _shard_of(self, entry_id: int | str) -> str:
        """The key prefix of the shard a journal entry is applied to, always the same one."""
        if self.shards == 1:
            return self._shard_prefixes[0]
        return self._shard_prefixes[zlib.crc32(str(entry_id).encode()) % self.shards]

    def minute_keys(self, minute: int, kind: str) -> list[str]:
        """A minute's key of one kind (t, r, rs, x) in every shard, the first shard first
        (where corrections go)."""
        return [f"{s}m:{minute}:{kind}" for s in self._shard_prefixes]

    def _latest_keys(self, robot_id: str) -> list[str]:
        return [f"{s}latest:{robot_id}" for s in self._shard_prefixes]

    def _seq_keys(self, robot_id: str, sensor_type: str) -> list[str]:
        return [f"{s}seq:{robot_id}/{sensor_type}" for s in self._shard_prefixes]

    def _journal_key(self, entry_id: int | str) -> str:
        return f"{self._shard_of(entry_id)}journal:{entry_id}"

    def _corrections_key(self, minute: int) -> str:
        return f"{self._shard_prefixes[0]}m:{minute}:v"

    @property
    def _status_key(self) -> str:
        return f"{self.prefix}status"

    @property
    def _last_seen_keys(self) -> list[str]:
        return [f"{s}last_seen" for s in self._shard_prefixes]

    @property
    def _built_keys(self) -> list[str]:
        return [f"{s}meta:built" for s in self._shard_prefixes]

    @property
    def _run_id_keys(self) -> list[str]:
        return [f"{s}meta:run_id" for s in self._shard_prefixes]

    async def _read_shards(self, ops: Sequence[Sequence[Sequence[str | int]]]) -> list[list[Any]]:
        """Runs each shard's read commands (ops[shard]) in one script on its node, the shards
        at once; raw replies (a hash is a flat field, value list)."""
        return list(
            await asyncio.gather(
                *(
                    self._shard_read(
                        keys=[f"{self._shard_prefixes[i]}meta:built"],
                        args=[orjson.dumps(shard_ops).decode()],
                    )
                    for i, shard_ops in enumerate(ops)
                )
            )
        )

    # Writes.

    async def apply(self, entry_id: int | str, entry: str) -> bool:
        """Applies a journal entry (JournalEntry JSON) once; False when it had been already."""
        shard = self._shard_of(entry_id)
        applied = await self._apply(
            keys=[f"{shard}journal:{entry_id}"], args=[shard, entry, self.ttl_s]
        )
        return bool(applied)

    async def set_statuses(self, statuses: Iterable[tuple[str, str, int]]) -> None:
        """Records each robot's status, keeping `at` (when it changed) if it is unchanged: the
        broker resends retained statuses on every re-subscription."""
        args: list[str | bytes] = []
        for robot, status, at_ms in statuses:
            args += [robot, status, orjson.dumps({"status": status, "at": at_ms})]
        if args:
            await self._set_statuses(keys=[self._status_key], args=args)

    async def minute_buckets(self, minutes: Sequence[int]) -> list[MinuteBucket]:
        n = self.shards
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                for kind in ("t", "rs"):
                    for key in self.minute_keys(minute, kind):
                        pipe.hgetall(key)
                for key in self.minute_keys(minute, "r"):
                    pipe.zrange(key, 0, -1, withscores=True)
                pipe.get(self._corrections_key(minute))
            results = await pipe.execute()
        buckets = []
        step = 3 * n + 1
        for i in range(len(minutes)):
            row = results[i * step : (i + 1) * step]
            t = _sum_nonzero(row[:n])
            robots = _sum_nonzero([{k: int(v) for k, v in z} for z in row[2 * n : 3 * n]])
            buckets.append(
                MinuteBucket(
                    t.pop("*", None),
                    _sum_nonzero(row[n : 2 * n]),
                    t,
                    robots,
                    int(row[3 * n] or 0),
                )
            )
        return buckets

    async def replace_minute(
        self, minute: int, *, seen: MinuteBucket, groups: Sequence[tuple[str, str, int]]
    ) -> bool:
        """Makes a minute's counts `groups` (robot, sensor type, readings) by adding to the
        first shard the difference from `seen` (as `minute_buckets` read it), unless another
        correction of the minute came first; True when it did."""
        want = MinuteBucket.of(groups)

        def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: d for k in a.keys() | b.keys() if (d := a.get(k, 0) - b.get(k, 0))}

        t = diff(want.by_sensor, seen.by_sensor)
        if total := (want.total or 0) - (seen.total or 0):
            t["*"] = total
        diffs = {
            "t": t,
            "r": diff(want.by_robot, seen.by_robot),
            "rs": diff(want.by_robot_sensor, seen.by_robot_sensor),
        }
        done = await self._correct_minute(
            keys=[self._corrections_key(minute)],
            args=[
                self._shard_prefixes[0],
                str(seen.corrections),
                self.ttl_s,
                # An empty table encodes as `{}`, which cjson decodes as a table too.
                orjson.dumps(diffs).decode(),
                minute,
            ],
        )
        if done:
            # The minute's slot counts were as wrong as its counts: no kept slot partial of it
            # is trusted from now on (its slots are read from PostgreSQL).
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in self.minute_keys(minute, "q"):
                    pipe.hset(key, _SLOTS_WRONG, 1)
                    pipe.expire(key, _SLOT_COUNTS_TTL_S)
                await pipe.execute()
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

    async def _run_id_of_shard(self, shard: int) -> str:
        if isinstance(self.redis, RedisCluster):
            node = self.redis.get_node_from_key(self._run_id_keys[shard])
            info = await self.redis.info("server", target_nodes=node)
        else:
            info = await self.redis.info("server")
        return str(info["run_id"])

    async def restarted_since_last_look(self) -> bool:
        """True when a Redis server holding a shard restarted since any process last asked,
        which it may do stale (from an older snapshot) or empty. A server's run_id changes at
        each start; the one last seen is kept in the shard itself, so a snapshot brings back
        an older one, and GETSET tells one asker only."""
        restarted = False
        for shard, key in enumerate(self._run_id_keys):
            run_id = await self._run_id_of_shard(shard)
            previous = cast(bytes | None, await self.redis.getset(key, run_id))
            restarted |= previous is not None and previous.decode() != run_id
        return restarted

    async def status_robot_ids(self) -> list[str]:
        ids = await self.redis.hkeys(self._status_key)
        return [i.decode() for i in cast(list[bytes], ids) if i != STATUS_ONLINE_FIELD.encode()]

    async def drop_statuses(self, robot_ids: Sequence[str]) -> int:
        if not robot_ids:
            return 0
        dropped = await self._drop_statuses(keys=[self._status_key], args=list(robot_ids))
        return int(dropped)

    async def _status_counts(self, online: bytes | None, length: int) -> tuple[int, int]:
        """Robots online and robots with a status, from the hash's count and its length; a
        hash no status has changed since it was written without the count: counted here."""
        if online is not None:
            return int(online), length - 1
        if not length:
            return 0, 0
        statuses = cast(list[bytes], await self.redis.hvals(self._status_key))
        return sum(1 for s in statuses if b'"online"' in s), len(statuses)

    async def clear(self) -> int:
        """Deletes every key under the prefix (before a rebuild), on every node."""
        deleted = 0
        batch: list[bytes] = []

        async def unlink() -> int:
            # One key per command: a cluster refuses a multi-key command across slots (and the
            # cluster pipeline's own `unlink` splits by slot outside the pipeline).
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.execute_command("UNLINK", key)
                done = await pipe.execute()
            batch.clear()
            return sum(done)

        async for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await unlink()
        if batch:
            deleted += await unlink()
        return deleted

    async def mark_applied(self, entry_ids: Iterable[int]) -> None:
        """Marks journal entries as applied without applying them (a rebuild counted them)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in entry_ids:
                pipe.set(self._journal_key(entry_id), "1", ex=self.ttl_s)
            await pipe.execute()

    async def forget_windows(self) -> None:
        """Drops every kept window (each shard's sums and starts), so that the next read sums
        its minutes afresh. After a rebuild: a read during the rebuild's clear may have kept a
        window from minutes the clear then deleted (its keys escaping the clear's scan), and
        the rebuild's batches would add to it. One DEL per shard: a window's sum and start go
        together, never one without the other."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self._shard_prefixes:
                keys = [f"{shard}w:{n}:{k}" for n in ROLLING_WINDOW_MINUTES for k in ("from", "r")]
                pipe.execute_command("DEL", *keys)
            await pipe.execute()

    async def mark_built(self, at: datetime) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._built_keys:
                pipe.set(key, at.isoformat())
            await pipe.execute()

    async def present(self) -> bool:
        """Whether Redis still holds counters (built once and lost on no shard since)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._built_keys:
                pipe.exists(key)
            found = await pipe.execute()
        return all(found)

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
            for key in self._last_seen_keys:
                pipe.zmscore(key, ids)
            statuses, *seen = await pipe.execute()
        return list(statuses), _greatest(seen)

    async def robot_detail(self, robot_id: str, sensor_types: Sequence[str]) -> RobotDetail:
        """A robot's live fields in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._status_key, robot_id)
            for key in self._last_seen_keys:
                pipe.zscore(key, robot_id)
            for key in self._latest_keys(robot_id):
                pipe.hgetall(key)
            for sensor_type in sensor_types:
                for key in self._seq_keys(robot_id, sensor_type):
                    pipe.hmget(key, "n", "min", "max")
            status, *rest = await pipe.execute()
        n = self.shards
        [seen] = _greatest([[s] for s in rest[:n]])
        latest = _latest_readings(rest[n : 2 * n])
        seqs = rest[2 * n :]
        gaps = {}
        for i, sensor_type in enumerate(sensor_types):
            stats = _merged_seq(seqs[i * n : (i + 1) * n])
            if stats is not None:
                gaps[sensor_type] = stats.gaps
        return RobotDetail(status, seen, latest, gaps)

    async def fleet_sequence_gaps(self, sensor_types: Sequence[str]) -> dict[str, int]:
        """Gaps per sensor type summed over every robot that sent readings: its sequence
        numbers are merged over shards first (one robot's readings may be counted in several),
        so this reads every robot's `seq` hashes: O(robots x sensor types x shards) reads in
        Redis, a scrape's worth, not a request's. Scripts walk them, a shard's robots
        `_SEQ_READ_ROBOTS` at a time (so that Redis serves others between them), and answer
        the hashes that exist: a pipeline of the 50,000 HMGETs of 10,000 robots cost redis-py
        ~0.85 s of CPU, its event loop held all along; these scripts ~0.05 s."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._last_seen_keys:
                pipe.zrange(key, 0, -1)
            parts: list[list[bytes]] = await pipe.execute()
        robot_ids = sorted({r for part in parts for r in part})
        if not robot_ids:
            return {}
        types = list(sensor_types)
        chunks = range(0, len(robot_ids), _SEQ_READ_ROBOTS)
        replies = await asyncio.gather(
            *(
                self._seq_read(
                    keys=[f"{shard}meta:built"],
                    args=[shard, len(types), *types, *robot_ids[c : c + _SEQ_READ_ROBOTS]],
                )
                for shard in self._shard_prefixes
                for c in chunks
            )
        )
        found: dict[tuple[int, int], list[list[bytes | None]]] = {}
        for k, reply in enumerate(replies):
            first = chunks[k % len(chunks)]
            for i in range(0, len(reply), 5):
                robot, sensor, *seq = reply[i : i + 5]
                found.setdefault((first + robot, sensor), []).append(seq)
        totals: dict[str, int] = {}
        for (_, sensor), per_shard in found.items():
            stats = _merged_seq(per_shard)
            if stats is not None:
                totals[types[sensor]] = totals.get(types[sensor], 0) + stats.gaps
        return totals

    async def latest(self, robot_ids: Sequence[str]) -> list[dict[str, bytes]]:
        """For each robot, its newest reading of each sensor type: type -> the reading's JSON."""
        if self._read_by_script:
            replies = await self._read_shards(
                [
                    [["HGETALL", keys[shard]] for keys in map(self._latest_keys, robot_ids)]
                    for shard in range(self.shards)
                ]
            )
            return [
                _latest_readings([_hash(replies[shard][i]) for shard in range(self.shards)])
                for i in range(len(robot_ids))
            ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for robot_id in robot_ids:
                for key in self._latest_keys(robot_id):
                    pipe.hgetall(key)
            results: list[dict[bytes, bytes]] = await pipe.execute()
        n = self.shards
        return [_latest_readings(results[i * n : (i + 1) * n]) for i in range(len(robot_ids))]

    async def recently_seen(self, limit: int) -> list[str]:
        """Robot ids by last-seen time, newest first."""
        if self.shards == 1:
            ids = await self.redis.zrevrange(self._last_seen_keys[0], 0, limit - 1)
            return [i.decode() for i in cast(list[bytes], ids)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._last_seen_keys:
                pipe.zrevrange(key, 0, limit - 1, withscores=True)
            results: list[list[tuple[bytes, float]]] = await pipe.execute()
        newest: dict[bytes, float] = {}
        for part in results:
            for robot, ms in part:
                newest[robot] = max(ms, newest.get(robot, ms))
        ranked = sorted(newest.items(), key=lambda item: item[1], reverse=True)
        return [robot.decode() for robot, _ in ranked[:limit]]

    async def seq_stats(self, robot_id: str, sensor_type: str) -> SeqStats | None:
        """The sequence numbers inserted for a robot's sensor type (gaps: readings missing)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self._seq_keys(robot_id, sensor_type):
                pipe.hmget(key, "n", "min", "max")
            return _merged_seq(await pipe.execute())

    async def latest_with_seq(
        self, robot_ids: Sequence[str], seq_keys: Sequence[tuple[str, str]]
    ) -> tuple[list[dict[str, bytes]], dict[tuple[str, str], SeqStats]]:
        """`latest` of these robots and `seq_stats` of these (robot id, sensor type) pairs (the
        pairs without sequence numbers absent): one read-only script per shard, the shards at
        once. The live view reads this for every robot heard from, every tick: a pipeline of
        thousands of commands costs the client ~50 us each, a script's one reply very little
        (BENCHMARKS.md, "Live view")."""
        if not robot_ids and not seq_keys:
            return [], {}
        ops = []
        for shard in range(self.shards):
            shard_ops: list[list[str | int]] = [
                ["HGETALL", keys[shard]] for keys in map(self._latest_keys, robot_ids)
            ]
            shard_ops += [["HGETALL", self._seq_keys(r, t)[shard]] for r, t in seq_keys]
            ops.append(shard_ops)
        replies = await self._read_shards(ops)
        n = len(robot_ids)
        latest = [
            _latest_readings([_hash(replies[shard][i]) for shard in range(self.shards)])
            for i in range(n)
        ]
        seq: dict[tuple[str, str], SeqStats] = {}
        for j, pair in enumerate(seq_keys):
            parts = [h for shard in range(self.shards) if (h := _hash(replies[shard][n + j]))]
            if parts:
                # Each reading is counted once, in the shard its batch went to: counts add up.
                seq[pair] = SeqStats(
                    sum(int(p[b"n"]) for p in parts),
                    min(int(p[b"min"]) for p in parts),
                    max(int(p[b"max"]) for p in parts),
                )
        return latest, seq

    def _partials_key(
        self, sensor_type: str, path: Sequence[str], robot_id: str | None, start: int
    ) -> str:
        hour = start - start % 3600
        return f"{self.prefix}agg:{sensor_type}:{'.'.join(path)}:{robot_id or '*'}:{hour}"

    async def kept_partials(
        self,
        *,
        sensor_type: str,
        path: Sequence[str],
        robot_id: str | None,
        minutes: Sequence[int],
        slots: Sequence[int] = (),
    ) -> tuple[dict[int, MinutePartial | None], dict[int, MinutePartial | None]]:
        """For each minute the counters hold (absent: expired, or never written), the kept
        partial of the field while it still describes the minute's readings: the counters'
        count of them (of the robot or of every robot) is the one it was made from. None: none
        kept, or the minute written since. The same for slots of minutes (epoch seconds of
        their start, db.readings.SLOT_SECONDS long) by the slot counts, which are held for
        recent minutes only (SLOT_COUNTS_S), and not for a minute reconciliation corrected.
        The round trips at once."""
        if not minutes and not slots:
            return {}, {}
        kind, name = ("rs", f"{robot_id}/{sensor_type}") if robot_id else ("t", sensor_type)
        slot_name = f"{robot_id or '*'}/{sensor_type}/"
        # (field of the partials' hash, count key in every shard, its read) per period.
        periods: list[tuple[str, list[str], tuple[tuple[str, ...], ...]]] = [
            (str(m), self.minute_keys(m, kind), (("HGET", name), ("EXISTS",))) for m in minutes
        ] + [
            (
                f"s{s}",
                self.minute_keys(s - s % 60, "q"),
                (("HMGET", f"{slot_name}{s % 60 // SLOT_SECONDS}", _SLOTS_WRONG), ("EXISTS",)),
            )
            for s in slots
        ]
        by_hour: dict[str, list[str]] = {}
        for start, (field_name, _, _) in zip([*minutes, *slots], periods, strict=True):
            by_hour.setdefault(self._partials_key(sensor_type, path, robot_id, start), []).append(
                field_name
            )
        # The counts by a script per shard, the partials by one HMGET per hour: a pipeline of
        # three commands per minute cost redis-py ~2.5 ms of CPU for an hour (BENCHMARKS.md,
        # "Issue 15, round 10").
        ops = [
            [[cmd, keys[shard], *args] for _, keys, read in periods for cmd, *args in read]
            for shard in range(self.shards)
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, fields in by_hour.items():
                pipe.hmget(key, fields)
            counts, kept = await asyncio.gather(self._read_shards(ops), pipe.execute())
        raw_partials = dict(
            zip(
                (f for fs in by_hour.values() for f in fs),
                (v for vs in kept for v in vs),
                strict=True,
            )
        )
        out: dict[int, MinutePartial | None] = {}
        out_slots: dict[int, MinutePartial | None] = {}
        for i, (start, (field_name, _, _)) in enumerate(
            zip([*minutes, *slots], periods, strict=True)
        ):
            if not any(reply[2 * i + 1] for reply in counts):
                continue
            if i < len(minutes):
                readings = sum(int(reply[2 * i] or 0) for reply in counts)
            elif any(reply[2 * i][1] for reply in counts):
                continue  # corrected: as if not held
            else:
                readings = sum(int(reply[2 * i][0] or 0) for reply in counts)
            raw = raw_partials[field_name]
            partial = None if raw is None else MinutePartial(*orjson.loads(raw))
            found = partial if partial and partial.readings == readings else None
            (out if i < len(minutes) else out_slots)[start] = found
        return out, out_slots

    async def store_partials(
        self,
        *,
        sensor_type: str,
        path: Sequence[str],
        robot_id: str | None,
        minutes: Mapping[int, MinutePartial],
        slots: Mapping[int, MinutePartial] = MappingProxyType({}),
    ) -> None:
        """Keeps partials of minutes and of slots for later reads (kept_partials decides when
        they still hold), under one key per hour, which expires with the hour's minutes."""
        if not minutes and not slots:
            return
        by_key: dict[str, dict[str, bytes]] = {}
        for prefix, partials in (("", minutes), ("s", slots)):
            for start, p in partials.items():
                key = self._partials_key(sensor_type, path, robot_id, start)
                by_key.setdefault(key, {})[f"{prefix}{start}"] = orjson.dumps(
                    [p.readings, p.samples, p.total, p.least, p.greatest]
                )
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, fields in by_key.items():
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def robot_minute_counts(self, minutes: Sequence[int]) -> list[dict[str, int]]:
        """For each minute, readings per robot summed over shards (robots with none are
        absent); one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in minutes:
                for key in self.minute_keys(m, "r"):
                    pipe.zrange(key, 0, -1, withscores=True)
            results: list[list[tuple[bytes, float]]] = await pipe.execute()
        n = self.shards
        out = []
        for i in range(len(minutes)):
            counts: dict[str, int] = {}
            for part in results[i * n : (i + 1) * n]:
                for robot, score in part:
                    counts[robot.decode()] = counts.get(robot.decode(), 0) + int(score)
            # A correction may leave a robot at 0 in a minute: not counted.
            out.append({r: c for r, c in counts.items() if c > 0})
        return out

    async def window(self, minutes: Sequence[int], *, top: int) -> WindowCounts:
        """Readings (and refusals) per minute over `minutes`, the `top` robots by readings over
        them, and how many robots are online. Each shard's minutes are read by one script
        (a pipeline of an hour's 120 HGETALLs cost redis-py ~3 ms of CPU, the script's one
        reply ~1 ms), the shards, the status counts and the top robots at once. A run of
        consecutive minutes as long as a kept window (ROLLING_WINDOW_MINUTES) ranks its
        robots from the rolling sums (module docstring), any other from a ZUNION of the
        minutes."""
        rolling = top > 0 and _is_rolling(minutes)
        per_shard: list[list[list[str | int]]] = []
        for shard in range(self.shards):
            ops: list[list[str | int]] = [
                ["HGETALL", self.minute_keys(m, "t")[shard]] for m in minutes
            ]
            ops += [["HGETALL", self.minute_keys(m, "x")[shard]] for m in minutes]
            if top and not rolling:
                r_keys = [self.minute_keys(m, "r")[shard] for m in minutes]
                ops.append(["ZUNION", len(r_keys), *r_keys, "WITHSCORES"])
            per_shard.append(ops)
        replies, online, length, rolled = await asyncio.gather(
            self._read_shards(per_shard),
            self.redis.hget(self._status_key, STATUS_ONLINE_FIELD),
            self.redis.hlen(self._status_key),
            self._rolled(minutes, top=top) if rolling else _nothing(),
        )
        robots_online, with_status = await self._status_counts(online, length)
        k = len(minutes)
        if top and not rolling:
            # ZUNION answers in ascending order; with one shard only its tail can be in the
            # top N (most first, as ZREVRANGE answers).
            unions = [reply[2 * k] for reply in replies]
            if self.shards == 1:
                unions = [unions[0][-2 * top :]]
            rolled = [
                [(robot, float(score)) for robot, score in zip(u[::2], u[1::2], strict=True)]
                for u in unions
            ]
            if self.shards == 1:
                rolled = [rolled[0][::-1]]
        return WindowCounts(
            totals=[_sum_nonzero([_hash(r[i]) for r in replies]) for i in range(k)],
            rejected=[_sum_nonzero([_hash(r[k + i]) for r in replies]) for i in range(k)],
            top_robots=_ranked(rolled, top),
            robots_online=robots_online,
            robots_with_status=with_status,
        )

    async def _rolled(self, minutes: Sequence[int], *, top: int) -> list[list[tuple[bytes, float]]]:
        """Each shard's rolling sums of the window `minutes`, rolled to it: the `top` robots
        with one shard; every robot with several (a robot's readings add up across them)."""
        length = len(minutes)
        replies = await asyncio.gather(
            *(
                self._roll_window(
                    keys=[f"{shard}w:{length}:from"],
                    args=[
                        shard,
                        length,
                        minutes[0],
                        top if self.shards == 1 else 0,
                        ROLLING_IDLE_S,
                    ],
                )
                for shard in self._shard_prefixes
            )
        )
        return [
            [(robot, float(score)) for robot, score in zip(r[::2], r[1::2], strict=True)]
            for r in replies
        ]


def _is_rolling(minutes: Sequence[int]) -> bool:
    """Whether `minutes` are consecutive and as many as a kept window's."""
    return len(minutes) in ROLLING_WINDOW_MINUTES and all(b - a == 60 for a, b in pairwise(minutes))


async def _nothing() -> list[list[tuple[bytes, float]]]:
    return []


def _ranked(by_shard: Sequence[Sequence[tuple[bytes, float]]], top: int) -> list[tuple[str, int]]:
    """The `top` robots by readings summed over the shards, most first (ties: as listed). A
    correction may leave a robot at 0 (or below, on one shard): not counted."""
    if not top:
        return []
    summed: dict[bytes, float] = {}
    for part in by_shard:
        for robot, score in part:
            summed[robot] = summed.get(robot, 0.0) + score
    ranked = sorted(((r.decode(), int(s)) for r, s in summed.items() if s > 0), key=lambda x: -x[1])
    return ranked[:top]


def _merged_seq(per_shard: Sequence[Sequence[bytes | None]]) -> SeqStats | None:
    """One robot's sensor type's `seq` hash (n, min, max) from each shard, merged; None when
    no shard has one. Each reading is counted once, in the shard its batch went to: counts add
    up."""
    parts = [
        (int(n), int(lo), int(hi))
        for n, lo, hi in per_shard
        if n is not None and lo is not None and hi is not None
    ]
    if not parts:
        return None
    return SeqStats(sum(p[0] for p in parts), min(p[1] for p in parts), max(p[2] for p in parts))


def _hash(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash as a script returns it (field, value, field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _greatest(per_shard: list[list[float | None]]) -> list[float | None]:
    """Per position, the greatest value any shard holds (None where none does)."""
    if len(per_shard) == 1:
        return list(per_shard[0])
    return [
        max((v for v in values if v is not None), default=None)
        for values in zip(*per_shard, strict=True)
    ]


def _latest_readings(per_shard: Sequence[dict[bytes, bytes]]) -> dict[str, bytes]:
    """A robot's `latest:{robot}` hashes of every shard merged: for each sensor type the
    reading with the greatest `{type}:ts` (those fields only order updates, and are dropped)."""
    if len(per_shard) == 1:
        return {k.decode(): v for k, v in per_shard[0].items() if not k.endswith(b":ts")}
    best: dict[str, tuple[int, bytes]] = {}
    for raw in per_shard:
        for k, v in raw.items():
            if k.endswith(b":ts"):
                continue
            ts = int(raw.get(k + b":ts", b"0"))
            sensor = k.decode()
            if sensor not in best or best[sensor][0] < ts:
                best[sensor] = (ts, v)
    return {sensor: v for sensor, (_, v) in best.items()}
