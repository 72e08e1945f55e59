"""Property tests: generated platform payloads map exactly; nothing but AdapterError escapes."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.channels import adapt
from streams.channels.base import AdapterError
from streams.models import Channel, Order, make_order_id

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
CHANNELS = [c.value for c in Channel]
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CENT = Decimal("0.01")

# A line as the generators think of it: quantity, unit price and line discount in cents.
line_st = st.tuples(
    st.integers(min_value=1, max_value=999),
    st.integers(min_value=0, max_value=2_000_000),
    st.integers(min_value=0, max_value=100),  # discount as % of the line amount
)
lines_st = st.lists(line_st, min_size=1, max_size=8)
shipping_st = st.integers(min_value=0, max_value=5_000)


def yuan(cents: int) -> str:
    return str((Decimal(cents) * CENT).quantize(CENT))


def split(lines: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(qty, unit, discount, paid) in cents for every generated line."""
    out = []
    for qty, unit, pct in lines:
        amount = qty * unit
        discount = amount * pct // 100
        out.append((qty, unit, discount, amount - discount))
    return out


def adapt_json(channel: str, payload: dict[str, Any]) -> Order:
    return adapt(channel, json.dumps(payload, ensure_ascii=False).encode())


def check(order: Order, rows: list[tuple[int, int, int, int]], shipping: int, total: int) -> None:
    assert [line.quantity for line in order.lines] == [r[0] for r in rows]
    assert [line.unit_price for line in order.lines] == [Decimal(yuan(r[1])) for r in rows]
    assert order.shipping_fee == Decimal(yuan(shipping))
    assert order.total == order.payment.paid_total == Decimal(yuan(total))
    assert sum(line.paid_amount for line in order.lines) + order.shipping_fee == order.total


# --- builders: the real field names and units of each platform ------------------------------


def taobao(rows: list[tuple[int, int, int, int]], shipping: int, shop_discount: int,
           allocated: bool) -> tuple[dict[str, Any], int]:
    goods = sum(r[3] for r in rows)
    shop_discount = min(shop_discount, goods)
    subs = [{"oid": 9000 + i, "num": q, "price": yuan(u), "total_fee": yuan(p),
             "discount_fee": yuan(d), "outer_sku_id": f"SKU-{i}", "title": "t"}
            for i, (q, u, d, p) in enumerate(rows)]
    if allocated:  # the platform's own allocation: shop discount taken from the first line
        taken = shop_discount
        for sub, row in zip(subs, rows, strict=True):
            cut = min(taken, row[3])
            taken -= cut
            sub["divide_order_fee"] = yuan(row[3] - cut)
    total = goods - shop_discount + shipping
    trade = {"tid": 123456789, "status": "WAIT_SELLER_SEND_GOODS", "seller_nick": "shop",
             "created": "2024-11-11 00:00:00", "pay_time": "2024-11-11 00:00:05",
             "payment": yuan(total), "post_fee": yuan(shipping), "orders": {"order": subs}}
    return trade, total


def jd(rows: list[tuple[int, int, int, int]], shipping: int,
       order_coupon: int) -> tuple[dict[str, Any], int]:
    goods = sum(r[3] for r in rows)
    order_coupon = min(order_coupon, goods)
    items = [{"skuId": str(100 + i), "outerSkuId": f"SKU-{i}", "skuName": "n", "jdPrice": yuan(u),
              "itemTotal": str(q)} for i, (q, u, _, _) in enumerate(rows)]
    coupons = [{"skuId": str(100 + i), "couponType": "30-单品促销优惠", "couponPrice": yuan(d)}
               for i, (_, _, d, _) in enumerate(rows) if d]
    if order_coupon:
        coupons.append({"skuId": None, "couponType": "41-京东券优惠",
                        "couponPrice": yuan(order_coupon)})
    seller = goods - order_coupon
    order = {"orderId": "88", "venderId": "7", "orderState": "WAIT_SELLER_STOCK_OUT",
             "payType": "4-在线支付", "orderStartTime": "2024-06-18 00:00:00",
             "paymentConfirmTime": "2024-06-18 00:00:09", "orderSellerPrice": yuan(seller),
             "freightPrice": yuan(shipping), "itemInfoList": items, "couponDetailList": coupons,
             "consigneeInfo": {"province": "广东"}}
    return order, seller + shipping


