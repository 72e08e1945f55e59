"""After-sales that start on the platform, in the platforms' native shapes, on the raw channel
topic beside the orders, through the pipeline on the real Redis: a refund before shipment
stops the parcel (stock back before release, an intercept after), a refund only after
shipment is paid back and capped at what was paid, a return expects the units back; closed
ones change nothing, an after-sale of an unknown order is dead-lettered for a replay, and an
order with its refund in one batch applies order first (docs/decisions/0023)."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.decisions import ShopRules
from streams.messages import (
    CommandKind,
    DlqReason,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OrderState,
    WmsEventKind,
)
from tests.integration.test_lifecycle import figures, reconciles, ship, state_of, updates
from tests.integration.test_pipeline import commands, events, stock, wms_answer
from tests.integration.test_protected_receivers import NativeFeed
from tests.unit.test_protected_receiver import load

pytestmark = pytest.mark.integration

S = OrderState
AFTERSALES = Path(__file__).resolve().parents[2] / "samples" / "payloads" / "aftersales"

# channel -> (shop key, warehouse the sample order ships from, its stock)
STACK: dict[str, tuple[str, str, list[tuple[str, int]]]] = {
    "taobao": ("taobao/极客数码旗舰店", "WH-SH", [("SKU-PHONE-X1", 5), ("SKU-CASE-C3", 10)]),
    "jd": ("jd/10086123", "WH-GZ", [("SKU-EARBUD-A2", 5), ("SKU-CHARGER-65W", 10)]),
    "douyin": ("douyin/4463798", "WH-CD", [("SKU-TEA-LONGJING", 5), ("SKU-MASK-N95-10", 10)]),
    "shopify": ("shopify/shopify-default", "WH-SH", [("SKU-SNEAKER-42", 5), ("SKU-TSHIRT-L", 10)]),
    "amazon": ("amazon/amazon-cn", "WH-BJ", [("SKU-PHONE-X1", 5), ("SKU-CHARGER-65W", 10)]),
}


def aftersale(channel: str, index: int, **changes: Any) -> dict[str, Any]:
    """Sample ``index`` of samples/payloads/aftersales/CHANNEL.json (its README order: the
    before-shipment refund first), with ``changes`` at its top level."""
    payloads: list[dict[str, Any]] = json.loads(
        (AFTERSALES / f"{channel}.json").read_text(encoding="utf-8")
    )
    return {**copy.deepcopy(payloads[index]), **changes}


def order_payload(channel: str) -> dict[str, Any]:
    """The channel's sample order; Taobao's with one sub-order, as its refunds name one each
    (a refund of one of two sub-orders before shipment is refused for a person)."""
    order = load(channel)
    if channel == "taobao":
        order["orders"]["order"] = order["orders"]["order"][:1]
        order["payment"] = "3779.60"
    return order


def waiting(channel: str) -> dict[str, Any]:
    """The sample order, held back from the WMS while its refund arrives: in a merge window
    (the shop's, set by the test) or, for Douyin, whose sample receiver has no key to merge
    on, behind a ship date (appointment_ship_time) a day ahead."""
    order = order_payload(channel)
    if channel == "douyin":
        order["appointment_ship_time"] = int(time.time()) + 86_400
    return order


def stocked(settings: Settings, channel: str) -> str:
    _, warehouse, rows = STACK[channel]
    stock(settings, [(sku, warehouse, qty) for sku, qty in rows])
    return warehouse


def reserved(settings: Settings, channel: str) -> int:
    _, warehouse, rows = STACK[channel]
    return sum(figures(settings, sku)[warehouse]["reserved"] for sku, _ in rows)


# The before-shipment refund of each channel (Amazon has none: an order it cancels arrives as
# the order's own OrderStatus Canceled, an update the pipeline already applies).
BEFORE_SHIPMENT = {
    "taobao": aftersale("taobao", 0),
    "jd": aftersale("jd", 0),
    "douyin": aftersale("douyin", 0),
    "shopify": aftersale("shopify", 0),
}


@pytest.mark.parametrize("channel", sorted(BEFORE_SHIPMENT))
async def test_a_refund_before_release_cancels_and_gives_the_stock_back(
    pipeline: OrderPipeline, redis_settings: Settings, channel: str
) -> None:
    stocked(redis_settings, channel)
    pipeline.decisions.shops[STACK[channel][0]] = ShopRules(merge_window_s=30)  # waits: routed
    feed = NativeFeed()
    first = await pipeline.process([feed.raw(channel, waiting(channel))])
    oid = events(first)[0].order_id
    assert await state_of(pipeline, oid) is S.ROUTED and reserved(redis_settings, channel) > 0
    result = await pipeline.process([feed.raw(channel, BEFORE_SHIPMENT[channel])])
    assert commands(result) == []  # the WMS never had it
    assert await state_of(pipeline, oid) is S.CANCELLED
    assert reserved(redis_settings, channel) == 0
    assert [e.actor for e in events(result) if e.kind is EventKind.CANCELLED] == ["channel"]
    assert reconciles(redis_settings)


@pytest.mark.parametrize("channel", sorted(BEFORE_SHIPMENT))
async def test_a_refund_after_release_intercepts_and_the_stop_gives_the_stock_back(
    pipeline: OrderPipeline, redis_settings: Settings, channel: str
) -> None:
    stocked(redis_settings, channel)
    feed = NativeFeed()
    [outbound] = commands(await pipeline.process([feed.raw(channel, order_payload(channel))]))
    oid = outbound.order_id
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.PICKED)])
    [stop] = commands(await pipeline.process([feed.raw(channel, BEFORE_SHIPMENT[channel])]))
    assert stop.kind is CommandKind.INTERCEPT and stop.refers_to == outbound.command_id
    assert await state_of(pipeline, oid) is S.INTERCEPTING
    await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert await state_of(pipeline, oid) is S.CANCELLED
    assert reserved(redis_settings, channel) == 0
    assert reconciles(redis_settings)


async def shipped(
    pipeline: OrderPipeline, settings: Settings, feed: NativeFeed, channel: str
) -> FulfilmentCommand:
    stocked(settings, channel)
    [outbound] = commands(await pipeline.process([feed.raw(channel, load(channel))]))
    await ship(pipeline, outbound, f"SF-{channel}")
    assert await state_of(pipeline, outbound.order_id) is S.SHIPPED
    return outbound


# channel -> (the refund-only sample, what it pays back, the same refund above what was paid)
REFUND_ONLY: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "taobao": (aftersale("taobao", 1), "20.00", aftersale("taobao", 1, refund_id="7999",
                                                          refund_fee="99999.00")),
    "douyin": (aftersale("douyin", 1), "39.90", aftersale("douyin", 1, aftersale_id=7999,
                                                          refund_amount=9999900)),
    "shopify": (aftersale("shopify", 1), "30.00", aftersale(
        "shopify", 1, id=7999,
        transactions=[{"kind": "refund", "status": "success", "amount": "99999.00"}],
    )),
    "amazon": (aftersale("amazon", 0), "40.0", aftersale("amazon", 0,
                                                         PostedDate="2024-06-25T03:00:00Z")),
}
REFUND_ONLY["amazon"][2]["ShipmentItemAdjustmentList"][0]["ItemChargeAdjustmentList"][0][
    "ChargeAmount"
]["CurrencyAmount"] = -99999.0


@pytest.mark.parametrize("channel", sorted(REFUND_ONLY))
async def test_a_refund_only_after_shipment_is_paid_back_and_capped_at_what_was_paid(
    pipeline: OrderPipeline, redis_settings: Settings, channel: str
) -> None:
    feed = NativeFeed()
    outbound = await shipped(pipeline, redis_settings, feed, channel)
    before = figures(redis_settings, STACK[channel][2][0][0])
    refund, amount, too_much = REFUND_ONLY[channel]
    result = await pipeline.process([feed.raw(channel, refund)])
    assert commands(result) == []  # nothing comes back
    record = await pipeline.orders.load(outbound.order_id)
    assert record is not None and record.state is S.REFUNDED
    assert record.refunded == Decimal(amount)
    [update] = [u for u in updates(result) if u.status == "refunded"]
    assert Decimal(update.extra["amount"]) == Decimal(amount)
    again = await pipeline.process([feed.raw(channel, refund)])  # the platform pushes it again
    assert [u.update_id for u in updates(again)] == [update.update_id]  # same ids, once
    capped = await pipeline.process([feed.raw(channel, too_much)])
    assert [e.kind for e in events(capped)] == [EventKind.ACTION_REFUSED]
    record = await pipeline.orders.load(outbound.order_id)
    assert record is not None and record.refunded == Decimal(amount)
    assert figures(redis_settings, STACK[channel][2][0][0]) == before  # no stock moved
    assert reconciles(redis_settings)


# channel -> (the return sample, the sku and units it asks back)
RETURNS: dict[str, tuple[dict[str, Any], str, int]] = {
    "taobao": (aftersale("taobao", 2), "SKU-PHONE-X1", 1),
    "jd": (aftersale("jd", 1), "SKU-EARBUD-A2", 1),
    "douyin": (aftersale("douyin", 2), "SKU-TEA-LONGJING", 2),
    "shopify": (aftersale("shopify", 2), "SKU-SNEAKER-42", 1),
    "amazon": (aftersale("amazon", 1), "SKU-PHONE-X1", 1),
}


@pytest.mark.parametrize("channel", sorted(RETURNS))
async def test_a_platform_return_expects_the_units_back_and_restocks_them(
    pipeline: OrderPipeline, redis_settings: Settings, channel: str
) -> None:
    feed = NativeFeed()
    outbound = await shipped(pipeline, redis_settings, feed, channel)
    payload, sku, units = RETURNS[channel]
    warehouse = STACK[channel][1]
    result = await pipeline.process([feed.raw(channel, payload)])
    [ret] = commands(result)
    assert ret.kind is CommandKind.RETURN_INBOUND and ret.warehouse == warehouse
    assert [(ln.sku, ln.quantity) for ln in ret.lines] == [(sku, units)]
    assert await state_of(pipeline, outbound.order_id) is S.RETURNING
    on_hand = figures(redis_settings, sku)[warehouse]["on_hand"]
    await pipeline.apply_wms_events(
        [wms_answer(ret, WmsEventKind.RETURN_RECEIVED, lines=ret.lines, sellable=True)]
    )
    assert await state_of(pipeline, outbound.order_id) is S.REFUNDED
    assert figures(redis_settings, sku)[warehouse]["on_hand"] == on_hand + units
    assert reconciles(redis_settings)


async def test_a_jd_exchange_ships_a_replacement(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    feed = NativeFeed()
    outbound = await shipped(pipeline, redis_settings, feed, "jd")
    result = await pipeline.process([feed.raw("jd", aftersale("jd", 2))])
    by_kind = {c.kind: c for c in commands(result)}
    assert set(by_kind) == {CommandKind.RETURN_INBOUND, CommandKind.OUTBOUND}
    assert [(ln.sku, ln.quantity) for ln in by_kind[CommandKind.OUTBOUND].lines] == [
        ("SKU-CHARGER-65W", 2)
    ]
    assert await state_of(pipeline, outbound.order_id) is S.EXCHANGING
    assert reconciles(redis_settings)


async def test_an_order_and_its_refund_in_one_batch_apply_order_first(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stocked(redis_settings, "douyin")
    pipeline.decisions.shops[STACK["douyin"][0]] = ShopRules(merge_window_s=30)
    feed = NativeFeed()
    result = await pipeline.process(
        [feed.raw("douyin", waiting("douyin")), feed.raw("douyin", aftersale("douyin", 0))]
    )
    kinds = [e.kind for e in events(result)]
    assert kinds.index(EventKind.RECEIVED) < kinds.index(EventKind.CANCELLED)
    assert await state_of(pipeline, events(result)[0].order_id) is S.CANCELLED
    assert reserved(redis_settings, "douyin") == 0
    assert result.counts["dlq"] == 0


async def test_an_after_sale_of_an_unknown_order_is_dead_lettered_then_replayed(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stocked(redis_settings, "shopify")
    feed = NativeFeed()
    early = feed.raw("shopify", aftersale("shopify", 0))
    result = await pipeline.process([early])
    [record] = [
        DlqRecord.model_validate_json(v) for t, _, v in result.outputs if t.endswith("dlq")
    ]
    assert record.reason is DlqReason.UNKNOWN_ORDER and record.offset == early.offset
    assert result.counts["aftersales_unknown_order"] == 1
    again = await pipeline.process([early])  # redelivered: the same DLQ record
    [twin] = [DlqRecord.model_validate_json(v) for t, _, v in again.outputs if t.endswith("dlq")]
    assert (twin.dlq_id, twin.received_at) == (record.dlq_id, record.received_at)
    pipeline.decisions.shops[STACK["shopify"][0]] = ShopRules(merge_window_s=30)
    placed = await pipeline.process([feed.raw("shopify", load("shopify"))])
    oid = events(placed)[0].order_id
    replayed = await pipeline.process([early])  # what ./oms dlq replay sends back
    assert [o for o in replayed.outputs if o[0].endswith("dlq")] == []
    assert await state_of(pipeline, oid) is S.CANCELLED
    assert reserved(redis_settings, "shopify") == 0


async def test_closed_after_sales_change_nothing(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    feed = NativeFeed()
    outbound = await shipped(pipeline, redis_settings, feed, "taobao")
    closed = [feed.raw("taobao", aftersale("taobao", 3))]
    result = await pipeline.process(closed)
    assert result.outputs == [] and result.counts["aftersales_closed_at_channel"] == 1
    assert await state_of(pipeline, outbound.order_id) is S.SHIPPED


async def test_a_taobao_refund_of_one_sub_order_before_shipment_waits_for_a_person(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stocked(redis_settings, "taobao")
    pipeline.decisions.shops[STACK["taobao"][0]] = ShopRules(merge_window_s=30)
    feed = NativeFeed()
    oid = events(await pipeline.process([feed.raw("taobao", load("taobao"))]))[0].order_id
    held = reserved(redis_settings, "taobao")
    result = await pipeline.process([feed.raw("taobao", aftersale("taobao", 0))])
    [refused] = events(result)
    assert refused.kind is EventKind.ACTION_REFUSED and "some lines only" in refused.detail
    assert await state_of(pipeline, oid) is S.ROUTED
    assert reserved(redis_settings, "taobao") == held
