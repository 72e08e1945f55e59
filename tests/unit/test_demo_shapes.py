"""The demo's platform-shaped orders: each maps to the order it names, and the check says
WRONG for an order that ends up anywhere it should not."""

from __future__ import annotations

import json

from ops.demo_shapes import BACKORDER_SKU, build_cases, check
from streams.channels import adapt, adapt_input
from streams.messages import AfterSalesKind, AfterSalesRequest


def test_every_case_maps_to_the_order_it_names() -> None:
    cases = build_cases("20261207193000")
    assert len({c.order_id for c in cases}) == len(cases) == 16
    for case in cases:
        order = adapt(case.channel, json.dumps(case.first, ensure_ascii=False).encode())
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
    right = {c.order_id: (sorted(c.expect_first)[0], c.first_reason) for c in cases}
    assert check(cases, lambda ids: right, "first", timeout_s=0)
    assert all(c.outcome[-1].endswith(" ok") for c in cases)
    held = {oid: ("held", "unpaid") for oid in right}
    assert not check(cases, lambda ids: held, "first", timeout_s=0)
    assert all(c.outcome[-1].endswith("WRONG") for c in cases)
    missing: dict[str, tuple[str, str]] = {}
    assert not check(cases, lambda ids: missing, "then", timeout_s=0)
    assert cases[0].outcome[-1] == "missing WRONG"
