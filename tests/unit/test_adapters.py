"""Channel adapters against the sample payloads and hand-made variants of them."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.channels import ADAPTERS, adapt, adapt_payload, get_adapter
from streams.channels.base import (
    AdapterContext,
    AdapterError,
    SkuMap,
    spread_discount,
    unique_ids,
)
from streams.messages import DlqReason
from streams.models import Channel, ChannelStatus, Order, PaymentStatus, make_order_id

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
BEIJING = timedelta(hours=8)

# The figures samples/payloads/README.md promises.
EXPECTED: dict[str, dict[str, Any]] = {
    "taobao": {
        "shop": "极客数码旗舰店", "external": "4012345678901234567", "province": "ZJ",
        "lines": [("SKU-PHONE-X1", 1, "3999.00", "3779.60"), ("SKU-CASE-C3", 2, "59.00", "117.40")],
        "paid": "3897.00", "shipping": "0.00", "created": "2024-11-11 00:00:12",
        "updated": "2024-11-11 00:01:05", "raw": {"promotion_details", "status", "discount_fee"},
    },
    "jd": {
        "shop": "10086123", "external": "289345671203", "province": "GD",
        "lines": [("SKU-EARBUD-A2", 1, "299.00", "259.51"),
                  ("SKU-CHARGER-65W", 2, "149.00", "287.49")],
        "paid": "547.00", "shipping": "0.00", "created": "2024-06-18 00:03:27",
        "updated": "2024-06-18 00:04:02", "raw": {"orderState", "balanceUsed", "orderPayment"},
    },
    "douyin": {
        "shop": "4463798", "external": "6921234567890123456", "province": "SC",
        "lines": [("SKU-TEA-LONGJING", 2, "268.00", "506.00"),
                  ("SKU-MASK-N95-10", 3, "39.90", "119.70")],
        "paid": "625.70", "shipping": "0.00", "created": "2024-06-18 00:00:00",
        "updated": "2024-06-18 00:01:40",
        "raw": {"main_status", "encrypt_post_tel", "order_status"},
    },
    "shopify": {
        "shop": "shopify-default", "external": "5678901234567", "province": "SH",
        "lines": [("SKU-SNEAKER-42", 1, "699.00", "649.00"),
                  ("SKU-TSHIRT-L", 2, "89.00", "178.00")],
        "paid": "842.00", "shipping": "15.00", "created": "2024-06-18 10:15:00",
        "updated": "2024-06-18 10:15:03", "raw": {"name", "total_tax", "discount_codes"},
    },
    "amazon": {
        "shop": "amazon-cn", "external": "C02-6915364-2314451", "province": "BJ",
        "lines": [("SKU-PHONE-X1", 1, "3999.00", "3999.00"),
                  ("SKU-CHARGER-65W", 1, "149.00", "139.00")],
        "paid": "4138.00", "shipping": "0.00", "created": "2024-06-18 00:20:00",
        "updated": "2024-06-18 00:35:12", "raw": {"FulfillmentChannel", "MarketplaceId", "IsPrime"},
    },
    "own": {
        "shop": "own-web", "external": "W20240618-0001", "province": "HB",
        "lines": [("SKU-TSHIRT-L", 3, "89.00", "267.00"), ("SKU-MASK-N95-10", 1, "39.90", "39.90")],
        "paid": "316.90", "shipping": "10.00", "created": "2024-06-18 09:30:00",
        "updated": "2024-06-18 09:31:20", "raw": {"source"},
    },
}

# Personal data present in the samples: no error message may ever contain any of it.
PII = ["张三", "13800138000", "文三路", "王小明", "13912345678", "科苑路", "Wei Lin",
       "13612345678", "南京西路", "lin.wei@example.com", "赵丽", "13700001111", "建国路",
       "陈晨", "13512345678", "珞喻路", "李*", "#7qZ3Jz8Rk2pW"]


def load(channel: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))


def to_order(channel: str, payload: dict[str, Any], ctx: AdapterContext | None = None) -> Order:
    return adapt(channel, json.dumps(payload, ensure_ascii=False).encode(), ctx)


def reason_of(channel: str, payload: dict[str, Any] | bytes) -> AdapterError:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(AdapterError) as info:
        adapt(channel, data)
    return info.value


def beijing(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) - BEIJING


# --- the sample payloads --------------------------------------------------------------------


@pytest.mark.parametrize("channel", sorted(EXPECTED))
def test_sample_maps_to_expected_order(channel: str) -> None:
    want = EXPECTED[channel]
    order = adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())

    assert order.channel is Channel(channel)
    assert order.shop_id == want["shop"]
    assert order.external_id == want["external"]
    assert order.order_id == make_order_id(channel, want["shop"], want["external"])
    got = [(li.sku, li.quantity, li.unit_price, li.paid_amount) for li in order.lines]
    assert got == [(s, q, Decimal(u), Decimal(p)) for s, q, u, p in want["lines"]]
    assert order.shipping_fee == Decimal(want["shipping"])
    assert order.total == Decimal(want["paid"])
    assert order.payment.paid_total == Decimal(want["paid"])
    assert sum(li.paid_amount for li in order.lines) + order.shipping_fee == order.total
    assert order.currency == "CNY"
    assert order.address.country == "CN"
    assert order.address.province_code == want["province"]
    assert order.channel_status is ChannelStatus.PAID
    assert order.payment.status is PaymentStatus.PAID
    assert want["raw"] <= set(order.raw)


@pytest.mark.parametrize("channel", sorted(EXPECTED))
def test_times_are_utc_and_equal_beijing_minus_8h(channel: str) -> None:
    order = adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())
    for value in (order.created_at, order.updated_at):
        assert value.utcoffset() == timedelta(0)
    assert order.created_at == beijing(EXPECTED[channel]["created"])
    assert order.updated_at == beijing(EXPECTED[channel]["updated"])


def test_sample_money_is_exact_and_serialised_as_two_place_strings() -> None:
    order = adapt("douyin", (SAMPLES / "douyin.json").read_bytes())
    dumped = order.model_dump(mode="json")
    assert dumped["total"] == "625.70"
    assert dumped["lines"][1]["unit_price"] == "39.90"
    assert dumped["shipping_fee"] == "0.00"  # not '0E-2'


def test_discounts_are_line_list_amount_minus_paid() -> None:
    order = adapt("taobao", (SAMPLES / "taobao.json").read_bytes())
    assert [li.discount for li in order.lines] == [Decimal("219.40"), Decimal("0.60")]
    assert order.discount_total == Decimal("220.00")


def test_buyer_and_address_fields() -> None:
    order = adapt("taobao", (SAMPLES / "taobao.json").read_bytes())
    assert order.address.street == "西溪街道文三路90号东部软件园1号楼501室"
    assert (order.address.city, order.address.district) == ("杭州市", "西湖区")
    assert order.address.phone == "13800138000"
    assert order.buyer.id == "AAHqR2xkAAbf1QqXmLkF2Nzv"
    assert order.buyer_remark == "请尽快发货，谢谢"
    assert order.payment.transaction_id == "2024111122001188441407801234"

    shopify = adapt("shopify", (SAMPLES / "shopify.json").read_bytes())
    assert shopify.buyer.name == "Wei Lin"
    assert shopify.address.postcode == "200040"
    assert "billing_address" not in shopify.raw and "browser_ip" not in shopify.raw


def test_douyin_ciphertext_phone_is_kept_for_label_printing() -> None:
    """The audit needs a phone to pass; Douyin's is ciphertext until the label is printed."""
    order = adapt("douyin", (SAMPLES / "douyin.json").read_bytes())
    assert order.address.phone.startswith("#7qZ3")
    assert order.raw["encrypt_post_tel"].startswith("#7qZ3")
    assert "mask_post_tel" not in order.raw
    assert order.address.street.startswith("玉林街道")


