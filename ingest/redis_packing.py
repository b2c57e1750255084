"""Commands packed by hiredis on redis-py's asyncio connections to one server.

redis-py's synchronous client packs commands with hiredis (C) when it is installed; its
asyncio connections pack them in Python, argument by argument. The robot list's HMGET and
ZMSCORE of 100 robot ids took ~90 µs each that way, ~8 µs with hiredis (BENCHMARKS.md, round
12). The connections here pack as the synchronous client does, with its error for an argument
of a type Redis has no encoding for (DataError). A cluster client makes its connections with a
fixed class, so it keeps redis-py's packing.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError
from redis.typing import EncodableT


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        # As redis-py: a command name with a space ("CONFIG GET") is sent as its words.
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            # hiredis's stub types its argument as a 1-tuple; it takes any length.
            return [hiredis.pack_command(args)]  # type: ignore[arg-type]
        except TypeError as exc:
            raise DataError(str(exc)) from exc


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def hiredis_packed_client(url: str, **options: Any) -> Redis:
    """Redis.from_url(url, **options), its connections packing with hiredis; the client owns
    its pool (aclose closes both)."""
    pool = ConnectionPool.from_url(url, **options)
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return Redis.from_pool(pool)
