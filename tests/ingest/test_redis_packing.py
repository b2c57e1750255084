"""Commands packed by hiredis: the same bytes as redis-py's own packing, on a real server."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError
from redis.typing import EncodableT

from ingest.counters import open_redis
from ingest.redis_packing import HiredisConnection, HiredisUnixConnection
from tests.conftest import HARNESS

COMMANDS: list[tuple[EncodableT, ...]] = [
    ("HMGET", "status", *(str(i) for i in range(100))),
    ("CONFIG GET", "maxmemory"),
    (b"CONFIG GET", b"maxmemory"),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", '{"r": "é"}', 12345678901234567890, 0.1, -1.5e-7),
    ("SET", "k", memoryview(b"\x00\xff"), bytearray(b"x")),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: str(a[0]))
def test_the_same_bytes_as_redis_py(args: tuple[EncodableT, ...]) -> None:
    ours = b"".join(HiredisConnection().pack_command(*args))
    theirs = b"".join(bytes(x) for x in Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("value", [None, True, [1]])
def test_a_value_redis_has_no_encoding_for_is_a_data_error(value: object) -> None:
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "k", value)  # type: ignore[arg-type]


async def test_a_client_of_one_server_packs_with_hiredis(redis_prefix: str) -> None:
    async with open_redis(HARNESS.redis_url) as client:
        assert isinstance(client, Redis)
        assert client.connection_pool.connection_class is HiredisConnection
        key = f"{redis_prefix}packing"
        ids = [str(i) for i in range(100)]
        try:
            await client.hset(key, mapping={i: f"é{i}" for i in ids[::2]})
            got = await client.hmget(key, ids)
        finally:
            await client.delete(key)
        assert got == [f"é{i}".encode() if int(i) % 2 == 0 else None for i in ids]
    async with open_redis("unix:///nonexistent/redis.sock") as client:
        assert isinstance(client, Redis)
        assert client.connection_pool.connection_class is HiredisUnixConnection