def test_known_fields_are_not_duplicated_in_raw() -> None:
    order = adapt("jd", (SAMPLES / "jd.json").read_bytes())
    assert not {"orderId", "itemInfoList", "consigneeInfo"} & set(order.raw)


# --- status mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "changes", "status", "payment"),
    [
        ("taobao", {"status": "WAIT_BUYER_PAY", "pay_time": None},
         ChannelStatus.PENDING_PAYMENT, PaymentStatus.UNPAID),
        ("taobao", {"type": "cod", "pay_time": None}, ChannelStatus.PAID, PaymentStatus.COD),
        ("taobao", {"status": "TRADE_CLOSED_BY_TAOBAO", "pay_time": None},
         ChannelStatus.CANCELLED, PaymentStatus.UNPAID),
        ("taobao", {"status": "TRADE_CLOSED"}, ChannelStatus.CANCELLED, PaymentStatus.REFUNDED),
        ("taobao", {"status": "WAIT_BUYER_CONFIRM_GOODS"}, ChannelStatus.SHIPPED,
         PaymentStatus.PAID),
        ("taobao", {"status": "TRADE_FINISHED"}, ChannelStatus.COMPLETED, PaymentStatus.PAID),
        ("jd", {"payType": "1-货到付款", "paymentConfirmTime": ""},
         ChannelStatus.PAID, PaymentStatus.COD),
        ("jd", {"orderState": "TRADE_CANCELED"}, ChannelStatus.CANCELLED, PaymentStatus.REFUNDED),
        ("jd", {"orderState": "WAIT_GOODS_RECEIVE_CONFIRM"}, ChannelStatus.SHIPPED,
         PaymentStatus.PAID),
        ("jd", {"orderState": "FINISHED_L"}, ChannelStatus.COMPLETED, PaymentStatus.PAID),
        ("jd", {"orderState": "LOCKED"}, ChannelStatus.PAID, PaymentStatus.PAID),
        ("douyin", {"order_status": 1, "pay_time": 0},
         ChannelStatus.PENDING_PAYMENT, PaymentStatus.UNPAID),
        ("douyin", {"pay_type": 0, "pay_time": 0}, ChannelStatus.PAID, PaymentStatus.COD),
        ("douyin", {"order_status": 4, "pay_time": 0}, ChannelStatus.CANCELLED,
         PaymentStatus.UNPAID),
        ("douyin", {"order_status": "3"}, ChannelStatus.SHIPPED, PaymentStatus.PAID),
        ("douyin", {"order_status": 5}, ChannelStatus.COMPLETED, PaymentStatus.PAID),
        ("shopify", {"financial_status": "pending"}, ChannelStatus.PENDING_PAYMENT,
         PaymentStatus.UNPAID),
        ("shopify", {"financial_status": "pending",
                     "payment_gateway_names": ["Cash on Delivery (COD)"]},
         ChannelStatus.PAID, PaymentStatus.COD),
        ("shopify", {"cancelled_at": "2024-06-18T11:00:00+08:00", "financial_status": "refunded"},
         ChannelStatus.CANCELLED, PaymentStatus.REFUNDED),
        ("shopify", {"financial_status": "voided"}, ChannelStatus.CANCELLED, PaymentStatus.UNPAID),
        ("shopify", {"fulfillment_status": "fulfilled"}, ChannelStatus.SHIPPED, PaymentStatus.PAID),
        ("shopify", {"financial_status": "partially_refunded"}, ChannelStatus.PAID,
         PaymentStatus.PARTIALLY_REFUNDED),
        ("amazon", {"OrderStatus": "Pending"}, ChannelStatus.PENDING_PAYMENT,
         PaymentStatus.UNPAID),
        ("amazon", {"PaymentMethod": "COD"}, ChannelStatus.PAID, PaymentStatus.COD),
        ("amazon", {"OrderStatus": "Canceled"}, ChannelStatus.CANCELLED, PaymentStatus.UNPAID),
        ("amazon", {"OrderStatus": "Shipped"}, ChannelStatus.SHIPPED, PaymentStatus.PAID),
    ],
)
def test_status_mapping(channel: str, changes: dict[str, Any], status: ChannelStatus,
                        payment: PaymentStatus) -> None:
    order = to_order(channel, {**load(channel), **changes})
    assert order.channel_status is status
    assert order.payment.status is payment
    paid = payment in {PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
    assert order.payment.paid_total == (order.total if paid else Decimal(0))
    assert (order.payment.paid_at is not None) == (paid and channel != "amazon")


@pytest.mark.parametrize(
    ("channel", "field"),
    [("taobao", "status"), ("jd", "orderState"), ("douyin", "order_status"),
     ("shopify", "financial_status"), ("amazon", "OrderStatus")],
)
def test_unknown_status_is_refused_not_guessed(channel: str, field: str) -> None:
    error = reason_of(channel, {**load(channel), field: "SOMETHING_NEW"})
    assert error.reason in {DlqReason.INVALID_FIELD}
    assert field in error.detail


def test_taobao_partial_refund() -> None:
    trade = load("taobao")
    trade["orders"]["order"][1]["refund_status"] = "SUCCESS"
    assert to_order("taobao", trade).payment.status is PaymentStatus.PARTIALLY_REFUNDED


# --- sku mapping and fallbacks --------------------------------------------------------------


def test_sku_map_table_is_applied_per_shop_and_wildcard() -> None:
    ctx = AdapterContext(sku_map=SkuMap({
        ("taobao", "极客数码旗舰店", "SKU-PHONE-X1"): "PHONE-X1-BLACK",
        ("taobao", "*", "SKU-CASE-C3"): "CASE-C3",
        ("jd", "*", "SKU-PHONE-X1"): "NOT-USED-FOR-TAOBAO",
    }))
    order = to_order("taobao", load("taobao"), ctx)
    assert [li.sku for li in order.lines] == ["PHONE-X1-BLACK", "CASE-C3"]
    assert [li.channel_sku for li in order.lines] == ["SKU-PHONE-X1", "SKU-CASE-C3"]
    assert order.quantity_by_sku == {"PHONE-X1-BLACK": 1, "CASE-C3": 2}


def test_sku_map_loads_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "skus.csv"
    path.write_text("channel,shop_id,channel_sku,sku\njd,,100087654321,SKU-CHARGER-65W\n")
    items = load("jd")
    items["itemInfoList"][1]["outerSkuId"] = ""
    order = to_order("jd", items, AdapterContext(sku_map=SkuMap.load(path)))
    assert order.lines[1].channel_sku == "100087654321"
    assert order.lines[1].sku == "SKU-CHARGER-65W"


@pytest.mark.parametrize(
    ("channel", "mutate", "expected"),
    [
        ("taobao", lambda p: p["orders"]["order"][0].update(outer_sku_id=""), "PHONE-X1"),
        ("taobao", lambda p: p["orders"]["order"][1].update(outer_iid=None, sku_id="5019"), "5019"),
        ("jd", lambda p: p["itemInfoList"][0].pop("outerSkuId"), "100023456789"),
        ("douyin", lambda p: p["sku_order_list"][0].update(code="", out_sku_id="TEA-OUT"),
         "TEA-OUT"),
        ("shopify", lambda p: p["line_items"][0].update(sku=None), "45012345678901"),
        ("amazon", lambda p: p["OrderItems"][0].pop("SellerSKU"), "B0CXYZ1234"),
    ],
)
def test_sku_fallback_when_merchant_code_is_blank(channel: str, mutate: Any, expected: str) -> None:
    payload = load(channel)
    mutate(payload)
    skus = {li.channel_sku for li in to_order(channel, payload).lines}
    assert expected in skus


def test_line_without_any_code_is_a_missing_field() -> None:
    payload = load("jd")
    payload["itemInfoList"][0].update(outerSkuId="", skuId="")
    error = reason_of("jd", payload)
    assert error.reason is DlqReason.MISSING_FIELD
    assert "itemInfoList[0].skuId" in error.detail


def test_jd_repeated_sku_gets_unique_line_ids() -> None:
    payload = load("jd")
    payload["itemInfoList"].append({**payload["itemInfoList"][1], "jdPrice": "0.00"})
    order = to_order("jd", payload)
    assert [li.line_id for li in order.lines][1:] == ["100087654321", "100087654321#2"]
    assert order.lines[2].is_gift


# --- money edge cases -----------------------------------------------------------------------


def test_taobao_without_divide_order_fee_spreads_the_shop_discount() -> None:
    trade = load("taobao")
    for sub in trade["orders"]["order"]:
        sub.pop("divide_order_fee")
    order = to_order("taobao", trade)
    assert [li.paid_amount for li in order.lines] == [Decimal("3779.60"), Decimal("117.40")]


def test_amazon_unit_price_that_does_not_divide_keeps_four_places() -> None:
    payload = load("amazon")
    item = payload["OrderItems"][1]
    item["QuantityOrdered"] = 3
    item["ItemPrice"]["Amount"] = "100.00"
    payload["OrderTotal"]["Amount"] = "4089.00"
    line = to_order("amazon", payload).lines[1]
    assert line.unit_price == Decimal("33.3333")
    assert line.paid_amount == Decimal("90.00")


def test_amazon_pending_order_without_total_address_or_prices() -> None:
    payload = load("amazon")
    payload["OrderStatus"] = "Pending"
    for key in ("OrderTotal", "ShippingAddress", "BuyerInfo"):
        payload.pop(key)
    for item in payload["OrderItems"]:
        item.pop("ItemPrice")
    order = to_order("amazon", payload)
    assert order.total == Decimal("0")
    assert order.currency == "CNY"  # from the marketplace
    assert (order.address.country, order.address.province_code) == ("CN", "")


def test_amazon_shipped_order_must_have_prices() -> None:
    payload = load("amazon")
    payload["OrderItems"][0].pop("ItemPrice")
    error = reason_of("amazon", payload)
    assert error.reason is DlqReason.MISSING_FIELD
    assert "OrderItems[0].ItemPrice" in error.detail


def test_amazon_shop_prefers_seller_id_then_context() -> None:
    payload = load("amazon")
    assert to_order("amazon", payload, AdapterContext(shop_id="acct-7")).shop_id == "acct-7"
    assert to_order("amazon", {**payload, "SellerId": "A1SELLER"}).shop_id == "A1SELLER"


def test_shopify_shop_comes_from_context() -> None:
    order = to_order("shopify", load("shopify"), AdapterContext(shop_id="runner-lab.myshopify.com"))
    assert order.shop_id == "runner-lab.myshopify.com"
    assert order.order_id == make_order_id("shopify", "runner-lab.myshopify.com", "5678901234567")


def test_shopify_province_from_code_only() -> None:
    payload = load("shopify")
    payload["shipping_address"].update(province="", province_code="ZJ")
    assert to_order("shopify", payload).address.province_code == "ZJ"


def test_douyin_province_from_gb_id_when_name_is_unusual() -> None:
    payload = load("douyin")
    payload["post_addr"]["province"]["name"] = "天府之国"
    assert to_order("douyin", payload).address.province_code == "SC"


def test_foreign_address_has_no_province_code() -> None:
    payload = load("shopify")
    payload["shipping_address"].update(country_code="US", province="California",
                                       province_code="CA")
    order = to_order("shopify", payload)
    assert (order.address.country, order.address.province_code) == ("US", "")


def test_api_envelopes_are_unwrapped() -> None:
    assert to_order("taobao", {"trade_fullinfo_get_response": {"trade": load("taobao")}}) \
        == to_order("taobao", load("taobao"))
    assert to_order("douyin", {"data": {"shop_order_detail": load("douyin")}}).total \
        == Decimal("625.70")
    assert to_order("shopify", {"order": load("shopify")}).external_id == "5678901234567"


def test_taobao_orders_as_plain_list() -> None:
    trade = load("taobao")
    trade["orders"] = trade["orders"]["order"]
    assert len(to_order("taobao", trade).lines) == 2


def test_fingerprint_same_for_repush_changes_with_content() -> None:
    first = to_order("jd", load("jd"))
    assert to_order("jd", load("jd")).fingerprint() == first.fingerprint()
    changed = {**load("jd"), "modified": "2024-06-18 09:00:00", "orderState": "LOCKED"}
    assert to_order("jd", changed).fingerprint() != first.fingerprint()
    assert to_order("jd", changed).order_id == first.order_id


# --- own channel ----------------------------------------------------------------------------


def test_own_order_id_is_recomputed_and_the_submitted_one_kept() -> None:
    payload = {**load("own"), "order_id": "OWRONG"}
    order = to_order("own", payload)
    assert order.order_id == make_order_id("own", "own-web", "W20240618-0001")
    assert order.raw["submitted_order_id"] == "OWRONG"


def test_own_refuses_other_channels_and_unknown_fields() -> None:
    assert reason_of("own", {**load("own"), "channel": "taobao"}).reason is DlqReason.INVALID_FIELD
    assert reason_of("own", {**load("own"), "surprise": 1}).reason is DlqReason.INVALID_FIELD
    missing = load("own")
    del missing["total"]
    assert reason_of("own", missing).reason is DlqReason.MISSING_FIELD


def test_own_province_code_normalised() -> None:
    payload = load("own")
    payload["address"].update(province_code="", province="Hubei Sheng")
    assert to_order("own", payload).address.province_code == "HB"


# --- bad payloads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "channel", "reason", "detail"),
    [
        ("malformed.json", "taobao", DlqReason.MALFORMED_JSON, ""),
        ("missing_field.json", "taobao", DlqReason.MISSING_FIELD, "tid"),
        ("negative_quantity.json", "jd", DlqReason.INVALID_FIELD, "itemInfoList[1].itemTotal"),
    ],
)
def test_bad_samples(file: str, channel: str, reason: DlqReason, detail: str) -> None:
    error = reason_of(channel, (SAMPLES / "bad" / file).read_bytes())
    assert error.reason is reason
    assert detail in error.detail


