"""The demo's platform-shaped orders: each maps to the order it names, and the check says
WRONG for an order that ends up anywhere it should not."""

from __future__ import annotations

import json
from pathlib import Path

from ops.demo_shapes import BACKORDER_SKU, Found, build_cases, check
from order.audit import AuditContext, Verdict, audit
from order.route import RoutingTable
from streams.channels import AdapterContext, SkuMap, adapt, adapt_input
from streams.messages import AfterSalesKind, AfterSalesRequest

CONFIG = Path(__file__).resolve().parents[2] / "config" / "warehouses.toml"


def test_every_case_maps_to_the_order_it_names() -> None:
    cases = build_cases("20261207193000")
    assert len({c.order_id for c in cases}) == len(cases) == 20
    ctx = AdapterContext(sku_map=SkuMap.load(CONFIG.with_name("sku_map.csv")))
    for case in cases:
        order = adapt(case.channel, json.dumps(case.first, ensure_ascii=False).encode(), ctx)
        assert order.has_bundles == bool(case.together)
        assert order.order_id == case.order_id
        skus = {line.sku for line in order.lines}
        if case.restock is not None:
            assert skus == {BACKORDER_SKU} == {case.restock[0]}
        else:
            assert skus <= {"SKU-CASE-C3", "SKU-CHARGER-65W"}
        if case.then is not None:
            later = adapt_input(case.channel, json.dumps(case.then, ensure_ascii=False).encode())
            assert later.order_id == case.order_id
            if isinstance(later, AfterSalesRequest):  # the platform's refund before shipment
                assert later.kind is AfterSalesKind.CANCEL
            else:
                assert later.updated_at > order.updated_at


def test_the_check_names_wrong_outcomes() -> None:
    cases = build_cases("20261207193001")
    right = {
        c.order_id: Found(
            sorted(c.expect_first)[0],
            c.first_reason,
            c.warehouse,
            min(c.carriers, default=""),
            tuple((sku, "WH-SH") for sku in sorted(c.together)),
        )
        for c in cases
    }
    assert check(cases, lambda ids: right, "first", timeout_s=0)
    assert all(c.outcome[-1].endswith(" ok") for c in cases)
    held = {oid: Found("held", "unpaid") for oid in right}
    assert not check(cases, lambda ids: held, "first", timeout_s=0)
    assert all(c.outcome[-1].endswith("WRONG") for c in cases)
    missing: dict[str, Found] = {}
    assert not check(cases, lambda ids: missing, "then", timeout_s=0)
    assert cases[0].outcome[-1] == "missing WRONG"


def test_the_cross_border_cases_pass_the_audit_and_route_to_their_country() -> None:
    routing = RoutingTable.load(CONFIG)
    overseas = [c for c in build_cases("20261207193002") if c.warehouse]
    assert [c.warehouse for c in overseas] == ["WH-US-LA", "WH-US-LA", "WH-DE-FRA"]
    assert [c.channel for c in overseas] == ["amazon", "shopify", "amazon"]
    for case in overseas:
        order = adapt(case.channel, json.dumps(case.first, ensure_ascii=False).encode())
        assert order.address.phone == ""  # the platforms give none
        ctx = AuditContext(known_skus=frozenset({"SKU-CASE-C3", "SKU-CHARGER-65W"}))
        assert audit(order, ctx).verdict is Verdict.PASS, audit(order, ctx)
        warehouse = routing.candidates(order)[0]
        assert warehouse == case.warehouse
        weight = routing.weight_g(order.lines)
        assert routing.choose_carrier(warehouse, order.address, weight).code in case.carriers


def test_a_bundle_reserved_from_two_warehouses_or_in_part_is_wrong() -> None:
    (case,) = [c for c in build_cases("20261207193004") if c.together]
    split = {
        case.order_id: Found(
            "released",
            "",
            "WH-SH",
            "SF",
            (
                ("SKU-CASE-C3", "WH-SH"),
                ("SKU-CHARGER-65W", "WH-BJ"),
            ),
        )
    }
    assert not check([case], lambda ids: split, "first", timeout_s=0)
    part = {case.order_id: Found("released", "", "WH-SH", "SF", (("SKU-CASE-C3", "WH-SH"),))}
    assert not check([case], lambda ids: part, "first", timeout_s=0)


def test_an_overseas_order_shipped_from_elsewhere_is_wrong() -> None:
    cases = [c for c in build_cases("20261207193003") if c.warehouse == "WH-US-LA"]
    from_china = {c.order_id: Found("released", "", "WH-SH", "UPS") for c in cases}
    assert not check(cases, lambda ids: from_china, "first", timeout_s=0)
    assert cases[0].outcome[-1] == "released from WH-SH by UPS WRONG"
    by_ems = {c.order_id: Found("released", "", "WH-US-LA", "EMS") for c in cases}
    assert not check(cases, lambda ids: by_ems, "first", timeout_s=0)