def douyin(rows: list[tuple[int, int, int, int]], shipping: int) -> tuple[dict[str, Any], int]:
    total = sum(r[3] for r in rows) + shipping
    skus = [{"order_id": f"sub{i}", "code": f"SKU-{i}", "item_num": q, "origin_amount": u,
             "sum_amount": q * u, "promotion_amount": d, "pay_amount": p}
            for i, (q, u, d, p) in enumerate(rows)]
    order = {"order_id": "69", "shop_id": 44, "order_status": 2, "pay_type": 1,
             "create_time": 1718640000, "pay_time": 1718640010, "pay_amount": total,
             "post_amount": shipping, "sku_order_list": skus,
             "post_addr": {"province": {"name": "四川省", "id": "51"}}}
    return order, total


def shopify(rows: list[tuple[int, int, int, int]], shipping: int) -> tuple[dict[str, Any], int]:
    total = sum(r[3] for r in rows) + shipping
    items = [{"id": 1000 + i, "sku": f"SKU-{i}", "title": "t", "quantity": q, "price": yuan(u),
              "discount_allocations": [{"amount": yuan(d)}] if d else []}
             for i, (q, u, d, _) in enumerate(rows)]
    order = {"id": 5678, "currency": "CNY", "created_at": "2024-06-18T10:15:00+08:00",
             "financial_status": "paid", "total_price": yuan(total),
             "shipping_lines": [{"price": yuan(shipping)}], "line_items": items,
             "shipping_address": {"country_code": "CN", "province": "Shanghai"}}
    return order, total


def amazon(rows: list[tuple[int, int, int, int]], shipping: int) -> tuple[dict[str, Any], int]:
    total = sum(r[3] for r in rows) + shipping

    def money(cents: int) -> dict[str, str]:
        return {"CurrencyCode": "CNY", "Amount": yuan(cents)}

    items = [{"OrderItemId": str(700 + i), "SellerSKU": f"SKU-{i}", "QuantityOrdered": q,
              "ItemPrice": money(q * u), "PromotionDiscount": money(d),
              "ShippingPrice": money(shipping if i == 0 else 0)}
             for i, (q, u, d, _) in enumerate(rows)]
    order = {"AmazonOrderId": "C02-1", "PurchaseDate": "2024-06-17T16:20:00Z",
             "OrderStatus": "Unshipped", "MarketplaceId": "AAHKV2X7AFYLW",
             "OrderTotal": money(total), "PaymentMethod": "Other", "OrderItems": items}
    return order, total


def own(rows: list[tuple[int, int, int, int]], shipping: int) -> tuple[dict[str, Any], int]:
    total = sum(r[3] for r in rows) + shipping
    lines = [{"line_id": str(i), "sku": f"SKU-{i}", "quantity": q, "unit_price": yuan(u),
              "discount": yuan(d), "paid_amount": yuan(p)} for i, (q, u, d, p) in enumerate(rows)]
    order = {"order_id": make_order_id("own", "web", "W1"), "channel": "own", "shop_id": "web",
             "external_id": "W1", "channel_status": "paid", "currency": "CNY",
             "created_at": "2024-06-18T09:30:00+08:00", "updated_at": "2024-06-18T09:30:00+08:00",
             "buyer": {}, "address": {"province": "湖北省"}, "lines": lines,
             "payment": {"status": "paid", "paid_total": yuan(total)},
             "shipping_fee": yuan(shipping), "total": yuan(total)}
    return order, total


# --- generated valid payloads map exactly ---------------------------------------------------


@PROPERTY
@given(lines_st, shipping_st, st.integers(min_value=0, max_value=500_000), st.booleans())
def test_taobao_generated(lines: list[Any], shipping: int, discount: int, allocated: bool) -> None:
    rows = split(lines)
    payload, total = taobao(rows, shipping, discount, allocated)
    order = adapt_json("taobao", payload)
    check(order, rows, shipping, total)
    if not allocated or discount == 0:
        # every line keeps at most its own amount, and the spread never goes negative
        assert all(0 <= li.paid_amount <= Decimal(yuan(r[3]))
                   for li, r in zip(order.lines, rows, strict=True))


