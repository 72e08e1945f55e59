"""The platforms' own after-sales in their native shapes (samples/payloads/aftersales/): each
sample becomes the request its platform type says, on the order its channel's adapter makes
of the sample order, with the adapter's line ids; closed ones ask nothing; broken ones are DLQ
records with a specific reason and no personal data; raw keys put them on their order's
partition."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.channels import adapt
from streams.channels.aftersale import ClosedAtChannel
from streams.channels.base import AdapterContext
from streams.keys import channel_order_key
from streams.messages import AfterSalesKind, AfterSalesRequest, DlqReason, DlqRecord
from streams.models import Order
from streams.normalise import KIND_HEADER, SHOP_HEADER, RawInput, normalise

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
K = AfterSalesKind
CHANNELS = ["taobao", "jd", "douyin", "shopify", "amazon"]


def aftersales(channel: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(
        (SAMPLES / "aftersales" / f"{channel}.json").read_text(encoding="utf-8")
    )
    return data


def order_of(channel: str) -> Order:
    return adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())


def parsed(
    channel: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> AfterSalesRequest | ClosedAtChannel | DlqRecord | Order:
    value = json.dumps(payload, ensure_ascii=False).encode()
    raw = RawInput(channel, value, f"oms.raw.{channel}", 0, 1, "k", headers or {})
    return normalise(raw, AdapterContext())


def request(channel: str, index: int) -> AfterSalesRequest:
    out = parsed(channel, aftersales(channel)[index])
    assert isinstance(out, AfterSalesRequest), out
    return out


# (channel, sample index) -> kind, line ids, channel skus, amount
EXPECTED: dict[tuple[str, int], tuple[K, list[str], list[str], str | None]] = {
    ("taobao", 0): (K.CANCEL, ["4012345678902234567"], [], None),
    ("taobao", 1): (K.REFUND, ["4012345678903234567"], [], "20.00"),
    ("taobao", 2): (K.RETURN, ["4012345678902234567"], [], None),
    ("jd", 0): (K.CANCEL, [], [], None),
    ("jd", 1): (K.RETURN, ["100023456789"], [], None),
    ("jd", 2): (K.EXCHANGE, ["100087654321"], [], None),
    ("douyin", 0): (K.CANCEL, [], [], None),
    ("douyin", 1): (K.REFUND, ["6921234567890123458"], [], "39.90"),  # 3990 fen
    ("douyin", 2): (K.RETURN, ["6921234567890123457"], [], None),
    ("shopify", 0): (K.CANCEL, ["13012345678901", "13012345678902"], [], None),
    ("shopify", 1): (K.REFUND, [], [], "30.00"),
    ("shopify", 2): (K.RETURN, ["13012345678901"], [], None),
    ("amazon", 0): (K.REFUND, [], ["SKU-CHARGER-65W"], "40.0"),
    ("amazon", 1): (K.RETURN, [], ["SKU-PHONE-X1"], None),
}
CLOSED = {("taobao", 3), ("jd", 3), ("douyin", 3), ("shopify", 3), ("amazon", 2)}


@pytest.mark.parametrize(("channel", "index"), sorted(EXPECTED))
def test_each_sample_is_the_request_its_platform_type_says(channel: str, index: int) -> None:
    req = request(channel, index)
    kind, lines, skus, amount = EXPECTED[(channel, index)]
    order = order_of(channel)
    assert req.order_id == order.order_id  # the adapter's shop and external id
    assert (req.kind, req.line_ids, req.channel_skus) == (kind, lines, skus)
    assert req.amount == (Decimal(amount) if amount else None)
    assert set(req.line_ids) <= {ln.line_id for ln in order.lines}
    assert set(req.channel_skus) <= {ln.channel_sku for ln in order.lines}
    assert req.requested_by == "channel" and req.at.tzinfo is not None
    assert req.request_id.startswith(f"{channel}-")


@pytest.mark.parametrize(("channel", "index"), sorted(CLOSED))
def test_closed_and_refused_after_sales_ask_nothing(channel: str, index: int) -> None:
    out = parsed(channel, aftersales(channel)[index])
    assert isinstance(out, ClosedAtChannel)
    assert out.order_id == order_of(channel).order_id


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_repush_and_a_later_status_are_the_same_request(channel: str) -> None:
    again = parsed(channel, copy.deepcopy(aftersales(channel)[0]))
    assert isinstance(again, AfterSalesRequest)
    assert again.request_id == request(channel, 0).request_id


def test_a_later_taobao_status_keeps_the_request_id() -> None:
    agreed = {**aftersales("taobao")[1], "status": "WAIT_SELLER_AGREE"}
    out = parsed("taobao", agreed)
    assert isinstance(out, AfterSalesRequest)
    assert out.request_id == request("taobao", 1).request_id


@pytest.mark.parametrize("channel", CHANNELS)
def test_orders_stay_orders(channel: str) -> None:
    order = json.loads((SAMPLES / f"{channel}.json").read_bytes())
    assert isinstance(parsed(channel, order), Order)


@pytest.mark.parametrize("channel", CHANNELS)
def test_raw_keys_are_the_order_number(channel: str) -> None:
    """Each after-sale lands on its order's partition: the raw topic is keyed by the order."""
    order = json.loads((SAMPLES / f"{channel}.json").read_bytes())
    for payload in aftersales(channel):
        assert channel_order_key(channel, payload) == channel_order_key(channel, order)


