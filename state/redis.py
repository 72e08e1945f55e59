"""Redis connections and Lua script registration, shared by workers and the CLI."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis

from core.security import redis_kwargs
from core.settings import Settings


@cache
def lua_source(name: str) -> str:
    """A script's text; ``stock_*`` scripts get the shared helpers of common.lua prepended
    (Redis scripts cannot import)."""
    folder = resources.files("state").joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name.startswith("stock_"):
        source = folder.joinpath("common.lua").read_text(encoding="utf-8") + "\n" + source
    return source


# Every client here decodes replies (``decode_responses=True``), but redis-py types them as
# ``bytes | str``: these say what a reply is, for the type checker (no work at run time).
def text(reply: Any) -> str:
    return cast(str, reply)


def texts(reply: Any) -> list[str]:
    return cast(list[str], reply)


def text_fields(reply: Any) -> dict[str, str]:
    return cast(dict[str, str], reply)


def scored(reply: Any) -> list[tuple[str, float]]:
    """A ``withscores=True`` reply: (member, score) pairs."""
    return cast(list[tuple[str, float]], reply)


def connect(settings: Settings) -> redis.Redis:
    """A client with the configured ACL user, password and TLS (core/security.py)."""
    return redis.Redis.from_url(settings.redis_url, decode_responses=True, **redis_kwargs(settings))


def connect_async(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url, decode_responses=True, **redis_kwargs(settings)
    )


def connect_batched(settings: Settings) -> aioredis.Redis:
    """The hot path's client.

    No per-reply socket timeout: redis-py arms a timer for every reply it reads, a pipeline of
    a thousand calls arms a thousand (about a tenth of a worker's time in the profile); the
    caller bounds the whole batch instead (agents/pipeline.py). Commands are packed by hiredis
    in C (six times quicker than redis-py's asyncio packer, byte for byte the same).
    """
    scheme = settings.redis_url.partition("://")[0]
    # A unix socket has no TCP keepalive: its connection class refuses the argument.
    tcp = {} if scheme == "unix" else {"socket_keepalive": True}
    return aioredis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=None,
        connection_class=_PACKED.get(scheme, aioredis.Connection),
        **tcp,
        **redis_kwargs(settings),
    )


_PLAIN_ARGS = frozenset({str, bytes, int, float})


class _HiredisPacking:
    """pack_command by hiredis for plain arguments (str subclasses too: a ShopKey is one);
    anything else (bool, memoryview...) takes redis-py's own path, which also raises its
    errors for values Redis cannot take."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if not all(type(arg) in _PLAIN_ARGS or isinstance(arg, str) for arg in args):
            return super().pack_command(*args)  # type: ignore[misc,no-any-return]
        head = args[0]
        if isinstance(head, str):
            args = (*head.encode().split(), *args[1:])
        elif b" " in head:
            args = (*head.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _PackedConnection(_HiredisPacking, aioredis.Connection):
    pass


class _PackedSSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


class _PackedUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


_PACKED: dict[str, type[aioredis.connection.AbstractConnection]] = {
    "redis": _PackedConnection,
    "rediss": _PackedSSLConnection,
    "unix": _PackedUnixConnection,
}
