"""Overseas warehouses and cross-border orders (issue 16 item 6), in the platforms' native
shapes, through the pipeline on the real Redis with the shipped config: Amazon and Shopify
orders to US addresses reserve in Los Angeles and go to the WMS from there with a US carrier,
a Berlin order ships from Frankfurt, a Chinese order still ships in China, a US order whose
ZIP code is wrong waits for a person, and the report shows sales by ship-from warehouse."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from agents.pipeline import OrderPipeline
from core.settings import Settings
from ops.demo_shapes import DE_CARRIERS, US_CARRIERS, Case, build_cases
from streams.messages import CommandKind, FulfilmentCommand, OrderState
from tests.clickhouse_db import report_after
from tests.integration.test_lifecycle import figures, reconciles, state_of
from tests.integration.test_pipeline import commands, events, stock
from tests.integration.test_protected_receivers import NativeFeed
from tests.unit.test_protected_receiver import load

pytestmark = pytest.mark.integration

CASE, CHARGER = "SKU-CASE-C3", "SKU-CHARGER-65W"  # what the demo's cross-border orders buy
CHINESE_CARRIERS = {"SF", "ZTO", "YTO", "JD", "EMS"}


def cross_border(warehouse: str) -> list[Case]:
    """The demo's cross-border orders (ops/demo_shapes.py) bound for ``warehouse``."""
    return [c for c in build_cases("20261207193000") if c.warehouse == warehouse]


def stock_everywhere(settings: Settings, qty: int = 10) -> None:
    """The two skus in Los Angeles, Frankfurt and both hubs, so only routing decides."""
    rows = [
        (sku, wh, qty)
        for sku in (CASE, CHARGER)
        for wh in ("WH-US-LA", "WH-DE-FRA", "WH-SH", "WH-GZ")
    ]
    stock(settings, rows)


def outbound(commands_sent: list[FulfilmentCommand], order_id: str) -> FulfilmentCommand:
    [command] = [
        c for c in commands_sent if c.order_id == order_id and c.kind is CommandKind.OUTBOUND
    ]
    return command


async def test_amazon_and_shopify_orders_to_us_addresses_ship_from_los_angeles(
    pipeline: OrderPipeline, redis_settings: Settings, facts_db: Settings
) -> None:
    stock_everywhere(redis_settings)
    feed = NativeFeed()
    cases = cross_border("WH-US-LA")
    assert [c.channel for c in cases] == ["amazon", "shopify"]
    result = await pipeline.process([feed.raw(c.channel, copy.deepcopy(c.first)) for c in cases])
    sent = commands(result)
    for case in cases:
        command = outbound(sent, case.order_id)
        assert command.warehouse == "WH-US-LA"
        assert command.carrier in US_CARRIERS and command.carrier not in CHINESE_CARRIERS
        assert command.ship_to.country == "US" and command.ship_to.phone == ""  # none given
        assert await state_of(pipeline, case.order_id) is OrderState.RELEASED
    # Amazon: one of each sku; Shopify: one case and two chargers (the sample's quantities)
    assert figures(redis_settings, CASE)["WH-US-LA"]["reserved"] == 2
    assert figures(redis_settings, CHARGER)["WH-US-LA"]["reserved"] == 3
    for sku in (CASE, CHARGER):
        assert figures(redis_settings, sku)["WH-SH"]["reserved"] == 0
    assert reconciles(redis_settings)
    report = await report_after(facts_db, events(result))
    [la] = [r for r in report.gmv_by_warehouse if r.warehouse == "WH-US-LA"]
    assert (la.currency, la.orders) == ("USD", 2)
    assert la.gmv == sum(
        (
            Decimal(str(c.first.get("total_price") or c.first["OrderTotal"]["Amount"]))
            for c in cases
        ),
        Decimal(0),
    )


async def test_a_us_order_goes_from_the_hub_when_los_angeles_is_out(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [(CASE, "WH-SH", 5), (CHARGER, "WH-SH", 5)])
    [amazon, _] = cross_border("WH-US-LA")
    result = await pipeline.process([NativeFeed().raw("amazon", copy.deepcopy(amazon.first))])
    command = outbound(commands(result), amazon.order_id)
    assert (command.warehouse, command.carrier) == ("WH-SH", "UPS")  # cross-border express
    assert reconciles(redis_settings)


async def test_a_berlin_order_ships_from_frankfurt(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock_everywhere(redis_settings)
    [berlin] = cross_border("WH-DE-FRA")
    result = await pipeline.process([NativeFeed().raw("amazon", copy.deepcopy(berlin.first))])
    command = outbound(commands(result), berlin.order_id)
    assert command.warehouse == "WH-DE-FRA" and command.carrier in DE_CARRIERS
    assert figures(redis_settings, CASE)["WH-DE-FRA"]["reserved"] == 1
    assert reconciles(redis_settings)


async def test_a_chinese_order_still_ships_in_china(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    """Plenty in Los Angeles changes nothing for Beijing: no warehouse abroad covers China."""
    phone, charger = "SKU-PHONE-X1", CHARGER
    stock(
        redis_settings,
        [
            (phone, "WH-BJ", 5),
            (charger, "WH-BJ", 5),
            (phone, "WH-US-LA", 99),
            (charger, "WH-US-LA", 99),
        ],
    )
    result = await pipeline.process([NativeFeed().raw("amazon", load("amazon"))])  # to Beijing
    [command] = [c for c in commands(result) if c.kind is CommandKind.OUTBOUND]
    assert command.warehouse == "WH-BJ" and command.carrier in CHINESE_CARRIERS
    assert figures(redis_settings, phone)["WH-US-LA"]["reserved"] == 0
    assert reconciles(redis_settings)


async def test_a_us_order_with_a_wrong_zip_code_waits_for_a_person(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock_everywhere(redis_settings)
    [amazon, _] = cross_border("WH-US-LA")
    payload: dict[str, Any] = copy.deepcopy(amazon.first)
    payload["ShippingAddress"]["PostalCode"] = "9001"
    result = await pipeline.process([NativeFeed().raw("amazon", payload)])
    assert commands(result) == []
    record = await pipeline.orders.load(amazon.order_id)
    assert record is not None
    assert (record.state, record.hold_reason) == (OrderState.HELD, "address_implausible")
    held = [e for e in events(result) if e.to_state is OrderState.HELD]
    assert held and "ZIP code" in held[-1].detail and "9001" not in held[-1].detail
    assert figures(redis_settings, CASE)["WH-US-LA"]["reserved"] == 0
