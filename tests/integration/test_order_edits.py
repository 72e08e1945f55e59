"""Customer service changes an order's lines before release (issue 16 item 9), on the real
Redis: a gift or a changed line applied by the pipeline like every operator action (CAS,
outbox, trail with the actor, once per action id), the reservation given back and taken again
with stock figures exact, refused once the WMS has the order, kept over a channel update."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from agents.timers import due_merges
from order.reasons import Reason
from order.shops import ShopRules
from state.keys import Keys
from streams.messages import (
    CommandKind,
    EventKind,
    OperatorAction,
    OperatorActionKind,
    OrderState,
)
from streams.models import ShopKey
from tests.integration.test_lifecycle import SHOP, reconciles
from tests.integration.test_pipeline import T0, Feed, commands, events, levels, own_order, stock

pytestmark = pytest.mark.integration
S = OrderState


def edit(order_id: str, kind: OperatorActionKind, n: int = 1, **fields: Any) -> OperatorAction:
    return OperatorAction(
        action_id=f"e{n}-{order_id}",
        order_id=order_id,
        kind=kind,
        actor="alice",
        reason="buyer called",
        at=T0,
        **fields,
    )


async def routed(pipeline: OrderPipeline, ext: str, lines: dict[str, int]) -> str:
    """An order reserved and waiting in its shop's merge window (routed, not released)."""
    pipeline.decisions.shops[ShopKey.parse(SHOP)] = ShopRules(merge_window_s=30)
    order = own_order(ext, lines)
    await pipeline.process([Feed().raw(order)])
    record = await pipeline.orders.load(order.order_id)
    assert record is not None and record.state is S.ROUTED
    return order.order_id


async def release_window(pipeline: OrderPipeline, settings: Any) -> list[Any]:
    keys = Keys(settings.redis_prefix)
    actions = await due_merges(pipeline.client, keys, now=time.time() + 3600)
    return commands(await pipeline.apply_actions(actions))


async def test_a_gift_on_a_routed_order_is_reserved_and_ships_in_its_outbound(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 5)])
    oid = await routed(pipeline, "ED1", {"A": 2})
    assert levels(redis_settings, "A") == {"WH-SH": (5, 2)}

    result = await pipeline.apply_actions([edit(oid, OperatorActionKind.ADD_GIFT, sku="B")])
    kinds = [e.kind for e in events(result)]
    assert kinds[:3] == [EventKind.LINES_CHANGED, EventKind.AUDITED, EventKind.RESERVED]
    changed = events(result)[0]
    assert changed.actor == "alice" and changed.reason == "gift CS-GIFT-1 B x1"
    assert levels(redis_settings, "A") == {"WH-SH": (5, 2)}
    assert levels(redis_settings, "B") == {"WH-SH": (5, 1)}
    record = await pipeline.orders.load(oid)
    assert record is not None and record.state is S.ROUTED  # waits in the window again

    (outbound,) = [c for c in await release_window(pipeline, redis_settings)]
    assert outbound.kind is CommandKind.OUTBOUND and outbound.order_id == oid
    assert {(ln.sku, ln.quantity, ln.is_gift) for ln in outbound.lines} == {
        ("A", 2, False),
        ("B", 1, True),
    }
    assert reconciles(redis_settings)


async def test_a_changed_line_gives_back_the_old_units_and_reserves_the_new(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("C", "WH-SH", 5)])
    oid = await routed(pipeline, "ED2", {"A": 2})
    await pipeline.apply_actions(
        [edit(oid, OperatorActionKind.CHANGE_LINE, line_id="L1", sku="C", quantity=3)]
    )
    assert levels(redis_settings, "A") == {"WH-SH": (5, 0)}
    assert levels(redis_settings, "C") == {"WH-SH": (5, 3)}
    record = await pipeline.orders.load(oid)
    assert record is not None
    line = record.order.lines[0]
    assert (line.sku, line.quantity) == ("C", 3)
    assert {(a.sku, a.quantity) for a in record.allocations} == {("C", 3)}
    assert reconciles(redis_settings)


async def test_a_change_to_a_sku_without_stock_holds_and_gives_back(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("C", "WH-SH", 1)])
    oid = await routed(pipeline, "ED3", {"A": 2})
    await pipeline.apply_actions([edit(oid, OperatorActionKind.CHANGE_LINE, line_id="L1", sku="C")])
    record = await pipeline.orders.load(oid)
    assert record is not None and record.state is S.HELD
    assert record.hold_reason == Reason.OUT_OF_STOCK
    assert levels(redis_settings, "A") == {"WH-SH": (5, 0)}
    assert levels(redis_settings, "C") == {"WH-SH": (1, 0)}
    assert reconciles(redis_settings)


async def test_an_edit_after_release_is_refused(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 5)])
    order = own_order("ED4", {"A": 1})
    await pipeline.process([Feed().raw(order)])  # no merge window: released at once
    result = await pipeline.apply_actions(
        [edit(order.order_id, OperatorActionKind.ADD_GIFT, sku="B")]
    )
    assert [e.kind for e in events(result)] == [EventKind.ACTION_REFUSED]
    record = await pipeline.orders.load(order.order_id)
    assert record is not None and record.state is S.RELEASED
    assert [ln.sku for ln in record.order.lines] == ["A"] and not record.line_edits
    assert levels(redis_settings, "B") == {"WH-SH": (5, 0)}


async def test_a_redelivered_edit_applies_once(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 5)])
    oid = await routed(pipeline, "ED5", {"A": 1})
    gift = edit(oid, OperatorActionKind.ADD_GIFT, sku="B", quantity=2)
    first = await pipeline.apply_actions([gift])
    again = await pipeline.apply_actions([gift])
    assert [e.event_id for e in events(again)] == [e.event_id for e in events(first)]
    record = await pipeline.orders.load(oid)
    assert record is not None and len(record.line_edits) == 1
    assert [ln.line_id for ln in record.order.lines] == ["L1", "CS-GIFT-1"]
    assert levels(redis_settings, "B") == {"WH-SH": (5, 2)}
    assert reconciles(redis_settings)


async def test_a_channel_update_after_an_edit_keeps_the_edit(
    pipeline: OrderPipeline, redis_settings: Any
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 5)])
    oid = await routed(pipeline, "ED6", {"A": 1})
    await pipeline.apply_actions([edit(oid, OperatorActionKind.ADD_GIFT, sku="B")])
    update = own_order("ED6", {"A": 1}, minutes=5)  # the channel pushes a newer version
    update = update.model_copy(update={"seller_remark": "gift promised"})
    result = await pipeline.process([Feed().raw(update)])
    assert EventKind.UPDATED in [e.kind for e in events(result)]
    record = await pipeline.orders.load(oid)
    assert record is not None and record.order.seller_remark == "gift promised"
    assert [ln.line_id for ln in record.order.lines] == ["L1", "CS-GIFT-1"]
    assert levels(redis_settings, "B") == {"WH-SH": (5, 1)}
    (outbound,) = await release_window(pipeline, redis_settings)
    assert {ln.sku for ln in outbound.lines} == {"A", "B"}
    assert reconciles(redis_settings)
