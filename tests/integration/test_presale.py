"""Pre-sales (deposit then balance), channel shipping holds and ship dates, in the platforms'
native shapes, through the pipeline on the real Redis: a paid deposit is never cancelled by
the unpaid timer, stock is reserved at the deposit or at the balance as the shop says, and
nothing goes to the WMS before it may ship."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from agents.timers import due_merges, due_unpaid
from analytics.reports import format_report
from core.settings import Settings
from order.plan import BatchResult
from order.shops import PresaleReserve, ShopRules
from state.keys import Keys
from streams.messages import CommandKind, EventKind, OrderState
from tests.clickhouse_db import report_after
from tests.integration.test_lifecycle import figures, reconciles
from tests.integration.test_pipeline import commands, events, stock
from tests.integration.test_protected_receivers import NativeFeed
from tests.unit.test_protected_receiver import load

pytestmark = pytest.mark.integration

TAOBAO_SHOP = "taobao/极客数码旗舰店"
BEIJING = timedelta(hours=8)


def taobao_presale(
    step: str,
    *,
    tid: str = "4012345678901239001",
    minutes: int = 0,
    status: str = "WAIT_BUYER_PAY",
    paid: str = "100.00",
) -> dict[str, Any]:
    """A Tmall pre-sale trade (type 'step'): deposit, then balance."""
    trade = load("taobao")
    modified = (datetime(2024, 11, 11, 0, 1, 5) + timedelta(minutes=minutes)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    trade.update(
        {
            "tid_str": tid,
            "type": "step",
            "status": status,
            "step_trade_status": step,
            "step_paid_fee": paid,
            "modified": modified,
        }
    )
    if step != "FRONT_PAID_FINAL_PAID":
        trade.pop("pay_time", None)
    return trade


async def state_of(pipeline: OrderPipeline, order_id: str) -> tuple[OrderState, str]:
    record = await pipeline.orders.load(order_id)
    assert record is not None
    return record.state, record.hold_reason


async def paid_deposit(
    pipeline: OrderPipeline, settings: Settings, feed: NativeFeed
) -> BatchResult:
    """Stock for the sample trade, then its deposit paid."""
    stock(settings, [("SKU-PHONE-X1", "WH-SH", 5), ("SKU-CASE-C3", "WH-SH", 10)])
    return await pipeline.process([feed.raw("taobao", taobao_presale("FRONT_PAID_FINAL_NOPAID"))])


def reserved(settings: Settings, sku: str = "SKU-PHONE-X1") -> int:
    return figures(settings, sku)["WH-SH"]["reserved"]


async def test_deposit_reserves_waits_for_the_balance_and_is_never_expired(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    feed = NativeFeed()
    deposit = await paid_deposit(pipeline, redis_settings, feed)
    assert commands(deposit) == []
    [received] = [e for e in events(deposit) if e.kind is EventKind.RECEIVED]
    oid = received.order_id
    assert await state_of(pipeline, oid) == (OrderState.ROUTED, "awaiting_balance")
    assert reserved(redis_settings) == 1  # reserved at the deposit (the default policy)
    waits = [e for e in events(deposit) if e.kind is EventKind.RELEASE_WAITS]
    assert [e.reason for e in waits] == ["awaiting_balance"]
    # an hour later the unpaid timer finds nothing to expire: the deposit is paid
    keys = Keys(redis_settings.redis_prefix)
    assert await due_unpaid(pipeline.client, keys, timeout_s=60, now=time.time() + 3600) == []

    balance = taobao_presale(
        "FRONT_PAID_FINAL_PAID", status="WAIT_SELLER_SEND_GOODS", paid="3897.00", minutes=60
    )
    paid = await pipeline.process([feed.raw("taobao", balance)])
    [outbound] = commands(paid)
    assert outbound.kind is CommandKind.OUTBOUND and outbound.order_id == oid
    assert await state_of(pipeline, oid) == (OrderState.RELEASED, "")
    assert reserved(redis_settings) == 1  # the same reservation, not a second one
    assert reconciles(redis_settings)


async def test_a_shop_that_reserves_at_the_balance_holds_the_deposit_without_stock(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-PHONE-X1", "WH-SH", 5), ("SKU-CASE-C3", "WH-SH", 10)])
    pipeline.decisions.shops[TAOBAO_SHOP] = ShopRules(presale_reserve=PresaleReserve.BALANCE)
    feed = NativeFeed()
    deposit = await pipeline.process(
        [feed.raw("taobao", taobao_presale("FRONT_PAID_FINAL_NOPAID"))]
    )
    oid = events(deposit)[0].order_id
    assert await state_of(pipeline, oid) == (OrderState.HELD, "awaiting_balance")
    assert reserved(redis_settings) == 0
    keys = Keys(redis_settings.redis_prefix)
    assert await due_unpaid(pipeline.client, keys, timeout_s=60, now=time.time() + 3600) == []
    balance = taobao_presale(
        "FRONT_PAID_FINAL_PAID", status="WAIT_SELLER_SEND_GOODS", paid="3897.00", minutes=90
    )
    [outbound] = commands(await pipeline.process([feed.raw("taobao", balance)]))
    assert outbound.order_id == oid
    assert await state_of(pipeline, oid) == (OrderState.RELEASED, "")
    assert reserved(redis_settings) == 1
    assert reconciles(redis_settings)


async def test_an_unpaid_deposit_is_an_unpaid_order(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-PHONE-X1", "WH-SH", 5), ("SKU-CASE-C3", "WH-SH", 10)])
    result = await pipeline.process(
        [NativeFeed().raw("taobao", taobao_presale("FRONT_NOPAID_FINAL_NOPAID", paid="0"))]
    )
    oid = events(result)[0].order_id
    assert await state_of(pipeline, oid) == (OrderState.HELD, "unpaid")
    keys = Keys(redis_settings.redis_prefix)
    [expire] = await due_unpaid(pipeline.client, keys, timeout_s=60, now=time.time() + 3600)
    await pipeline.apply_actions([expire])
    assert (await state_of(pipeline, oid))[0] is OrderState.CANCELLED


async def test_paid_forbid_consign_is_reserved_but_not_shipped_until_lifted(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-PHONE-X1", "WH-SH", 5), ("SKU-CASE-C3", "WH-SH", 10)])
    feed = NativeFeed()
    forbid = {**load("taobao"), "tid_str": "4012345678901239100", "status": "PAID_FORBID_CONSIGN"}
    result = await pipeline.process([feed.raw("taobao", forbid)])
    assert commands(result) == []
    oid = events(result)[0].order_id
    assert await state_of(pipeline, oid) == (OrderState.ROUTED, "channel_ship_hold")
    assert reserved(redis_settings) == 1
    lifted = {**forbid, "status": "WAIT_SELLER_SEND_GOODS", "modified": "2024-11-11 02:00:00"}
    [outbound] = commands(await pipeline.process([feed.raw("taobao", lifted)]))
    assert outbound.order_id == oid
    assert await state_of(pipeline, oid) == (OrderState.RELEASED, "")
    assert reconciles(redis_settings)


async def test_a_douyin_order_with_a_ship_date_is_released_by_the_timer_on_that_date(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("SKU-TEA-LONGJING", "WH-CD", 5), ("SKU-MASK-N95-10", "WH-CD", 5)])
    ship_at = int(time.time()) + 3 * 86400
    payload = {**load("douyin"), "appointment_ship_time": ship_at}
    result = await pipeline.process([NativeFeed().raw("douyin", payload)])
    assert commands(result) == []
    oid = events(result)[0].order_id
    assert await state_of(pipeline, oid) == (OrderState.ROUTED, "ship_date")
    keys = Keys(redis_settings.redis_prefix)
    assert await due_merges(pipeline.client, keys, now=time.time() + 86400) == []  # not yet
    [action] = await due_merges(pipeline.client, keys, now=ship_at + 1)
    pipeline.decisions.clock = lambda: ship_at + 1.0  # the timer fires on the date
    released = await pipeline.apply_actions([action])
    [outbound] = commands(released)
    assert outbound.order_id == oid and outbound.warehouse == "WH-CD"
    assert await state_of(pipeline, oid) == (OrderState.RELEASED, "")
    assert await due_merges(pipeline.client, keys, now=ship_at + 10_000) == []
    assert reconciles(redis_settings)


async def test_a_cancel_at_the_channel_frees_a_waiting_presale(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    feed = NativeFeed()
    deposit = await paid_deposit(pipeline, redis_settings, feed)
    oid = events(deposit)[0].order_id
    assert reserved(redis_settings) == 1
    closed = taobao_presale("FRONT_PAID_FINAL_NOPAID", status="TRADE_CLOSED", minutes=120)
    await pipeline.process([feed.raw("taobao", closed)])
    assert (await state_of(pipeline, oid))[0] is OrderState.CANCELLED
    assert reserved(redis_settings) == 0
    assert reconciles(redis_settings)


async def test_the_report_shows_reserved_orders_waiting_to_ship_by_reason(
    pipeline: OrderPipeline, redis_settings: Settings, facts_db: Settings
) -> None:
    stock(redis_settings, [("SKU-TEA-LONGJING", "WH-CD", 5), ("SKU-MASK-N95-10", "WH-CD", 5)])
    feed = NativeFeed()
    deposit = await paid_deposit(pipeline, redis_settings, feed)
    dated = {**load("douyin"), "appointment_ship_time": int(time.time()) + 86400}
    waiting = await pipeline.process([feed.raw("douyin", dated)])
    report = await report_after(facts_db, events(deposit) + events(waiting))
    assert report.waiting_by_reason == {"awaiting_balance": 1, "ship_date": 1}
    assert report.held == 0
    assert "Reserved, waiting to ship" in format_report(report)
