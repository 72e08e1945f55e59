"""Every flow of an order's life through the pipeline against the real test Redis (no broker):
merge windows, splits, carriers, the WMS loop (accept, pick, ship, deliver, short pick,
exception, cancel, intercept), after-sales (cancel, address change, return, refund,
exchange) and the close timer. Each test asserts states, stock figures and the commands
emitted, and that the stock still reconciles."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from agents.pipeline import OrderPipeline
from agents.timers import MERGE_RESEND_AFTER_S, due_closes, due_merges
from core.settings import Settings
from order.decisions import ShopRules
from order.plan import BatchResult
from order.route import RoutingTable
from state.keys import Keys
from state.redis import connect
from state.stock import stock_levels
from state.verify import verify
from streams.channels.base import AdapterContext
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    ChannelUpdate,
    CommandKind,
    CommandLine,
    EventKind,
    FulfilmentCommand,
    OrderState,
    WmsEventKind,
)
from streams.models import Address
from tests.integration.test_pipeline import Feed, commands, events, own_order, stock, wms_answer

pytestmark = pytest.mark.integration

S = OrderState
SHOP = "own/shop1"


def updates(result: BatchResult) -> list[ChannelUpdate]:
    return [
        ChannelUpdate.model_validate_json(v)
        for t, _, v in result.outputs
        if t.endswith("channel.updates")
    ]


def figures(settings: Settings, sku: str) -> dict[str, dict[str, int]]:
    return {
        lv.warehouse: {
            "on_hand": lv.on_hand,
            "reserved": lv.reserved,
            "in_transit": lv.sales_in_transit,
        }
        for lv in stock_levels(connect(settings), Keys(settings.redis_prefix), sku)
    }


def reconciles(settings: Settings) -> bool:
    return verify(connect(settings), Keys(settings.redis_prefix)).ok


async def state_of(pipeline: OrderPipeline, order_id: str) -> OrderState:
    record = await pipeline.orders.load(order_id)
    assert record is not None
    return record.state


async def released(
    pipeline: OrderPipeline, ext: str, lines: dict[str, int], **kw: Any
) -> tuple[str, list[FulfilmentCommand]]:
    order = own_order(ext, lines, **kw)
    result = await pipeline.process([Feed().raw(order)])
    return order.order_id, commands(result)


async def ship(pipeline: OrderPipeline, command: FulfilmentCommand, tracking: str) -> BatchResult:
    for kind in (WmsEventKind.ACCEPTED, WmsEventKind.PICKED):
        await pipeline.apply_wms_events([wms_answer(command, kind)])
    return await pipeline.apply_wms_events(
        [wms_answer(command, WmsEventKind.SHIPPED, carrier="SF", tracking_number=tracking)]
    )


def request(order_id: str, kind: AfterSalesKind, n: int = 1, **fields: Any) -> AfterSalesRequest:
    return AfterSalesRequest(
        request_id=f"R-{order_id}-{kind.value}-{n}",
        order_id=order_id,
        kind=kind,
        requested_by="cs:bob",
        at=datetime.now(UTC),
        **fields,
    )


async def test_wms_loop_ships_delivers_and_closes(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    oid, [outbound] = await released(pipeline, "W1", {"A": 2})
    assert outbound.carrier  # chosen by the carrier rules
    assert await state_of(pipeline, oid) is S.RELEASED
    shipped = await ship(pipeline, outbound, "SF1234567890")
    assert await state_of(pipeline, oid) is S.SHIPPED
    [update] = updates(shipped)
    assert update.status == "shipped" and update.tracking_number == "SF1234567890"
    assert update.extra["api"]  # the channel API the connector calls
    assert figures(redis_settings, "A")["WH-SH"] == {"on_hand": 8, "reserved": 0, "in_transit": 2}
    # A replayed shipment commits nothing twice.
    replay = await pipeline.apply_wms_events(
        [wms_answer(outbound, WmsEventKind.SHIPPED, carrier="SF", tracking_number="SF1234567890")]
    )
    assert replay.counts["wms_shipped"] == 1 and replay.outputs == shipped.outputs
    assert figures(redis_settings, "A")["WH-SH"]["on_hand"] == 8
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.DELIVERED)])
    assert await state_of(pipeline, oid) is S.DELIVERED
    assert figures(redis_settings, "A")["WH-SH"]["in_transit"] == 0
    keys = Keys(redis_settings.redis_prefix)
    closes = await due_closes(pipeline.client, keys, now=time.time() + 8 * 86400)
    assert [a.order_id for a in closes] == [oid]
    await pipeline.apply_actions(closes)
    assert await state_of(pipeline, oid) is S.CLOSED
    assert await due_closes(pipeline.client, keys, now=time.time() + 8 * 86400) == []
    assert reconciles(redis_settings)


async def test_an_illegal_transition_is_refused_and_counted(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    oid, [outbound] = await released(pipeline, "W2", {"A": 1})
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.DELIVERED)])
    assert await state_of(pipeline, oid) is S.RELEASED  # delivered before shipped: ignored
    await ship(pipeline, outbound, "SF1")
    late = await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.EXCEPTION)])
    assert [e.kind for e in events(late)] == [EventKind.TRANSITION_REFUSED]
    assert late.counts["refused"] == 1  # the worker's counters show it
    assert await state_of(pipeline, oid) is S.SHIPPED
    record = await pipeline.orders.load(oid)
    assert record is not None and record.commands[0].status.value == "shipped"  # not failed


async def test_merge_window_ships_one_parcel_for_one_buyer(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10), ("B", "WH-SH", 10)])
    pipeline.decisions.shops[SHOP] = ShopRules(merge_window_s=30)
    first, none1 = await released(pipeline, "M1", {"A": 1})
    second, none2 = await released(pipeline, "M2", {"B": 2})
    base = own_order("M3", {"A": 1})
    other_street = base.address.model_copy(update={"street": "湖滨路 9 号"})
    elsewhere = base.model_copy(update={"address": other_street})
    await pipeline.process([Feed().raw(elsewhere)])
    assert none1 == none2 == []  # waiting in the merge window
    assert await state_of(pipeline, first) is S.ROUTED
    keys = Keys(redis_settings.redis_prefix)
    assert await due_merges(pipeline.client, keys) == []  # window still open
    actions = await due_merges(pipeline.client, keys, now=time.time() + 31)
    assert sorted(len(a.members) for a in actions) == [1, 2]
    # Claimed: not sent again while the release is on its way; sent again had it been lost.
    assert await due_merges(pipeline.client, keys, now=time.time() + 31) == []
    later = time.time() + 32 + MERGE_RESEND_AFTER_S
    again = await due_merges(pipeline.client, keys, now=later)
    assert sorted(a.action_id for a in again) == sorted(a.action_id for a in actions)
    result = await pipeline.apply_actions(actions)
    outbound = [c for c in commands(result) if c.kind is CommandKind.OUTBOUND]
    merged = next(c for c in outbound if len(c.merged_order_ids) == 2)
    assert sorted(merged.merged_order_ids) == sorted([first, second])
    assert {(ln.order_id, ln.sku, ln.quantity) for ln in merged.lines} == {
        (first, "A", 1),
        (second, "B", 2),
    }
    assert len(outbound) == 2  # the other address ships alone
    assert result.counts["merged_shipments"] == 1
    assert {await state_of(pipeline, o) for o in (first, second)} == {S.RELEASED}
    assert await due_merges(pipeline.client, keys, now=time.time() + 31) == []
    # One shipment event ships both orders and commits both reservations.
    await ship(pipeline, merged, "SF-MERGED-1")
    assert {await state_of(pipeline, o) for o in (first, second)} == {S.SHIPPED}
    assert figures(redis_settings, "B")["WH-SH"] == {"on_hand": 8, "reserved": 0, "in_transit": 2}
    assert reconciles(redis_settings)


async def test_cancel_of_a_merged_member_releases_the_other_alone(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    pipeline.decisions.shops[SHOP] = ShopRules(merge_window_s=30)
    first, _ = await released(pipeline, "MC1", {"A": 1})
    second, _ = await released(pipeline, "MC2", {"A": 2})
    keys = Keys(redis_settings.redis_prefix)
    result = await pipeline.apply_actions(
        await due_merges(pipeline.client, keys, now=time.time() + 31)
    )
    [merged] = commands(result)
    cancel = await pipeline.apply_aftersales([request(second, AfterSalesKind.CANCEL)])
    [stop] = commands(cancel)
    assert stop.refers_to == merged.command_id and stop.kind is CommandKind.CANCEL
    answer = await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert await state_of(pipeline, second) is S.CANCELLED
    [again] = commands(answer)  # the first order goes out on its own, next attempt
    assert again.order_id == first and again.attempt == 2 and not again.merged_order_ids
    assert await state_of(pipeline, first) is S.RELEASED
    assert figures(redis_settings, "A")["WH-SH"]["reserved"] == 1
    assert reconciles(redis_settings)


async def test_skus_stocked_in_different_warehouses_split_and_ship_separately(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-BJ", 5)])
    oid, outbound = await released(pipeline, "S1", {"A": 1, "B": 1})
    assert sorted(c.warehouse for c in outbound) == ["WH-BJ", "WH-SH"]
    by_wh = {c.warehouse: c for c in outbound}
    await ship(pipeline, by_wh["WH-SH"], "SF-1")
    assert await state_of(pipeline, oid) is S.PARTIALLY_SHIPPED
    await ship(pipeline, by_wh["WH-BJ"], "SF-2")
    assert await state_of(pipeline, oid) is S.SHIPPED
    assert figures(redis_settings, "B")["WH-BJ"] == {"on_hand": 4, "reserved": 0, "in_transit": 1}
    assert reconciles(redis_settings)


async def test_short_pick_writes_off_and_reroutes(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 3), ("A", "WH-BJ", 5)])
    oid, [first] = await released(pipeline, "SP1", {"A": 2})
    assert first.warehouse == "WH-SH"
    short = wms_answer(
        first,
        WmsEventKind.SHORT_PICK,
        lines=[CommandLine(line_id="L1", sku="A", quantity=1)],
        detail="1 unit not on the shelf",
    )
    result = await pipeline.apply_wms_events([short])
    [second] = commands(result)
    assert second.warehouse == "WH-BJ" and second.attempt == 2
    assert second.command_id != first.command_id
    assert figures(redis_settings, "A") == {
        "WH-SH": {"on_hand": 2, "reserved": 0, "in_transit": 0},  # 1 written off, 2 back
        "WH-BJ": {"on_hand": 5, "reserved": 2, "in_transit": 0},
    }
    assert await state_of(pipeline, oid) is S.RELEASED
    assert reconciles(redis_settings)


async def test_wms_exception_waits_for_a_person_then_resends(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    from tests.integration.test_pipeline import action

    stock(redis_settings, [("A", "WH-SH", 3)])
    oid, [first] = await released(pipeline, "EX1", {"A": 1})
    await pipeline.apply_wms_events(
        [wms_answer(first, WmsEventKind.EXCEPTION, detail="package damaged during packing")]
    )
    assert await state_of(pipeline, oid) is S.EXCEPTION
    held = await pipeline.orders.held_ids()
    assert oid in held  # an operator sees it in ./oms held list
    result = await pipeline.apply_actions([action(oid, "release_hold")])
    [again] = commands(result)
    assert again.attempt == 2 and again.warehouse == "WH-SH"
    assert await state_of(pipeline, oid) is S.RELEASED
    assert oid not in await pipeline.orders.held_ids()
    assert figures(redis_settings, "A")["WH-SH"]["reserved"] == 1


async def test_cancel_before_release_gives_stock_back(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 3)])
    pipeline.decisions.shops[SHOP] = ShopRules(merge_window_s=30)  # reserved, waiting to merge
    oid, none = await released(pipeline, "C1", {"A": 2})
    assert none == [] and figures(redis_settings, "A")["WH-SH"]["reserved"] == 2
    result = await pipeline.apply_aftersales([request(oid, AfterSalesKind.CANCEL)])
    assert commands(result) == []  # the WMS never had it
    assert await state_of(pipeline, oid) is S.CANCELLED
    assert figures(redis_settings, "A")["WH-SH"]["reserved"] == 0
    keys = Keys(redis_settings.redis_prefix)
    assert await due_merges(pipeline.client, keys, now=time.time() + 31) == []


async def test_cancel_after_pick_intercepts_and_a_late_parcel_becomes_a_return(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    # Intercepted in time: stock back.
    oid, [out] = await released(pipeline, "I1", {"A": 1})
    await pipeline.apply_wms_events([wms_answer(out, WmsEventKind.PICKED)])
    [stop] = commands(await pipeline.apply_aftersales([request(oid, AfterSalesKind.CANCEL)]))
    assert stop.kind is CommandKind.INTERCEPT and await state_of(pipeline, oid) is S.INTERCEPTING
    await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert await state_of(pipeline, oid) is S.CANCELLED
    # Too late: the parcel shipped, so it comes back as a return and is refunded.
    late, [out2] = await released(pipeline, "I2", {"A": 2})
    [stop2] = commands(await pipeline.apply_aftersales([request(late, AfterSalesKind.CANCEL)]))
    await pipeline.apply_wms_events(
        [wms_answer(out2, WmsEventKind.SHIPPED, carrier="SF", tracking_number="SF9")]
    )
    failed = await pipeline.apply_wms_events(
        [wms_answer(stop2, WmsEventKind.INTERCEPT_FAILED, detail="with the carrier")]
    )
    [ret] = commands(failed)
    assert ret.kind is CommandKind.RETURN_INBOUND and await state_of(pipeline, late) is S.RETURNING
    assert figures(redis_settings, "A")["WH-SH"] == {"on_hand": 8, "reserved": 0, "in_transit": 2}
    back = await pipeline.apply_wms_events(
        [wms_answer(ret, WmsEventKind.RETURN_RECEIVED, lines=ret.lines, sellable=True)]
    )
    assert await state_of(pipeline, late) is S.REFUNDED
    [refund] = [u for u in updates(back) if u.status == "refunded"]
    assert Decimal(refund.extra["amount"]) == Decimal("20.00")
    assert figures(redis_settings, "A")["WH-SH"] == {"on_hand": 10, "reserved": 0, "in_transit": 0}
    assert reconciles(redis_settings)


async def test_address_change_before_release_only(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("A", "WH-GZ", 5)])
    incomplete = own_order("AD1", {"A": 1})
    incomplete = incomplete.model_copy(
        update={"address": incomplete.address.model_copy(update={"street": ""})}
    )
    await pipeline.process([Feed().raw(incomplete)])
    assert await state_of(pipeline, incomplete.order_id) is S.HELD
    new = Address(
        province="广东省",
        province_code="GD",
        city="广州市",
        district="天河区",
        street="天河路 385 号",
        name="张三",
        phone="13800000000",
    )
    result = await pipeline.apply_aftersales(
        [request(incomplete.order_id, AfterSalesKind.ADDRESS_CHANGE, new_address=new)]
    )
    [out] = commands(result)
    assert out.ship_to.city == "广州市" and out.warehouse == "WH-GZ"  # routed to the new place
    late = await pipeline.apply_aftersales(
        [request(incomplete.order_id, AfterSalesKind.ADDRESS_CHANGE, 2, new_address=new)]
    )
    assert [e.kind for e in events(late)] == [EventKind.ACTION_REFUSED]


async def test_return_refund_and_exchange_after_delivery(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10), ("B", "WH-SH", 10)])
    oid, [out] = await released(pipeline, "R1", {"A": 2, "B": 1})
    await ship(pipeline, out, "SF-R1")
    await pipeline.apply_wms_events([wms_answer(out, WmsEventKind.DELIVERED)])
    # Refund only, for line B (10.00); more than what is left is refused.
    refunded = await pipeline.apply_aftersales(
        [request(oid, AfterSalesKind.REFUND, line_ids=["L2"])]
    )
    assert await state_of(pipeline, oid) is S.REFUNDED
    assert Decimal(updates(refunded)[0].extra["amount"]) == Decimal("10.00")
    too_much = await pipeline.apply_aftersales(
        [request(oid, AfterSalesKind.REFUND, 2, amount=Decimal("100"))]
    )
    assert [e.kind for e in events(too_much)] == [EventKind.ACTION_REFUSED]
    # Return of line A (2 units): expected at WH-SH, restocks when sellable.
    returning = await pipeline.apply_aftersales(
        [request(oid, AfterSalesKind.RETURN, line_ids=["L1"])]
    )
    [ret] = commands(returning)
    assert ret.kind is CommandKind.RETURN_INBOUND and [
        (ln.sku, ln.quantity) for ln in ret.lines
    ] == [("A", 2)]
    await pipeline.apply_wms_events(
        [wms_answer(ret, WmsEventKind.RETURN_RECEIVED, lines=ret.lines, sellable=False)]
    )
    record = await pipeline.orders.load(oid)
    assert record is not None and record.state is S.REFUNDED
    assert record.refunded == Decimal("30.00")  # 10 refund only + 20 for the return
    assert figures(redis_settings, "A")["WH-SH"]["on_hand"] == 8  # not sellable: no restock
    # Refunded orders close too, when the new after-sales window ends.
    keys = Keys(redis_settings.redis_prefix)
    closes = await due_closes(pipeline.client, keys, now=time.time() + 8 * 86400)
    assert [a.order_id for a in closes] == [oid]
    await pipeline.apply_actions(closes)
    assert await state_of(pipeline, oid) is S.CLOSED
    # Exchange on another order: B comes back, A goes out as the replacement.
    ex, [out2] = await released(pipeline, "R2", {"B": 1})
    await ship(pipeline, out2, "SF-R2")
    exchange = await pipeline.apply_aftersales(
        [request(ex, AfterSalesKind.EXCHANGE, exchange_sku="A")]
    )
    by_kind = {c.kind: c for c in commands(exchange)}
    assert set(by_kind) == {CommandKind.RETURN_INBOUND, CommandKind.OUTBOUND}
    replacement = by_kind[CommandKind.OUTBOUND]
    assert replacement.shipment and [(ln.sku, ln.quantity) for ln in replacement.lines] == [
        ("A", 1)
    ]
    assert await state_of(pipeline, ex) is S.EXCHANGING
    await ship(pipeline, replacement, "SF-X")
    assert await state_of(pipeline, ex) is S.SHIPPED
    await pipeline.apply_wms_events(
        [
            wms_answer(
                by_kind[CommandKind.RETURN_INBOUND], WmsEventKind.RETURN_RECEIVED, sellable=True
            )
        ]
    )
    record = await pipeline.orders.load(ex)
    assert record is not None and record.refunded == 0  # an exchange is not refunded
    assert figures(redis_settings, "A")["WH-SH"] == {"on_hand": 7, "reserved": 0, "in_transit": 1}
    # B came back before it was signed for: out of transit and on the shelf again.
    assert figures(redis_settings, "B")["WH-SH"] == {"on_hand": 9, "reserved": 0, "in_transit": 0}
    assert reconciles(redis_settings)


async def test_an_exchange_of_several_lines_is_one_replacement_parcel(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 5)])
    oid, [out] = await released(pipeline, "R4", {"A": 1, "B": 2})
    await ship(pipeline, out, "SF-R4")
    exchange = await pipeline.apply_aftersales([request(oid, AfterSalesKind.EXCHANGE)])
    [replacement] = [c for c in commands(exchange) if c.kind is CommandKind.OUTBOUND]
    assert sorted((ln.sku, ln.quantity) for ln in replacement.lines) == [("A", 1), ("B", 2)]
    await ship(pipeline, replacement, "SF-R4X")
    assert await state_of(pipeline, oid) is S.SHIPPED
    assert reconciles(redis_settings)


async def test_exchange_without_replacement_stock_is_refused(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 1), ("B", "WH-SH", 0)])
    oid, [out] = await released(pipeline, "R3", {"A": 1})
    await ship(pipeline, out, "SF-R3")
    result = await pipeline.apply_aftersales(
        [request(oid, AfterSalesKind.EXCHANGE, exchange_sku="B")]
    )
    assert commands(result) == [] and [e.kind for e in events(result)] == [EventKind.ACTION_REFUSED]
    assert await state_of(pipeline, oid) is S.SHIPPED


async def test_gifts_reserve_stock_but_never_block_the_order(
    redis_settings: Settings, base_settings: Settings
) -> None:
    client = aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True)
    routing = RoutingTable.load(base_settings.config_dir / "warehouses.toml")
    pipeline = OrderPipeline(redis_settings, client, routing, AdapterContext())
    try:
        # config/promotions.toml: every SKU-PHONE-X1 comes with a SKU-CASE-C3.
        stock(redis_settings, [("SKU-PHONE-X1", "WH-SH", 5), ("SKU-CASE-C3", "WH-SH", 1)])
        _, [out] = await released(pipeline, "G1", {"SKU-PHONE-X1": 1})
        gifts = [ln for ln in out.lines if ln.is_gift]
        assert [(g.sku, g.quantity) for g in gifts] == [("SKU-CASE-C3", 1)]
        assert figures(redis_settings, "SKU-CASE-C3")["WH-SH"]["reserved"] == 1
        # The cases are gone: the next phone still ships, without its gift.
        result = await pipeline.process([Feed().raw(own_order("G2", {"SKU-PHONE-X1": 1}))])
        kinds = [e.kind for e in events(result)]
        assert EventKind.GIFT_SKIPPED in kinds and kinds[-1] is EventKind.RELEASED
        [plain] = commands(result)
        assert [(ln.sku, ln.is_gift) for ln in plain.lines] == [("SKU-PHONE-X1", False)]
        assert figures(redis_settings, "SKU-PHONE-X1")["WH-SH"]["reserved"] == 2
        assert reconciles(redis_settings)
    finally:
        await client.aclose()
