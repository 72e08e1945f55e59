"""Bundles (组合商品/套装) on the real Redis (docs/decisions/0026-bundles.md): a bundle's
components are reserved all or nothing, from one warehouse even for a shop that splits, and
ship in one outbound command; a return naming the bundle line brings every component back, a
refund of one component pays its share of what the bundle cost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.allocation import ShortagePolicy
from order.reasons import Reason
from order.shops import ShopRules
from streams.channels.base import LineDraft, expand_bundle
from streams.messages import AfterSalesKind, CommandKind, OrderState, WmsEventKind
from streams.models import Order, ShopKey
from streams.sku_map import Component
from tests.integration.test_lifecycle import reconciles, request, ship
from tests.integration.test_pipeline import Feed, commands, levels, own_order, stock, wms_answer
from tests.integration.test_presale import state_of

pytestmark = pytest.mark.integration

CASE, CHARGER = "KC-CASE", "KC-CHARGER"  # skus of their own: no other test's stock
# WH-SH, first for the test address, has the plain line and the cases but one charger only.
SH_SHORT_OF_CHARGERS = [("KC-PLAIN", "WH-SH", 5), (CASE, "WH-SH", 5), (CHARGER, "WH-SH", 1)]
KIT = (Component(CASE, 1, Decimal("0.25")), Component(CHARGER, 2, Decimal("0.75")))


def with_kit(ext: str, kits: int, paid: Decimal = Decimal("100.00")) -> Order:
    """An own-shop order of one plain line (L1: one unit of KC-PLAIN) and ``kits`` kits on L2,
    as the adapters build it (streams/channels/base.py expand_bundle): L2/1 the case, L2/2 the
    chargers, 25% and 75% of what L2 cost."""
    plain = own_order(ext, {"KC-PLAIN": 1})
    parts = expand_bundle(LineDraft("L2", "KIT-KC", kits, paid / kits, paid, title="kit"), KIT)
    lines = [*plain.lines, *parts]
    total = sum((ln.paid_amount for ln in lines), Decimal(0))
    return plain.model_copy(
        update={
            "lines": lines,
            "total": total,
            "payment": plain.payment.model_copy(update={"paid_total": total}),
        }
    )


def splitting(pipeline: OrderPipeline) -> None:
    """The test shop ships from several warehouses when one cannot serve everything."""
    pipeline.decisions.shops = {
        ShopKey.of("own", "shop1"): ShopRules(shortage_policy=ShortagePolicy.SPLIT)
    }


async def test_one_component_short_reserves_nothing_and_holds_the_order(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    splitting(pipeline)
    # Enough of everything in total, but the chargers are in WH-GZ and the case in WH-SH:
    # a split would serve it; a bundle does not split, so it waits for stock in one place.
    stock(redis_settings, [*SH_SHORT_OF_CHARGERS, (CHARGER, "WH-GZ", 9)])
    order = with_kit("KB1", 2)
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in order.lines] == [
        ("L1", "KC-PLAIN", 1),
        ("L2/1", CASE, 2),
        ("L2/2", CHARGER, 4),
    ]
    await pipeline.process([Feed().raw(order)])
    assert await state_of(pipeline, order.order_id) == (OrderState.HELD, Reason.OUT_OF_STOCK)
    assert levels(redis_settings, CASE) == {"WH-SH": (5, 0)}
    assert levels(redis_settings, CHARGER) == {"WH-SH": (1, 0), "WH-GZ": (9, 0)}
    assert levels(redis_settings, "KC-PLAIN") == {"WH-SH": (5, 0)}
    assert reconciles(redis_settings)


async def test_a_bundle_ships_from_one_warehouse_and_returns_whole(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    splitting(pipeline)
    stock(
        redis_settings,
        [
            *SH_SHORT_OF_CHARGERS,
            (CASE, "WH-GZ", 5),
            (CHARGER, "WH-GZ", 9),
            ("KC-PLAIN", "WH-GZ", 5),
        ],
    )
    order = with_kit("KB2", 2)
    result = await pipeline.process([Feed().raw(order)])
    [outbound] = commands(result)  # one parcel: everything from the one warehouse that can
    assert outbound.warehouse == "WH-GZ"
    assert sorted((ln.line_id, ln.sku, ln.quantity) for ln in outbound.lines) == [
        ("L1", "KC-PLAIN", 1),
        ("L2/1", CASE, 2),
        ("L2/2", CHARGER, 4),
    ]
    record = await pipeline.orders.load(order.order_id)
    assert record is not None
    assert {a.warehouse for a in record.allocations} == {"WH-GZ"}
    assert levels(redis_settings, CHARGER) == {"WH-SH": (1, 0), "WH-GZ": (9, 4)}

    await ship(pipeline, outbound, "SF-KB2")
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.DELIVERED)])
    # The buyer returns the kit: naming its line brings back every component.
    returning = await pipeline.apply_aftersales(
        [request(order.order_id, AfterSalesKind.RETURN, line_ids=["L2"])]
    )
    [back] = commands(returning)
    assert back.kind is CommandKind.RETURN_INBOUND and back.warehouse == "WH-GZ"
    assert sorted((ln.line_id, ln.sku, ln.quantity) for ln in back.lines) == [
        ("L2/1", CASE, 2),
        ("L2/2", CHARGER, 4),
    ]
    await pipeline.apply_wms_events(
        [wms_answer(back, WmsEventKind.RETURN_RECEIVED, lines=back.lines, sellable=True)]
    )
    record = await pipeline.orders.load(order.order_id)
    assert record is not None and record.state in (OrderState.RETURNED, OrderState.REFUNDED)
    assert record.refunded == Decimal("100.00")  # what the kit cost, not the plain line
    assert levels(redis_settings, CHARGER)["WH-GZ"] == (9, 0)  # restocked: 5 left + 4 back
    assert reconciles(redis_settings)


async def test_a_refund_of_one_component_pays_its_share(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("KC-PLAIN", "WH-SH", 5), (CASE, "WH-SH", 5), (CHARGER, "WH-SH", 9)])
    order = with_kit("KB3", 1, paid=Decimal("99.99"))
    assert [ln.paid_amount for ln in order.lines[1:]] == [Decimal("24.99"), Decimal("75.00")]
    [outbound] = commands(await pipeline.process([Feed().raw(order)]))
    await ship(pipeline, outbound, "SF-KB3")
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.DELIVERED)])
    await pipeline.apply_aftersales(
        [request(order.order_id, AfterSalesKind.REFUND, line_ids=["L2/2"])]
    )
    record = await pipeline.orders.load(order.order_id)
    assert record is not None and record.state is OrderState.REFUNDED
    assert record.refunded == Decimal("75.00")  # the chargers' share of 99.99
    assert reconciles(redis_settings)