@pytest.mark.parametrize(
    ("channel", "path", "key"),
    [
        ("taobao", ("orders", "order", 0), "num"),
        ("jd", ("itemInfoList", 0), "itemTotal"),
        ("douyin", ("sku_order_list", 1), "item_num"),
        ("shopify", ("line_items", 0), "quantity"),
        ("amazon", ("OrderItems", 0), "QuantityOrdered"),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, "-2", "0", 1.5, "x", True, None, 10**7])
def test_non_positive_or_broken_quantity(channel: str, path: tuple[Any, ...], key: str,
                                         bad: Any) -> None:
    payload = load(channel)
    node: Any = payload
    for step in path:
        node = node[step]
    node[key] = bad
    error = reason_of(channel, payload)
    expected = DlqReason.MISSING_FIELD if bad is None else DlqReason.INVALID_FIELD
    assert error.reason is expected
    assert key in error.detail


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe{}", DlqReason.INVALID_UTF8),
        (b"[1, 2]", DlqReason.NOT_AN_OBJECT),
        (b"{}", DlqReason.MISSING_FIELD),
        (b'{"a":' * 40 + b"1" + b"}" * 40, DlqReason.INVALID_FIELD),  # nested too deep
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", DlqReason.INVALID_FIELD),  # lists too
        # brackets inside strings pass the byte count, then the tree walk finds it shallow
        (b'{"a": "' + b"{[" * 40 + b'"}', DlqReason.MISSING_FIELD),
        (b" " * 1_000_001, DlqReason.PAYLOAD_TOO_LARGE),
    ],
)
@pytest.mark.parametrize("channel", [c.value for c in Channel])
def test_undecodable_payloads(channel: str, data: bytes, reason: DlqReason) -> None:
    assert reason_of(channel, data).reason is reason


