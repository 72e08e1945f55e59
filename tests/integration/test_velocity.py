"""Order velocity on the test Redis (state/velocity.py): counts per buyer and per address in one
round trip, idempotent under redelivery, by creation time, pruned by the window, no personal
data in Redis, and the scalper rule acting on the counts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.settings import Settings
from order.audit import AuditContext, Velocity, audit
from state.keys import Keys
from state.redis import connect_async
from state.velocity import record_recent
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 11, tzinfo=UTC)
NOW = T0.timestamp() + 60
HOUR = 3600.0
STREET = "文三路 90 号 1 栋 501 室"


@pytest.fixture
def keys(redis_settings: Settings) -> Keys:
    return Keys(redis_settings.redis_prefix)


@pytest.fixture
async def client(redis_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect_async(redis_settings)
    yield client
    await client.aclose()


def order(
    n: int,
    *,
    buyer: str = "tb-buyer-1",
    street: str = STREET,
    created_s: float = 0.0,
    channel: Channel = Channel.TAOBAO,
) -> Order:
    """Order n of a shop, created ``created_s`` seconds after T0."""
    line = OrderLine(
        line_id="1", sku="SKU-A", quantity=1, unit_price=Decimal(99), paid_amount=Decimal(99)
    )
    return Order(
        order_id=make_order_id(channel.value, "shop-1", f"E{n}"),
        channel=channel,
        shop_id="shop-1",
        external_id=f"E{n}",
        channel_status=ChannelStatus.PAID,
        created_at=T0 + timedelta(seconds=created_s),
        updated_at=T0 + timedelta(seconds=created_s),
        currency="CNY",
        buyer=Buyer(id=buyer, name="张三", phone="13912345678"),
        address=Address(
            province="浙江省",
            province_code="ZJ",
            city="杭州市",
            street=street,
            name="张三",
            phone="13912345678",
        ),
        lines=[line],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal(99)),
        total=Decimal(99),
    )


async def record(
    client: aioredis.Redis, keys: Keys, orders: list[Order], *, window_s: float = HOUR
) -> dict[str, Velocity]:
    return await record_recent(client, keys, orders, window_s=window_s, now=NOW)


async def velocity_keys(client: aioredis.Redis, keys: Keys) -> list[str]:
    return [key async for key in client.scan_iter(match=f"{keys.prefix}:velocity:*")]


async def test_counts_per_buyer_and_address_include_the_order_itself(
    client: aioredis.Redis, keys: Keys
) -> None:
    orders = [order(i, street=f"解放路 {i} 号", created_s=i) for i in range(3)]
    counts = await record(client, keys, orders)
    assert [counts[o.order_id] for o in orders] == [
        Velocity(buyer=1, address=1),
        Velocity(buyer=2, address=1),
        Velocity(buyer=3, address=1),
    ]


async def test_a_redelivered_order_is_counted_once(client: aioredis.Redis, keys: Keys) -> None:
    first, second = order(1), order(2, created_s=5)
    before = await record(client, keys, [first, second])
    again = await record(client, keys, [second, first, second])
    assert (
        again
        == before
        == {
            first.order_id: Velocity(buyer=1, address=1),
            second.order_id: Velocity(buyer=2, address=2),
        }
    )
    for key in await velocity_keys(client, keys):
        assert await client.zcard(key) == 2


async def test_counts_follow_creation_time_not_arrival(client: aioredis.Redis, keys: Keys) -> None:
    early, middle, late = order(1), order(2, created_s=10), order(3, created_s=20)
    assert (await record(client, keys, [late]))[late.order_id].buyer == 1  # alone so far
    counts = await record(client, keys, [early, middle])
    assert (counts[early.order_id].buyer, counts[middle.order_id].buyer) == (1, 2)
    # a replay counts the orders created before it, never the ones created after
    assert (await record(client, keys, [late]))[late.order_id].buyer == 3
    assert (await record(client, keys, [early]))[early.order_id].buyer == 1


async def test_orders_older_than_the_window_drop_out(client: aioredis.Redis, keys: Keys) -> None:
    old = order(1, created_s=60 - HOUR - 10)  # created more than an hour before NOW
    recent = order(2, created_s=60 - HOUR + 10)
    newest = order(3, created_s=50)
    counts = await record(client, keys, [old, recent, newest])
    assert counts[old.order_id] == Velocity(0, 0)
    assert counts[recent.order_id] == Velocity(1, 1)
    assert counts[newest.order_id] == Velocity(2, 2)
    for key in await velocity_keys(client, keys):
        assert await client.zrange(key, 0, -1) == [recent.order_id, newest.order_id]
    # a shorter window forgets `recent` as well
    short = await record(client, keys, [newest], window_s=600)
    assert short[newest.order_id] == Velocity(1, 1)


async def test_one_address_however_written_across_buyers_and_channels(
    client: aioredis.Redis, keys: Keys
) -> None:
    spellings = ["文三路 90 号 1 栋 501 室", "文三路９０号１栋５０１室", "文三路90号1栋501室 "]
    orders = [
        order(i, buyer=f"buyer-{i}", street=street, created_s=i, channel=channel)
        for i, (street, channel) in enumerate(
            zip(spellings, (Channel.TAOBAO, Channel.OWN, Channel.JD), strict=True)
        )
    ]
    counts = await record(client, keys, orders)
    assert [counts[o.order_id] for o in orders] == [Velocity(1, 1), Velocity(1, 2), Velocity(1, 3)]


@pytest.mark.parametrize(
    ("buyer", "street", "expected"),
    [
        ("", STREET, Velocity(buyer=0, address=1)),  # no buyer id
        ("jd_4f8a****b21", STREET, Velocity(buyer=0, address=1)),  # masked pin: many buyers
        ("dy-1", "玉林街道##Gx7Vv1cWq2Lk9pZ3rT8yB0n4mQ==*CgwI#1##", Velocity(1, 0)),  # cipher
        ("", "", Velocity(0, 0)),
    ],
)
async def test_what_cannot_be_told_apart_is_not_counted(
    client: aioredis.Redis, keys: Keys, buyer: str, street: str, expected: Velocity
) -> None:
    one = order(1, buyer=buyer, street=street)
    assert await record(client, keys, [one]) == {one.order_id: expected}
    assert len(await velocity_keys(client, keys)) == expected.buyer + expected.address


async def test_one_round_trip_per_batch(
    client: aioredis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[int] = []  # commands per round trip
    make_pipeline: Callable[..., Any] = client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*a: Any, **kw: Any) -> Any:
            executed.append(len(pipe.command_stack))
            return await execute(*a, **kw)

        pipe.execute = counted
        return pipe

    async def no_single_commands(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a command outside the pipeline: {args[:1]}")

    monkeypatch.setattr(client, "pipeline", counting_pipeline)
    monkeypatch.setattr(client, "execute_command", no_single_commands)
    batch = [order(i, buyer=f"b{i % 3}", street=f"解放路{i % 2}号", created_s=i) for i in range(50)]
    counts = await record(client, keys, batch)
    assert executed == [50 * 2]  # one trip: one script call (velocity_count.lua) per key
    assert counts[batch[-1].order_id] == Velocity(buyer=17, address=25)
    assert await record(client, keys, [order(99, buyer="", street="")]) == {
        order(99).order_id: Velocity(0, 0)
    }
    assert executed == [100]  # nothing to count: no round trip at all


async def test_keys_expire_and_hold_no_personal_data(client: aioredis.Redis, keys: Keys) -> None:
    batch = [order(1, buyer="tb-buyer-secret"), order(2, buyer="tb-buyer-secret", created_s=1)]
    await record(client, keys, batch)
    found = await velocity_keys(client, keys)
    assert len(found) == 2
    for key in found:
        assert 0 < await client.ttl(key) <= HOUR + 60
        assert "secret" not in key and "文三路" not in key and "13912345678" not in key
        assert set(await client.zrange(key, 0, -1)) == {o.order_id for o in batch}


async def test_the_scalper_rule_holds_the_orders_over_the_limit(
    client: aioredis.Redis, keys: Keys
) -> None:
    """Seven orders of one buyer within a minute, to different addresses: the shipped rule
    lets five through and holds the sixth and seventh."""
    orders = [order(i, street=f"解放路 {i} 号", created_s=i * 8) for i in range(7)]
    ctx = AuditContext(frozenset({"SKU-A"}), velocity=await record(client, keys, orders))
    reasons = [audit(o, ctx).reason for o in orders]
    assert reasons == ["", "", "", "", "", "scalper_suspected", "scalper_suspected"]
    assert audit(orders[5], ctx).detail == "6 orders from the buyer within 3600s"


async def test_the_window_must_be_positive(client: aioredis.Redis, keys: Keys) -> None:
    with pytest.raises(ValueError, match="window_s"):
        await record(client, keys, [order(1)], window_s=0)
