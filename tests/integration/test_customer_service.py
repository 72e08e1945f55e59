"""Customer service on an order (issue 16 item 9), on the real Redis and ClickHouse: tags
applied by the pipeline like every operator action (CAS, outbox, trail with the actor), shown
in the order view and the held list; orders found in the facts (ClickHouse 18.16 of the test
stack) by buyer, phone, tracking number, sku, time and shop, with their live state and tags."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from analytics.schema import ensure_schema
from analytics.search import order_search
from analytics.sink import FactSink
from core.settings import Settings
from streams.messages import (
    EventKind,
    OperatorAction,
    OperatorActionKind,
    OrderState,
    WmsEvent,
    WmsEventKind,
)
from streams.models import Order, make_order_id
from tests.clickhouse_db import own_database
from tests.integration.test_pipeline import T0, Feed, commands, events, levels, own_order, stock
from web.views import find_matching, find_orders, list_held, order_view

pytestmark = pytest.mark.integration


def tag_action(
    order_id: str, tags: list[str], *, remove: bool = False, n: int = 1
) -> OperatorAction:
    return OperatorAction(
        action_id=f"t{n}-{order_id}",
        order_id=order_id,
        kind=OperatorActionKind.UNTAG if remove else OperatorActionKind.TAG,
        actor="alice",
        reason="called about the parcel",
        at=T0,
        tags=tags,
    )


async def test_tags_are_added_removed_shown_and_applied_once(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5)])
    order = own_order("CS1", {"A": 2})
    await pipeline.process([Feed().raw(order)])
    oid = order.order_id
    before = levels(redis_settings, "A")

    result = await pipeline.apply_actions([tag_action(oid, ["vip", "fragile"])])
    (event,) = events(result)
    assert event.kind is EventKind.TAGS_CHANGED and event.actor == "alice"
    assert event.reason == "+fragile +vip"
    record = await pipeline.orders.load(oid)
    assert record is not None and record.tags == ["fragile", "vip"]
    assert record.state is OrderState.RELEASED  # tags move nothing
    assert levels(redis_settings, "A") == before  # and no stock

    # A redelivery re-emits the same event and changes nothing.
    again = await pipeline.apply_actions([tag_action(oid, ["vip", "fragile"])])
    assert [e.event_id for e in events(again)] == [event.event_id]
    record = await pipeline.orders.load(oid)
    assert record is not None and record.tags == ["fragile", "vip"]
    assert [h.kind for h in record.history].count(EventKind.TAGS_CHANGED) == 1

    await pipeline.apply_actions([tag_action(oid, ["vip"], remove=True, n=2)])
    (found,) = await find_orders(redis_settings, oid, client=pipeline.client)
    view = order_view(found)
    assert view["tags"] == ["fragile"]
    assert view["history"][-1]["kind"] == "tags_changed"
    assert view["history"][-1]["actor"] == "alice"


async def test_a_held_order_shows_its_tags_in_the_held_list(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    order = own_order("CS2", {"A": 1}, paid=False)  # held unpaid
    await pipeline.process([Feed().raw(order)])
    await pipeline.apply_actions([tag_action(order.order_id, ["complaint"])])
    rows = await list_held(redis_settings, 0, client=pipeline.client)
    (row,) = [r for r in rows if r["order_id"] == order.order_id]
    assert row["tags"] == ["complaint"] and row["reason"] == "unpaid"


async def test_too_many_tags_are_refused(pipeline: OrderPipeline, redis_settings: Settings) -> None:
    order = own_order("CS3", {"A": 1}, paid=False)
    await pipeline.process([Feed().raw(order)])
    many = [f"t{n}" for n in range(16)]
    await pipeline.apply_actions([tag_action(order.order_id, many)])
    result = await pipeline.apply_actions([tag_action(order.order_id, ["one-more"], n=2)])
    assert [e.kind for e in events(result)] == [EventKind.ACTION_REFUSED]
    record = await pipeline.orders.load(order.order_id)
    assert record is not None and record.tags == sorted(many)


# --- finding orders in the facts -----------------------------------------------------------


@pytest.fixture(scope="module")
def facts_db(clickhouse_settings: Settings) -> Iterator[Settings]:
    """A ClickHouse database of this module's own, migrated (0008's phone keys included)."""
    for mine in own_database(clickhouse_settings, f"oms_test_cs_{uuid.uuid4().hex[:6]}"):
        ensure_schema(mine)
        yield mine


def with_phone(order: Order, phone: str, buyer: str, shop: str = "shop1") -> Order:
    address = order.address.model_copy(update={"phone": phone})
    buyer_of = order.buyer.model_copy(update={"id": buyer, "phone": ""})
    order_id = make_order_id("own", shop, order.external_id)  # the id the adapter derives
    return order.model_copy(
        update={"address": address, "buyer": buyer_of, "shop_id": shop, "order_id": order_id}
    )


async def test_orders_are_found_by_each_filter_scoped_with_state_and_tags(
    pipeline: OrderPipeline, redis_settings: Settings, facts_db: Settings
) -> None:
    """Orders through the real pipeline, their events and the WMS's shipped answer through the
    real sink into ClickHouse 18.16; then found as `./oms orders find` and the API find them."""
    settings = redis_settings.model_copy(
        update={"clickhouse_database": facts_db.clickhouse_database}
    )
    stock(redis_settings, [("A", "WH-SH", 10), ("B", "WH-SH", 10)])
    run = uuid.uuid4().hex[:6]  # buyers of this test only (the module shares its database)
    plain = with_phone(own_order(f"F1{run}", {"A": 1}), "+86 138-0013-8000", f"b1{run}")
    masked = with_phone(own_order(f"F2{run}", {"B": 1}), "138****8000", f"b1{run}")
    encrypted = with_phone(
        own_order(f"F3{run}", {"A": 1}), "#MTM4MDAxMzgwMDA=abcdefghij#1##", f"b1{run}"
    )
    other_shop = with_phone(own_order(f"F4{run}", {"A": 1}), "13800138000", f"b1{run}", "shop2")
    feed = Feed()
    result = await pipeline.process([feed.raw(o) for o in (plain, masked, encrypted, other_shop)])
    await pipeline.apply_actions([tag_action(masked.order_id, ["vip"])])
    outbound = next(c for c in commands(result) if c.order_id == masked.order_id)
    tracking = f"SF{run}0001"
    shipped = WmsEvent(
        event_id=f"W-{run}",
        command_id=outbound.command_id,
        order_id=masked.order_id,
        kind=WmsEventKind.SHIPPED,
        warehouse=outbound.warehouse,
        carrier="SF",
        tracking_number=tracking,
        at=datetime.now(UTC),
    )
    sink = FactSink(settings)
    await sink.write([*events(result), shipped])
    await sink.write([*events(result), shipped])  # a redelivery: still one row per order
    await sink.close()

    async def found(shops: frozenset[str] | None = None, **given: Any) -> list[str]:
        rows = await find_matching(
            settings,
            order_search(**given),
            shops=shops,
            client=pipeline.client,
        )
        return [r["order_id"] for r in rows]

    everyone = {plain.order_id, masked.order_id, encrypted.order_id, other_shop.order_id}
    assert set(await found(buyer=f"b1{run}")) == everyone
    # a plain number finds itself plain and masked with its digits, never an encrypted one
    by_phone = set(await found(phone="13800138000", buyer=f"b1{run}"))
    assert by_phone == {plain.order_id, masked.order_id, other_shop.order_id}
    assert set(await found(phone="138****8000", buyer=f"b1{run}")) == by_phone
    assert await found(tracking=tracking) == [masked.order_id]
    assert set(await found(sku="B", buyer=f"b1{run}")) == {masked.order_id}
    assert await found(shop="own/shop2", buyer=f"b1{run}") == [other_shop.order_id]
    # a token scoped to shop2 never sees shop1's orders
    assert await found(frozenset({"shop2"}), buyer=f"b1{run}") == [other_shop.order_id]
    assert await found(frozenset({"shop9"}), buyer=f"b1{run}") == []
    created = T0 - timedelta(seconds=1)
    assert set(await found(since=created, until=T0 + timedelta(seconds=1), buyer=f"b1{run}")) == (
        everyone
    )
    assert await found(since=T0 + timedelta(days=1), buyer=f"b1{run}") == []

    rows = await find_matching(settings, order_search(tracking=tracking), client=pipeline.client)
    (row,) = rows
    assert row["tags"] == ["vip"] and row["state"] == OrderState.RELEASED.value
    assert "13800138000" not in repr(rows) and f"b1{run}" not in repr(rows)
