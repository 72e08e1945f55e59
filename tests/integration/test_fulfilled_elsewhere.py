"""Orders the merchant does not ship, in the platforms' native shapes, on the real Redis:
Amazon AFN (Fulfilled by Amazon) and Douyin virtual orders are recorded and counted, never
reserved and never sent to the WMS; a cancel at the platform still cancels them."""

from __future__ import annotations

from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from core.settings import Settings
from streams.messages import EventKind, OrderState
from tests.clickhouse_db import report_after
from tests.integration.test_lifecycle import figures, reconciles, state_of
from tests.integration.test_pipeline import commands, events, stock
from tests.integration.test_protected_receivers import NativeFeed
from tests.unit.test_protected_receiver import load

pytestmark = pytest.mark.integration


def afn(status: str = "Shipped", updated: str = "2024-06-17T18:00:00Z") -> dict[str, Any]:
    order = load("amazon")
    order.update({"FulfillmentChannel": "AFN", "OrderStatus": status, "LastUpdateDate": updated})
    return order


async def test_an_afn_order_is_counted_never_reserved_or_sent(
    pipeline: OrderPipeline, redis_settings: Settings, facts_db: Settings
) -> None:
    stock(redis_settings, [("SKU-PHONE-X1", "WH-BJ", 5)])
    feed = NativeFeed()
    result = await pipeline.process([feed.raw("amazon", afn())])
    assert commands(result) == []
    [received] = [e for e in events(result) if e.kind is EventKind.RECEIVED]
    oid = received.order_id
    assert await state_of(pipeline, oid) is OrderState.FULFILLED_ELSEWHERE
    moved = [e for e in events(result) if e.kind is EventKind.FULFILLED_ELSEWHERE]
    assert [e.reason for e in moved] == ["platform"]
    assert figures(redis_settings, "SKU-PHONE-X1")["WH-BJ"]["reserved"] == 0
    report = await report_after(facts_db, events(result))
    assert report.accepted == 1 and report.held == 0
    assert report.orders_by_state == {"fulfilled_elsewhere": 1}
    assert sum(r.orders for r in report.gmv_by_channel_currency) == 1  # a sale all the same
    # Amazon cancels it (e.g. Unfulfillable): the record follows, no stock moves
    cancelled = await pipeline.process(
        [feed.raw("amazon", afn("Unfulfillable", "2024-06-18T09:00:00Z"))]
    )
    assert commands(cancelled) == []
    assert await state_of(pipeline, oid) is OrderState.CANCELLED
    assert reconciles(redis_settings)


async def test_a_pending_afn_order_waits_for_payment_like_any_other(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    feed = NativeFeed()
    pending = afn("Pending", "2024-06-17T16:21:00Z")
    result = await pipeline.process([feed.raw("amazon", pending)])
    oid = events(result)[0].order_id
    record = await pipeline.orders.load(oid)
    assert record is not None
    assert (record.state, record.hold_reason) == (OrderState.HELD, "unpaid")
    await pipeline.process([feed.raw("amazon", afn())])
    assert await state_of(pipeline, oid) is OrderState.FULFILLED_ELSEWHERE


async def test_a_douyin_virtual_order_ships_nothing(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-TEA-LONGJING", "WH-CD", 5), ("SKU-MASK-N95-10", "WH-CD", 5)])
    voucher = {**load("douyin"), "order_type": 4, "order_type_desc": "poi核销"}
    result = await pipeline.process([NativeFeed().raw("douyin", voucher)])
    assert commands(result) == []
    oid = events(result)[0].order_id
    assert await state_of(pipeline, oid) is OrderState.FULFILLED_ELSEWHERE
    assert [e.reason for e in events(result) if e.kind is EventKind.FULFILLED_ELSEWHERE] == [
        "virtual"
    ]
    assert figures(redis_settings, "SKU-TEA-LONGJING")["WH-CD"]["reserved"] == 0