def test_unknown_channel() -> None:
    with pytest.raises(AdapterError) as info:
        adapt("ebay", b"{}")
    assert info.value.reason is DlqReason.UNKNOWN_CHANNEL
    with pytest.raises(AdapterError):
        get_adapter("TAOBAO")


def test_registry_covers_every_channel() -> None:
    assert set(ADAPTERS) == set(Channel)
    assert all(adapter.channel is channel for channel, adapter in ADAPTERS.items())


def test_unexpected_exception_becomes_invalid_field(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(payload: dict[str, Any], ctx: AdapterContext) -> Order:
        raise KeyError("张三")

    monkeypatch.setattr(ADAPTERS[Channel.JD], "to_order", boom)
    with pytest.raises(AdapterError) as info:
        adapt_payload("jd", load("jd"), AdapterContext())
    assert info.value.reason is DlqReason.INVALID_FIELD
    assert "张三" not in str(info.value)


# --- personal data never in error messages --------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@pytest.mark.parametrize("channel", sorted(EXPECTED))
def test_errors_never_echo_personal_data(channel: str) -> None:
    """Put each piece of personal data into every field in turn; no message may repeat it."""
    sample = load(channel)
    messages = []
    for path in _paths(sample):
        for pii in ("张三 13800138000", {"name": "王小明"}, ["文三路90号"]):
            payload = copy.deepcopy(sample)
            node: Any = payload
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = pii
            try:
                to_order(channel, payload)
            except AdapterError as exc:
                messages.append(str(exc))
        payload = copy.deepcopy(sample)
        node = payload
        for step in path[:-1]:
            node = node[step]
        del node[path[-1]]
        try:
            to_order(channel, payload)
        except AdapterError as exc:
            messages.append(str(exc))
    assert messages
    leaks = [m for m in messages if any(p in m for p in [*PII, "文三路90号"])]
    assert not leaks, leaks[:3]


# --- helpers --------------------------------------------------------------------------------


def test_spread_discount_is_exact_and_proportional() -> None:
    amounts = [Decimal("269.00"), Decimal("298.00")]
    assert spread_discount(amounts, Decimal("547.00"), "x") == [Decimal("259.51"),
                                                                 Decimal("287.49")]
    assert spread_discount(amounts, Decimal("600.00"), "x") == amounts  # extra fees: untouched
    assert spread_discount([Decimal(0), Decimal(0)], Decimal(0), "x") == [0, 0]
    assert sum(spread_discount([Decimal("0.01")] * 3, Decimal("0.02"), "x")) == Decimal("0.02")
    with pytest.raises(AdapterError):
        spread_discount(amounts, Decimal("-1"), "x")


def test_unique_ids() -> None:
    assert unique_ids(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]


def test_samples_readme_matches_the_expectations() -> None:
    """Integration tests read samples/payloads/README.md: it must say what this file asserts."""
    rows = {}
    for text in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip().strip("`*") for c in text.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0].endswith(".json"):
            rows[cells[1]] = cells
    assert set(rows) == set(EXPECTED)
    for channel, want in EXPECTED.items():
        _, _, external, shop, skus, paid_lines, shipping, paid, province = rows[channel]
        assert external == want["external"]
        assert shop.split(" ")[0].strip("`") == want["shop"]
        assert skus == ", ".join(f"{s} x{q} ({u})" for s, q, u, _ in want["lines"])
        assert paid_lines == ", ".join(p for *_, p in want["lines"])
        assert (shipping, paid, province) == (want["shipping"], want["paid"], want["province"])
        order = adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())
        assert f"`{order.order_id}`" in (SAMPLES / "README.md").read_text(encoding="utf-8")
