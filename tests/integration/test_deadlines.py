"""Ship-by deadlines on the real Redis: every order still to ship is in the deadline index
under its channel's or shop's deadline, leaves it when it ships or is cancelled, carries it and
its priority to the WMS, and shows in `orders late`, the API's read model and the metric."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.deadlines import EXPEDITED
from order.shops import ShopRules
from streams.messages import WmsEventKind
from streams.models import Order, ShopKey
from tests.integration.test_pipeline import (
    T0,
    Feed,
    action,
    commands,
    own_order,
    stock,
    wms_answer,
)
from web.views import list_late

pytestmark = pytest.mark.integration


def recent(ext: str, hours_ago: float, **changes: object) -> Order:
    """A paid own-shop order placed ``hours_ago``."""
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    return own_order(ext, {"A": 1}).model_copy(
        update={"created_at": at, "updated_at": at, **changes}
    )


async def test_late_orders_are_listed_earliest_first_and_leave_when_shipped(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    pipeline.decisions.shops = {ShopKey.of("own", "shop1"): ShopRules(ship_within_h=24)}
    feed = Feed()
    old, late, fresh = recent("L1", 30), recent("L2", 26), recent("L3", 1, seller_remark="加急")
    unpaid = own_order("L4", {"A": 1}, paid=False)
    results = [await pipeline.process([feed.raw(o)]) for o in (old, late, fresh, unpaid)]
    client, keys = pipeline.client, pipeline.keys
    assert await client.zscore(keys.deadlines, unpaid.order_id) is None  # no clock yet
    due = await client.zscore(keys.deadlines, old.order_id)
    assert due == pytest.approx((old.created_at + timedelta(hours=24)).timestamp())

    # The WMS is told the deadline and the priority the remark asked for.
    [first] = commands(results[0])
    assert first.ship_by == old.created_at + timedelta(hours=24)
    assert first.priority == 0
    [urgent] = commands(results[2])
    assert urgent.priority == EXPEDITED

    rows = await list_late(redis_settings, client=client)
    assert [r["order_id"] for r in rows] == [old.order_id, late.order_id]
    assert rows[0]["overdue_s"] >= 6 * 3600 - 60 and rows[0]["state"] == "released"
    soon = await list_late(redis_settings, client=client, within_s=24 * 3600)
    assert [r["order_id"] for r in soon] == [old.order_id, late.order_id, fresh.order_id]
    assert await pipeline.orders.queue_figures(time.time()) == {
        "held": 1,  # the unpaid order
        "late": 2,
        "due_soon": 0,
        "backorders": 0,
    }
    scoped = await list_late(redis_settings, client=client, keep=lambda r: r["shop_id"] == "x")
    assert scoped == []

    # Shipped or cancelled: no longer late.
    await pipeline.apply_wms_events(
        [wms_answer(first, WmsEventKind.SHIPPED, tracking_number="SF1")]
    )
    [stop] = commands(await pipeline.apply_actions([action(late.order_id, "cancel")]))
    await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert await list_late(redis_settings, client=client) == []
    assert await client.zcard(keys.deadlines) == 1  # the fresh one, still to ship


async def test_a_channel_deadline_wins_and_a_payment_starts_the_clock(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    promised = T0 + timedelta(hours=5)
    await pipeline.process(
        [feed.raw(own_order("L10", {"A": 1}).model_copy(update={"ship_by": promised}))]
    )
    unpaid = own_order("L11", {"A": 1}, paid=False)
    await pipeline.process([feed.raw(unpaid)])
    client, keys = pipeline.client, pipeline.keys
    oid = own_order("L10", {"A": 1}).order_id
    assert await client.zscore(keys.deadlines, oid) == promised.timestamp()
    assert await client.zscore(keys.deadlines, unpaid.order_id) is None
    await pipeline.process([feed.raw(own_order("L11", {"A": 1}, minutes=5))])  # paid
    record = await pipeline.orders.load(unpaid.order_id)
    assert record is not None and record.ship_by == (T0 + timedelta(hours=72)).timestamp()
    assert await client.zscore(keys.deadlines, unpaid.order_id) == record.ship_by
