"""Backorders that clear themselves, on the real Redis: orders held out of stock are retried by
the backorder timer, first queued first, when stock they wait for becomes available (a load,
an adjustment, a cancel's release), and only as many as that stock can serve."""

from __future__ import annotations

import pytest

from agents.pipeline import OrderPipeline
from agents.timers import ChangeGate, due_backorders
from core.settings import Settings
from order.deadlines import HEAD_START_PER_LEVEL_S
from order.reasons import Reason
from state.keys import Keys
from state.redis import connect
from state.stock import adjust_stock
from streams.messages import EventKind, OperatorAction, OrderState, WmsEventKind
from tests.integration.test_lifecycle import reconciles
from tests.integration.test_pipeline import (
    Feed,
    action,
    commands,
    events,
    levels,
    own_order,
    stock,
    wms_answer,
)
from tests.integration.test_presale import state_of

pytestmark = pytest.mark.integration


async def retries(pipeline: OrderPipeline, gate: ChangeGate) -> list[OperatorAction]:
    return await due_backorders(pipeline.client, pipeline.keys, gate=gate)


def add_units(settings: Settings, sku: str, units: int) -> None:
    """`./oms stock adjust`: the operator books a delivery in."""
    keys = Keys(settings.redis_prefix)
    adjust_stock(connect(settings), keys, ["WH-SH"], sku, "WH-SH", units, actor="alice")


async def test_a_restock_retries_the_backorders_it_can_serve_first_held_first(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 2)])
    feed = Feed()
    first, big, late = (
        own_order("B1", {"A": 2}),
        own_order("B2", {"A": 2}),
        own_order("B3", {"A": 1}),
    )
    for order in (first, big, late):  # one input each: held in this order
        await pipeline.process([feed.raw(order)])
    assert await state_of(pipeline, big.order_id) == (OrderState.HELD, Reason.OUT_OF_STOCK)
    assert await state_of(pipeline, late.order_id) == (OrderState.HELD, Reason.OUT_OF_STOCK)
    gate = ChangeGate()
    assert await retries(pipeline, gate) == []  # nothing available: nothing asked

    # One unit comes in: the 2-unit order first in the queue cannot be served, and the 1-unit
    # order behind it must not overtake it.
    add_units(redis_settings, "A", 1)
    assert await retries(pipeline, gate) == []

    # One more: the first backorder is retried, the one behind it waits for its turn.
    add_units(redis_settings, "A", 1)
    due = await retries(pipeline, gate)
    assert [a.order_id for a in due] == [big.order_id]
    assert due[0].actor == "system:backorder-timer"
    result = await pipeline.apply_actions(due)
    kinds = [e.kind for e in events(result)]
    assert kinds[:3] == [EventKind.BACKORDER_RETRIED, EventKind.AUDITED, EventKind.RESERVED]
    assert EventKind.RELEASED in kinds
    assert await state_of(pipeline, big.order_id) == (OrderState.RELEASED, "")
    assert levels(redis_settings, "A") == {"WH-SH": (4, 4)}
    # It left the queue; a timer firing again with the same action changes nothing.
    assert await pipeline.client.zscore(pipeline.keys.backorders, big.order_id) is None
    assert await pipeline.client.hget(pipeline.keys.backorder_skus, big.order_id) is None
    again = await pipeline.apply_actions(due)
    assert again.outputs == result.outputs

    # The next unit serves the 1-unit order, now first in the queue.
    assert await retries(pipeline, gate) == []
    add_units(redis_settings, "A", 1)
    due = await retries(pipeline, gate)
    assert [a.order_id for a in due] == [late.order_id]
    await pipeline.apply_actions(due)
    assert await state_of(pipeline, late.order_id) == (OrderState.RELEASED, "")
    assert levels(redis_settings, "A") == {"WH-SH": (5, 5)}
    assert await pipeline.client.zcard(pipeline.keys.backorders) == 0
    assert reconciles(redis_settings)


async def test_units_a_cancel_releases_clear_a_backorder(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("C", "WH-SH", 1)])
    feed = Feed()
    holder, waiting = own_order("B10", {"C": 1}), own_order("B11", {"C": 1})
    await pipeline.process([feed.raw(holder)])
    await pipeline.process([feed.raw(waiting)])
    assert await state_of(pipeline, waiting.order_id) == (OrderState.HELD, Reason.OUT_OF_STOCK)
    # The first order is cancelled; the WMS stops its parcel and its unit comes back.
    [stop] = commands(await pipeline.apply_actions([action(holder.order_id, "cancel")]))
    await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    gate = ChangeGate()
    due = await retries(pipeline, gate)
    assert [a.order_id for a in due] == [waiting.order_id]
    await pipeline.apply_actions(due)
    assert (await state_of(pipeline, waiting.order_id))[1] == ""
    assert levels(redis_settings, "C")["WH-SH"][1] == 1
    assert reconciles(redis_settings)


async def test_a_retry_that_loses_the_race_is_held_again_and_asked_once_per_stock_change(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("D", "WH-SH", 0)])
    feed = Feed()
    waiting = own_order("B20", {"D": 1})
    await pipeline.process([feed.raw(waiting)])
    add_units(redis_settings, "D", 1)
    gate = ChangeGate()
    due = await retries(pipeline, gate)
    assert [a.order_id for a in due] == [waiting.order_id]
    # A new order takes the unit before the retry lands.
    await pipeline.process([feed.raw(own_order("B21", {"D": 1}))])
    result = await pipeline.apply_actions(due)
    assert [e.kind for e in events(result)] == [
        EventKind.BACKORDER_RETRIED,
        EventKind.AUDITED,
        EventKind.HELD,
    ]
    assert await state_of(pipeline, waiting.order_id) == (OrderState.HELD, Reason.OUT_OF_STOCK)
    # Nothing available: not asked again; the next unit in asks once, not once per tick.
    assert await retries(pipeline, gate) == []
    add_units(redis_settings, "D", 1)
    assert len(await retries(pipeline, gate)) == 1
    assert await retries(pipeline, gate) == []
    assert reconciles(redis_settings)


async def test_priority_gives_a_backorder_a_head_start_and_an_old_record_is_filed(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    from order.shops import ShopRules
    from streams.models import ShopKey

    stock(redis_settings, [("E", "WH-SH", 0)])
    feed = Feed()
    normal = own_order("B30", {"E": 1})
    await pipeline.process([feed.raw(normal)])
    pipeline.decisions.shops = {ShopKey.of("own", "shop1"): ShopRules(priority=2)}
    vip = own_order("B31", {"E": 1})
    await pipeline.process([feed.raw(vip)])
    client, keys = pipeline.client, pipeline.keys
    normal_at = await client.zscore(keys.backorders, normal.order_id)
    vip_at = await client.zscore(keys.backorders, vip.order_id)
    assert normal_at is not None and vip_at is not None
    assert normal_at - vip_at > 2 * HEAD_START_PER_LEVEL_S - 60
    add_units(redis_settings, "E", 1)
    due = await retries(pipeline, ChangeGate())
    assert [a.order_id for a in due] == [vip.order_id]  # held later, served first
    # A record saved before the backorder index existed is filed by the held sweep.
    await client.delete(keys.backorders, keys.backorder_skus)
    assert await pipeline.orders.index_unpaid(page=1) == 2
    assert await client.hget(keys.backorder_skus, normal.order_id) == '{"E":1}'
    assert [a.order_id for a in await retries(pipeline, ChangeGate())] == [vip.order_id]
