"""The nasty-payload corpus (corpus/manifest.toml): each case ends exactly as the manifest says,
as a DLQ record with its specific reason and detail, or as a valid order; and the valid ones
keep what makes them interesting (lines of one sku reserved together, injection strings kept
verbatim as data, the shop they came from)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from streams.channels.base import AdapterError
from streams.messages import DlqReason
from streams.models import Order
from tests.fuzz.payloads import CHANNELS, INJECTIONS, ORDER, Case, corpus, outcome, sample

CASES = corpus()


def strings(node: Any) -> list[str]:
    """Every string in a JSON tree, keys included."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (k, *strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def duplicate_sku_lines(order: Order, case: Case) -> None:
    """Two lines of one sku stay two lines, and are reserved as one quantity."""
    sku = order.lines[0].sku
    twins = [line for line in order.lines if line.sku == sku]
    assert len(twins) == 2 and len({line.line_id for line in order.lines}) == len(order.lines)
    assert order.quantity_by_sku[sku] == sum(line.quantity for line in twins)


def injection_everywhere(order: Order, case: Case) -> None:
    """Every free-text field the order keeps holds the injection strings of the payload and
    nothing else: data, never interpreted, escaped or cut (a street may join two of them)."""
    injected = sorted(
        {s for s in strings(json.loads(case.data)) if s in INJECTIONS}, key=len, reverse=True
    )
    assert len(injected) >= 10
    address, buyer = order.address, order.buyer
    fields = [
        address.name,
        address.city,
        address.district,
        address.street,
        address.phone,
        buyer.name,
        order.buyer_remark,
        order.seller_remark,
        *(line.title for line in order.lines),
        *(line.channel_sku for line in order.lines),
    ]
    texts = [value for value in fields if value]
    assert len(texts) >= 6
    for value in texts:
        rest = value
        for s in injected:
            rest = rest.replace(s, "")
        assert not rest.strip(), value
    if order.channel.value != "amazon":  # the one channel without a buyer remark
        assert order.buyer_remark in injected


def unknown_shop(order: Order, case: Case) -> None:
    assert order.shop_id == "never-heard-of-this-shop"


def shop_header_with_whitespace(order: Order, case: Case) -> None:
    assert order.shop_id == "acme.myshopify.com"  # the same shop as without the whitespace


def unknown_sku(order: Order, case: Case) -> None:
    assert order.lines[0].sku == "SKU-NO-SUCH-THING"


def negative_zero_money(order: Order, case: Case) -> None:
    price = order.lines[0].unit_price  # '-0' is zero, not a negative zero ('-0.00' downstream)
    assert price == 0 and not price.is_signed() and not str(price).startswith("-")


def duplicate_json_keys(order: Order, case: Case) -> None:
    assert order.external_id == "4012345678901230000"  # the last one wins, as in every parser


def external_id_with_whitespace(order: Order, case: Case) -> None:
    assert order.external_id == "W20240618-0001"  # the id its order id is computed from
    assert order.order_id == "OEB0B96EC61CD2958"  # the sample's: one order, not two


def large_order(order: Order, case: Case) -> None:
    """Too big to copy onto every event: named with its size, kept on the raw topic only."""
    assert "junk" not in order.raw
    assert order.raw["omitted"] == {"junk": 400_002}  # its JSON size, quotes included


CHECKS: dict[str, Callable[[Order, Case], None]] = {
    f.__name__: f
    for f in (
        duplicate_sku_lines,
        injection_everywhere,
        unknown_shop,
        shop_header_with_whitespace,
        unknown_sku,
        negative_zero_money,
        duplicate_json_keys,
        external_id_with_whitespace,
        large_order,
    )
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_ends_as_the_manifest_says(case: Case) -> None:
    result = outcome(case.channel, case.data, case.shop, suite="corpus")
    if case.expected == ORDER:
        assert isinstance(result, Order), f"{result.reason.value}: {result.detail}"
        check = CHECKS.get(case.name.split("/")[1])
        if check:
            check(result, case)
    else:
        assert isinstance(result, AdapterError), "accepted as an order"
        assert result.reason is DlqReason(case.expected), result.detail
        assert case.detail in result.detail


def test_manifest_covers_every_channel_and_names_real_outcomes() -> None:
    names = {c.name for c in CASES}
    for channel in CHANNELS:
        for kind in (
            "malformed_json",
            "invalid_utf8",
            "top_level_array",
            "missing_order_id",
            "zero_quantity",
            "negative_quantity",
            "fractional_quantity",
            "huge_quantity",
            "nan_money_token",
            "nan_money_string",
            "infinity_money_token",
            "ten_megabytes",
            "deep_nesting_100k",
            "duplicate_sku_lines",
            "unknown_sku",
            "unknown_shop",
            "far_future_time",
            "far_past_time",
            "injection_everywhere",
        ):
            assert f"{channel}/{kind}" in names
    assert "wish/unknown_channel" in names
    known = {r.value for r in DlqReason} | {ORDER}
    assert all(c.expected in known for c in CASES)
    assert all(c.detail or c.expected == ORDER for c in CASES)
    assert len(CASES) == len(names)


def test_corpus_files_are_samples_broken_on_purpose() -> None:
    """The corpus starts from the real payloads: a valid case is a sample with one change."""
    own = json.loads(next(c for c in CASES if c.name == "own/unknown_sku").data)
    assert {k for k in own if own[k] != sample("own")[k]} == {"lines"}
