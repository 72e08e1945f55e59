"""Redis connections and Lua script registration, shared by workers and the CLI."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
import redis.asyncio as aioredis

from ops.settings import Settings


@cache
def lua_source(name: str) -> str:
    return resources.files("state").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def connect_async(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