def test_the_kind_header_decides() -> None:
    refund = aftersales("taobao")[1]
    as_order = parsed("taobao", refund, {KIND_HEADER: "order"})
    assert isinstance(as_order, DlqRecord)  # read as a trade: its refund status is no trade's
    assert as_order.detail == "status: unknown status"
    trade = json.loads((SAMPLES / "taobao.json").read_bytes())
    as_aftersale = parsed("taobao", trade, {KIND_HEADER: "aftersale"})
    assert isinstance(as_aftersale, DlqRecord) and "refund_id" in as_aftersale.detail
    unknown = parsed("taobao", refund, {KIND_HEADER: "bogus"})
    assert isinstance(unknown, DlqRecord) and unknown.reason is DlqReason.INVALID_FIELD
    own = parsed("own", {"x": 1}, {KIND_HEADER: "aftersale"})
    assert isinstance(own, DlqRecord) and "no after-sales" in own.detail


def test_the_shop_header_names_the_shopify_shop() -> None:
    out = parsed("shopify", aftersales("shopify")[1], {SHOP_HEADER: "acme.myshopify.com"})
    order = adapt(
        "shopify",
        (SAMPLES / "shopify.json").read_bytes(),
        AdapterContext(shop_id="acme.myshopify.com"),
    )
    assert isinstance(out, AfterSalesRequest) and out.order_id == order.order_id


BROKEN: list[tuple[str, int, dict[str, Any], DlqReason, str]] = [
    ("taobao", 1, {"status": "SOMETHING_NEW"}, DlqReason.INVALID_FIELD, "status: unknown"),
    ("taobao", 1, {"tid": None}, DlqReason.MISSING_FIELD, "tid"),
    ("taobao", 1, {"refund_fee": "-5"}, DlqReason.INVALID_FIELD, "refund_fee"),
    ("taobao", 1, {"has_good_return": "maybe"}, DlqReason.INVALID_FIELD, "has_good_return"),
    ("jd", 1, {"customerExpect": 30}, DlqReason.INVALID_FIELD, "customerExpect"),
    ("jd", 0, {"status": 99}, DlqReason.INVALID_FIELD, "status"),
    ("jd", 0, {"applyTime": None}, DlqReason.MISSING_FIELD, "applyTime"),
    ("douyin", 1, {"aftersale_type": 9}, DlqReason.INVALID_FIELD, "aftersale_type"),
    ("douyin", 1, {"refund_amount": 12.5}, DlqReason.INVALID_FIELD, "refund_amount"),
    ("douyin", 1, {"p_id": [1]}, DlqReason.INVALID_FIELD, "p_id"),
    (
        "shopify",
        2,
        {"refund_line_items": [{"line_item_id": None}]},
        DlqReason.MISSING_FIELD,
        "line_item_id",
    ),
    ("shopify", 1, {"transactions": "lots"}, DlqReason.INVALID_FIELD, "transactions"),
    ("amazon", 1, {"return_request_status": "Lost"}, DlqReason.INVALID_FIELD, "status"),
    ("amazon", 1, {"item_details": []}, DlqReason.MISSING_FIELD, "item_details"),
]


@pytest.mark.parametrize(("channel", "index", "change", "reason", "detail"), BROKEN)
def test_a_broken_after_sale_is_a_dlq_record_that_names_the_field(
    channel: str, index: int, change: dict[str, Any], reason: DlqReason, detail: str
) -> None:
    payload = {**aftersales(channel)[index], **change}
    out = parsed(channel, payload)
    assert isinstance(out, DlqRecord), out
    assert out.reason is reason and detail in out.detail
    for pii in ("王**", "139****5678", "t**3", "jd_4f9c2a"):
        assert pii not in out.detail


def test_a_douyin_push_with_broken_data_text_is_dead_lettered() -> None:
    message = {"tag": "200", "msg_id": "1", "data": '{"aftersale_id": 1, "p_id": '}
    out = parsed("douyin", message)
    assert isinstance(out, DlqRecord) and out.reason is DlqReason.MALFORMED_JSON


def test_amazon_refund_without_money_back_is_refused() -> None:
    event = copy.deepcopy(aftersales("amazon")[0])
    charge = event["ShipmentItemAdjustmentList"][0]["ItemChargeAdjustmentList"][0]
    charge["ChargeAmount"]["CurrencyAmount"] = 12.0
    out = parsed("amazon", event)
    assert isinstance(out, DlqRecord) and "no money back" in out.detail


def refund_kind(channel: str, payload: dict[str, Any]) -> bool:
    raw = RawInput(channel, json.dumps(payload).encode(), f"oms.raw.{channel}", 0, 1, "k", {})
    out = normalise(raw, AdapterContext())
    return isinstance(out, AfterSalesRequest) and out.kind is K.REFUND


@pytest.mark.parametrize(
    ("channel", "field"), [("taobao", "refund_fee"), ("douyin", "refund_amount")]
)
def test_a_refund_of_nothing_is_dead_lettered(channel: str, field: str) -> None:
    """Found by the after-sale fuzzer: a zero refund became a refund request of 0.00."""
    samples = json.loads((SAMPLES / "aftersales" / f"{channel}.json").read_text(encoding="utf-8"))
    payload = next(p for p in samples if refund_kind(channel, p))
    if "data" in payload:  # Douyin's push envelope: the message as JSON text
        data = json.loads(payload["data"])
        data[field] = 0
        payload["data"] = json.dumps(data)
    else:
        payload[field] = 0
    raw = RawInput(channel, json.dumps(payload).encode(), f"oms.raw.{channel}", 0, 1, "k", {})
    out = normalise(raw, AdapterContext())
    assert isinstance(out, DlqRecord) and out.reason is DlqReason.INVALID_FIELD
    assert out.detail == "refund amount: must be more than 0"
