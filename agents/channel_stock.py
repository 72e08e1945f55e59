"""The channel stock publisher timer: rebalances channel quotas and pushes every change of a
shop's sellable quantity to ``oms.channel.stock`` (key sku), coalesced per tick.

Every worker registers the timer; the ``channel-quota`` lock (one try per tick, no waiting)
makes one of them do each tick, and its fencing token guards the quota writes
(state/channel_stock.py). Per tick:

1. which skus changed: the newest id of each sku's ledger stream (every stock movement,
   reservations included, appends to it in the same script) against the id seen when this
   process last handled the sku; a sku never seen here counts as changed, so a new holder
   starts with a full pass. One pipelined XREVRANGE per sku per tick.
2. rebalance those skus (percent quotas follow available stock), then read every listed shop's
   sellable figure of them;
3. publish a ChannelStock only where the figure differs from the last one published (kept in
   Redis hash ``<p>:sellable``, field ``SHOP|sku`` = ``sellable|version``, so a new holder
   does not repeat old figures), wait for the broker's acks, then store the new figures.
   A crash between publish and store publishes the same figure again with the same version:
   shops drop it. A burst of 1,000 reservations of one sku within a tick is one message per
   shop whose figure moved, not 1,000.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import faust
import redis.asyncio as aioredis

from agents.guard import guarded
from agents.intake import send_all
from core.settings import Settings
from state.channel_stock import (
    CHANNEL_QUOTA_LOCK,
    AllocationConfig,
    load_allocation,
    read_sellable,
    rebalance,
)
from state.keys import Keys
from state.lock import AsyncDistributedLock, LockLost
from state.redis import connect_async
from streams import topics
from streams.messages import ChannelStock

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
LOCK_TTL_MS = 10_000
BATCH = 500  # skus per rebalance/read/publish step

Send = Callable[[list[tuple[str, str]]], Awaitable[None]]  # [(key, json)], returns once acked


@dataclass
class TickResult:
    acquired: bool = False
    changed: int = 0  # skus rebalanced
    published: int = 0  # messages sent


def sellable_key(keys: Keys) -> str:
    return f"{keys.prefix}:sellable"


class ChannelStockPublisher:
    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        config: AllocationConfig,
        warehouses: Sequence[str],
        *,
        lock_ttl_ms: int = LOCK_TTL_MS,
    ) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self.warehouses = list(warehouses)
        self.lock_ttl_ms = lock_ttl_ms
        self._heads: dict[str, str] = {}  # sku -> ledger head id when last handled here

    async def tick(self, send: Send, now: datetime | None = None) -> TickResult:
        lock = AsyncDistributedLock(
            self.client, self.keys, CHANNEL_QUOTA_LOCK, ttl_ms=self.lock_ttl_ms, wait_s=0
        )
        lease = await lock.try_acquire()
        if lease is None:
            return TickResult()
        result = TickResult(acquired=True)
        try:
            changed = await self._changed_skus()
            for start in range(0, len(changed), BATCH):
                lease = await lock.renew_if_due()
                chunk = [sku for sku, _ in changed[start : start + BATCH]]
                await rebalance(
                    self.client, self.keys, self.config, self.warehouses, chunk, fence=lease.fence
                )
                result.published += await self._publish(chunk, send, now or datetime.now(UTC))
                self._heads.update(changed[start : start + BATCH])
                result.changed += len(chunk)
        finally:
            await lock.release()
        return result

    async def _changed_skus(self) -> list[tuple[str, str]]:
        skus = sorted(await self.client.smembers(self.keys.skus))
        pipe = self.client.pipeline(transaction=False)
        for sku in skus:
            pipe.xrevrange(self.keys.ledger(sku), count=1)
        replies = await pipe.execute()
        heads = [(sku, e[0][0] if e else "") for sku, e in zip(skus, replies, strict=True)]
        return [(sku, head) for sku, head in heads if self._heads.get(sku) != head]

    async def _publish(self, skus: list[str], send: Send, now: datetime) -> int:
        figures = await read_sellable(self.client, self.keys, self.config, self.warehouses, skus)
        if not figures:
            return 0
        names = [f"{shop}|{sku}" for shop, sku in figures]
        last = await self.client.hmget(sellable_key(self.keys), names)
        shops = {s.key: s for s in self.config.published()}
        outputs: list[tuple[str, str]] = []
        updates: dict[str, str] = {}
        for name, ((shop_key, sku), value), old in zip(names, figures.items(), last, strict=True):
            old_value, _, old_version = (old or "").partition("|")
            if old is not None and int(old_value) == value:
                continue
            version = int(old_version or 0) + 1
            shop = shops[shop_key]
            message = ChannelStock(
                channel=shop.channel,
                shop_id=shop.shop_id,
                sku=sku,
                sellable=value,
                version=version,
                at=now,
            )
            outputs.append((sku, message.model_dump_json()))
            updates[name] = f"{value}|{version}"
        if outputs:
            await send(outputs)  # acked before the figures are stored: at least once
            await self.client.hset(sellable_key(self.keys), mapping=updates)
        return len(outputs)


def register_channel_stock(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    """Loads and validates config/allocation.toml now (a bad file stops the worker at start)."""
    from order.route import RoutingTable

    config = load_allocation(settings.config_dir / "allocation.toml")
    routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
    publisher = ChannelStockPublisher(
        connect_async(settings), Keys(settings.redis_prefix), config, sorted(routing.warehouses)
    )
    topic_name = topics.CHANNEL_STOCK.name(settings.topic_prefix)

    async def send(outputs: list[tuple[str, str]]) -> None:
        await send_all(app, [(topic_name, key, value) for key, value in outputs])

    async def tick() -> TickResult | None:
        try:
            return await publisher.tick(send)
        except LockLost as exc:
            counters["channel_stock_lease_lost"] += 1
            log.warning("channel quota lease lost, next tick retries: %s", exc)
            return None

    @app.timer(INTERVAL_S, name="channel_stock")
    async def publish_channel_stock() -> None:
        # Nothing is stored as published before the broker acked it: the next tick repeats.
        result = await guarded(counters, "channel_stock_errors", "channel stock publishing", tick)
        if result is not None:
            counters["channel_stock_rebalanced"] += result.changed
            counters["channel_stock_published"] += result.published
