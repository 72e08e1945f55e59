"""Redis connections and Lua script registration, shared by workers and the CLI."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
import redis.asyncio as aioredis

from ops.settings import Settings


@cache
def lua_source(name: str) -> str:
    """A script's text; ``stock_*`` scripts get the shared helpers of common.lua prepended
    (Redis scripts cannot import)."""
    folder = resources.files("state").joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name.startswith("stock_"):
        source = folder.joinpath("common.lua").read_text(encoding="utf-8") + "\n" + source
    return source


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def connect_async(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, decode_responses=True)


def connect_batched(settings: Settings) -> aioredis.Redis:
    """The hot path's client: no per-reply socket timeout. redis-py arms a timer for every reply
    it reads, a pipeline of a thousand calls arms a thousand (about a tenth of a worker's time
    in the profile); the caller bounds the whole batch instead (agents/pipeline.py)."""
    return aioredis.Redis.from_url(
        settings.redis_url, decode_responses=True, socket_timeout=None, socket_keepalive=True
    )
