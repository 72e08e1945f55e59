"""The backorder queue in Redis: orders held out of stock (filed by the order save script,
state/lua/save_order.lua, with the units they wait for) and the units available of their skus,
read without loading an order record."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import redis.asyncio as aioredis

from order.backorders import Backorder
from state.keys import Keys
from state.redis import scored
from state.stock import levels_from


async def queued(client: aioredis.Redis, keys: Keys, limit: int) -> list[Backorder]:
    """The first ``limit`` backorders of the queue, first queued first."""
    found = scored(await client.zrange(keys.backorders, 0, limit - 1, withscores=True))
    if not found:
        return []
    units = await client.hmget(keys.backorder_skus, [oid for oid, _ in found])
    return [
        Backorder(oid, score, orjson.loads(wanted))
        for (oid, score), wanted in zip(found, units, strict=True)
        if wanted
    ]


async def available_units(
    client: aioredis.Redis, keys: Keys, skus: Iterable[str]
) -> dict[str, tuple[int, str]]:
    """Per sku: units on hand and not reserved over every warehouse, and the id of its latest
    stock movement (its ledger's last entry, which trimming keeps): a version of the figures
    that changes with every movement, even one that brings them back to an earlier value."""
    wanted = sorted(set(skus))
    pipe = client.pipeline(transaction=False)
    for sku in wanted:
        pipe.hgetall(keys.stock(sku))
        pipe.xrevrange(keys.ledger(sku), count=1)
    replies = await pipe.execute()
    out = {}
    for i, sku in enumerate(wanted):
        fields, last = replies[2 * i], replies[2 * i + 1]
        units = sum(max(0, level.available) for level in levels_from(sku, fields))
        out[sku] = (units, last[0][0] if last else "")
    return out