@PROPERTY
@given(lines_st, shipping_st, st.integers(min_value=0, max_value=500_000))
def test_jd_generated(lines: list[Any], shipping: int, coupon: int) -> None:
    rows = split(lines)
    payload, total = jd(rows, shipping, coupon)
    check(adapt_json("jd", payload), rows, shipping, total)


@PROPERTY
@given(lines_st, shipping_st)
def test_douyin_generated(lines: list[Any], shipping: int) -> None:
    rows = split(lines)
    payload, total = douyin(rows, shipping)
    order = adapt_json("douyin", payload)
    check(order, rows, shipping, total)
    assert [li.paid_amount for li in order.lines] == [Decimal(yuan(r[3])) for r in rows]


@PROPERTY
@given(lines_st, shipping_st)
def test_shopify_generated(lines: list[Any], shipping: int) -> None:
    rows = split(lines)
    payload, total = shopify(rows, shipping)
    order = adapt_json("shopify", payload)
    check(order, rows, shipping, total)
    assert [li.discount for li in order.lines] == [Decimal(yuan(r[2])) for r in rows]


@PROPERTY
@given(lines_st, shipping_st)
def test_amazon_generated(lines: list[Any], shipping: int) -> None:
    rows = split(lines)
    payload, total = amazon(rows, shipping)
    check(adapt_json("amazon", payload), rows, shipping, total)


@PROPERTY
@given(lines_st, shipping_st)
def test_own_generated(lines: list[Any], shipping: int) -> None:
    rows = split(lines)
    payload, total = own(rows, shipping)
    check(adapt_json("own", payload), rows, shipping, total)


# --- nothing but AdapterError, whatever arrives ---------------------------------------------

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "Infinity", "2024-13-45 25:61:00",
                     "9" * 40, "0.00001", "浙江省", "CN", "COD", "paid", "WAIT_BUYER_PAY"]),
)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)


def survive(channel: str, data: bytes) -> None:
    try:
        order = adapt(channel, data)
    except AdapterError:
        return
    assert isinstance(order, Order)


@PROPERTY
@given(st.sampled_from(CHANNELS), st.binary(max_size=300))
def test_arbitrary_bytes(channel: str, data: bytes) -> None:
    survive(channel, data)


@PROPERTY
@given(st.sampled_from(CHANNELS), json_value)
def test_arbitrary_json(channel: str, value: Any) -> None:
    survive(channel, orjson.dumps(value))


def _samples() -> dict[str, dict[str, Any]]:
    return {c: json.loads((SAMPLES / f"{c}.json").read_text(encoding="utf-8")) for c in CHANNELS}


SAMPLE_PAYLOADS = _samples()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    children = node.items() if isinstance(node, dict) else \
        enumerate(node) if isinstance(node, list) else []
    for key, value in children:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


SAMPLE_PATHS = {c: _paths(p) for c, p in SAMPLE_PAYLOADS.items()}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A sample payload with 1-3 random keys deleted or values replaced by random JSON."""
    channel = draw(st.sampled_from(CHANNELS))
    payload = copy.deepcopy(SAMPLE_PAYLOADS[channel])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(SAMPLE_PATHS[channel]))
        node: Any = payload
        try:
            for step in path[:-1]:
                node = node[step]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(json_value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this branch
    return channel, payload


@PROPERTY
@given(mutated())
def test_mutated_samples(case: tuple[str, dict[str, Any]]) -> None:
    channel, payload = case
    survive(channel, orjson.dumps(payload))


@PROPERTY
@given(st.sampled_from(CHANNELS), st.sampled_from(CHANNELS))
def test_other_channels_payloads_are_refused_cleanly(channel: str, source: str) -> None:
    survive(channel, orjson.dumps(SAMPLE_PAYLOADS[source]))
