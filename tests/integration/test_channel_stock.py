"""Channel quotas against the real test Redis: enforcement in the reserve script, give-back on
release, fenced rebalance, concurrency, and the coalescing channel stock publisher."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from agents.channel_stock import ChannelStockPublisher, sellable_key
from core.settings import Settings
from order.reservation import ReserveRequest, ReserveStatus
from state.channel_stock import (
    CHANNEL_QUOTA_LOCK,
    QuotaFenceError,
    parse_allocation,
    rebalance,
)
from state.keys import Keys
from state.lock import AsyncDistributedLock
from state.redis import connect, connect_async, lua_source
from state.reservations import StockEngine
from state.stock import StockRow, load_stock
from state.verify import verify
from streams.messages import ChannelStock
from streams.models import ShopKey

pytestmark = pytest.mark.integration

WHS = ["W1", "W2"]


@pytest.fixture
def keys(redis_settings: Settings) -> Keys:
    return Keys(redis_settings.redis_prefix)


@pytest.fixture
async def client(redis_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    c = connect_async(redis_settings)
    yield c
    await c.aclose()


def load(settings: Settings, keys: Keys, sku: str, **per_wh: int) -> None:
    rows = [StockRow(sku, wh, qty) for wh, qty in per_wh.items()]
    load_stock(connect(settings), keys, rows)


def config(**shops: dict[str, object]) -> object:
    return parse_allocation({"shops": {k.replace("__", "/"): v for k, v in shops.items()}})


async def fenced_rebalance(client: aioredis.Redis, keys: Keys, cfg: object, **kw: object) -> dict:
    lock = AsyncDistributedLock(client, keys, CHANNEL_QUOTA_LOCK, wait_s=1)
    async with lock as lease:
        return await rebalance(client, keys, cfg, WHS, fence=lease.fence, **kw)  # type: ignore[arg-type]


def req(order: str, shop: str, units: int, sku: str = "S") -> ReserveRequest:
    return ReserveRequest(order, {sku: units}, WHS, shop=ShopKey.parse(shop))


async def quota(client: aioredis.Redis, keys: Keys, shop: str, sku: str = "S") -> str | None:
    return await client.hget(keys.stock(sku), f"quota:{shop}")


async def test_fixed_quota_limits_the_shop_not_the_shared_one(
    redis_settings: Settings, keys: Keys, client: aioredis.Redis
) -> None:
    load(redis_settings, keys, "S", W1=20)
    await fenced_rebalance(client, keys, config(jd__1={"mode": "fixed", "value": 5}))
    engine = StockEngine(client, keys)
    got = await engine.reserve_many([req(f"j{i}", "jd/1", 1) for i in range(5)])
    assert [r.status for r in got] == [ReserveStatus.RESERVED] * 5
    assert await quota(client, keys, "jd/1") == "0"
    (short,) = await engine.reserve_many([req("j5", "jd/1", 1)])
    assert short.status is ReserveStatus.SHORTAGE
    # The script refuses on its own too (the engine's pre-check is only a shortcut).
    script = client.register_script(lua_source("stock_reserve"))
    (reply,) = await script(
        keys=[keys.stock("S"), keys.ledger("S")], args=["j6", "W1=1", "jd/1", ""]
    )
    assert reply[0] == "shortage" and await client.hget(keys.stock("S"), "r:j6") is None
    (shared,) = await engine.reserve_many([req("o1", "own/web", 3)])
    assert shared.status is ReserveStatus.RESERVED
    assert await client.hget(keys.stock("S"), "reserved:W1") == "8"
    # Replays are idempotent: no second charge.
    (again,) = await engine.reserve_many([req("j0", "jd/1", 1)])
    assert again.status is ReserveStatus.EXISTING and await quota(client, keys, "jd/1") == "0"


async def test_release_gives_quota_back_commit_keeps_it(
    redis_settings: Settings, keys: Keys, client: aioredis.Redis
) -> None:
    load(redis_settings, keys, "S", W1=20)
    cfg = config(jd__1={"mode": "fixed", "value": 5})
    await fenced_rebalance(client, keys, cfg)
    engine = StockEngine(client, keys)
    await engine.reserve_many([req("a", "jd/1", 2), req("b", "jd/1", 2), req("c", "jd/1", 1)])
    assert await quota(client, keys, "jd/1") == "0"
    await engine.release("a", ["S"])  # final
    assert await quota(client, keys, "jd/1") == "2"
    assert await client.hget(keys.stock("S"), "rq:a") is None
    await engine.release("a", ["S"])  # replayed cancel: nothing twice
    assert await quota(client, keys, "jd/1") == "2"
    await engine.undo("b", ["S"])  # saga compensation
    assert await quota(client, keys, "jd/1") == "4"
    await engine.commit("c", ["S"])  # shipped: sold for good
    await engine.release("c", ["S"])
    assert await quota(client, keys, "jd/1") == "4"
    # Rebalancing does not hand sold units out again; raising the value gives the difference.
    await fenced_rebalance(client, keys, cfg)
    assert await quota(client, keys, "jd/1") == "4"
    await fenced_rebalance(client, keys, config(jd__1={"mode": "fixed", "value": 8}))
    assert await quota(client, keys, "jd/1") == "7"
    # Dropped from the config: the shop becomes shared, fields go.
    await fenced_rebalance(client, keys, config())
    assert await quota(client, keys, "jd/1") is None
    assert verify(connect(redis_settings), keys).ok


async def test_percent_rebalance_and_channel_pool(
    redis_settings: Settings, keys: Keys, client: aioredis.Redis
) -> None:
    load(redis_settings, keys, "S", W1=30, W2=7)
    cfg = parse_allocation(
        {
            "shops": {
                "amazon/a": {"mode": "percent", "value": 30},
                "jd/*": {"mode": "fixed", "value": 2},  # every unlisted jd shop, together
                "jd/big": {"mode": "shared"},
            }
        }
    )
    available = await fenced_rebalance(client, keys, cfg)
    assert available == {"S": 37}
    assert await quota(client, keys, "amazon/a") == "11"  # floor(0.3 * 37)
    assert await quota(client, keys, "jd/big") == "none"
    engine = StockEngine(client, keys)
    got = await engine.reserve_many(
        [req("p1", "jd/s1", 1), req("p2", "jd/s2", 1), req("p3", "jd/s3", 1), req("b", "jd/big", 7)]
    )
    assert [r.status.value for r in got] == ["reserved", "reserved", "shortage", "reserved"]
    assert await quota(client, keys, "jd/*") == "0"
    await fenced_rebalance(client, keys, cfg)
    assert await quota(client, keys, "amazon/a") == str(30 * 28 // 100)  # 37 - 9 reserved


async def test_stale_fence_is_refused(
    redis_settings: Settings, keys: Keys, client: aioredis.Redis
) -> None:
    load(redis_settings, keys, "S", W1=10)
    old = config(jd__1={"mode": "fixed", "value": 5})
    await rebalance(client, keys, old, WHS, fence=7)
    with pytest.raises(QuotaFenceError):
        await rebalance(client, keys, config(jd__1={"mode": "fixed", "value": 9}), WHS, fence=6)
    assert await quota(client, keys, "jd/1") == "5"
    assert await client.hget(keys.stock("S"), "fence:quota") == "7"


async def test_concurrent_shops_never_exceed_quotas_or_stock(
    redis_settings: Settings, keys: Keys
) -> None:
    load(redis_settings, keys, "H", W1=25, W2=15)
    cfg = config(jd__a={"mode": "fixed", "value": 10}, amazon__b={"mode": "percent", "value": 25})
    clients = [connect_async(redis_settings) for _ in range(4)]
    await fenced_rebalance(clients[0], keys, cfg)
    assert await quota(clients[0], keys, "amazon/b", "H") == "10"
    shops = ["jd/a", "amazon/b", "own/c"]
    rng = random.Random(7)
    orders = [(f"o{i}", rng.choice(shops), rng.randint(1, 3)) for i in range(120)]

    async def worker(k: int) -> list[tuple[str, str, int, ReserveStatus]]:
        engine = StockEngine(clients[k], keys)
        out = []
        for start in range(k * 5, len(orders), 20):
            batch = orders[start : start + 5]
            got = await engine.reserve_many([req(o, s, n, "H") for o, s, n in batch])
            out += [(o, s, n, r.status) for (o, s, n), r in zip(batch, got, strict=True)]
        return out

    results = [x for part in await asyncio.gather(*(worker(k) for k in range(4))) for x in part]
    assert len(results) == len(orders)
    sold: Counter[str] = Counter()
    for _, shop, units, status in results:
        if status is ReserveStatus.RESERVED:
            sold[shop] += units
    assert sold["jd/a"] <= 10 and sold["amazon/b"] <= 10
    assert sum(sold.values()) <= 40
    assert sold["own/c"] > 0
    assert 10 - sold["jd/a"] == int(await quota(clients[0], keys, "jd/a", "H") or -1)
    assert verify(connect(redis_settings), keys).ok
    for c in clients:
        await c.aclose()


async def test_publisher_publishes_each_change_once(
    redis_settings: Settings, keys: Keys, client: aioredis.Redis
) -> None:
    load(redis_settings, keys, "P", W1=100)
    load(redis_settings, keys, "Q", W2=10)
    cfg = config(
        jd__1={"mode": "percent", "value": 50},
        own__web={"mode": "shared"},
        taobao__t={"mode": "fixed", "value": 30},
    )
    publisher = ChannelStockPublisher(client, keys, cfg, WHS)
    sent: list[tuple[str, str]] = []

    async def send(outputs: list[tuple[str, str]]) -> None:
        sent.extend(outputs)

    def figures() -> dict[tuple[str, str], tuple[int, int]]:
        out = {}
        for key, value in sent:
            m = ChannelStock.model_validate(orjson.loads(value))
            assert m.sku == key
            out[(ShopKey.of(m.channel, m.shop_id), m.sku)] = (m.sellable, m.version)
        return out

    first = await publisher.tick(send)
    assert first.acquired and first.changed == 2 and first.published == 6
    assert figures() == {
        ("jd/1", "P"): (50, 1),
        ("own/web", "P"): (100, 1),
        ("taobao/t", "P"): (30, 1),
        ("jd/1", "Q"): (5, 1),
        ("own/web", "Q"): (10, 1),
        ("taobao/t", "Q"): (10, 1),
    }
    sent.clear()
    assert (await publisher.tick(send)).published == 0 and sent == []

    # A burst of 60 reservations of P: one message per shop whose figure moved.
    engine = StockEngine(client, keys)
    web = ShopKey.parse("own/web")
    burst = [ReserveRequest(f"b{i}", {"P": 1}, WHS, shop=web) for i in range(60)]
    await asyncio.gather(*(engine.reserve_many(burst[i : i + 6]) for i in range(0, 60, 6)))
    tick = await publisher.tick(send)
    # taobao/t still shows its 30 fixed units: unchanged, not published.
    assert tick.changed == 1 and tick.published == 2
    assert figures() == {("jd/1", "P"): (20, 2), ("own/web", "P"): (40, 2)}  # jd: 50% of 40
    sent.clear()
    assert (await publisher.tick(send)).published == 0

    # A new holder (another worker) does a full pass but repeats nothing already published.
    other = ChannelStockPublisher(client, keys, cfg, WHS)
    again = await other.tick(send)
    assert again.changed == 2 and again.published == 0
    stored = await client.hgetall(sellable_key(keys))
    assert stored["jd/1|P"] == "20|2"

    # While another holds the lock, a tick does nothing.
    lock = AsyncDistributedLock(client, keys, CHANNEL_QUOTA_LOCK, wait_s=0)
    assert await lock.try_acquire() is not None
    assert not (await publisher.tick(send)).acquired
    await lock.release()
