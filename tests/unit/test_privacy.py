"""Masking of personal data (core/privacy.py) for logs and operator output."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.privacy import mask_id, mask_name, mask_order_dict, mask_phone, mask_text
from streams.channels import adapt
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
T0 = datetime(2026, 11, 11, tzinfo=UTC)

NAME, PHONE, STREET = "欧阳娜娜", "+86 138-1234-5678", "文三路 478 号华星时代广场 A 座 1203 室"


def make_order() -> Order:
    line = OrderLine(
        line_id="L1", sku="SKU-A", quantity=1, unit_price=Decimal("9"), paid_amount=Decimal("9")
    )
    return Order(
        order_id=make_order_id("own", "shop1", "E1"),
        channel=Channel.OWN,
        shop_id="shop1",
        external_id="E1",
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(id="buyer-7", name=NAME, email="nana.ouyang@example.com", phone=PHONE),
        address=Address(
            province="浙江省",
            province_code="ZJ",
            city="杭州市",
            district="西湖区",
            street=STREET,
            postcode="310012",
            name=NAME,
            phone=PHONE,
        ),
        lines=[line],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal("9")),
        total=Decimal("9"),
        raw={"receiver_mobile": "13812345678", "receiver_name": NAME},
    )


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# --- single fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"), [("张三", "张**"), ("  欧阳娜娜 ", "欧**"), ("John Smith", "J**"), ("", "")]
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138-1234-5678", "861****5678"),
        ("0571-8888 1234", "057****1234"),
        ("12345", "***"),
        ("#7qZ3Jz8Rk", "***"),
        ("", ""),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(("text", "masked"), [(STREET, "文三***"), ("310012", "31***"), ("", "")])
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


# No '*' in generated text: the mask's own padding could then "contain" a text like '00*'.
NO_STAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")


@settings(max_examples=200, deadline=None)
@given(st.text(NO_STAR, min_size=2, max_size=30).filter(lambda s: len(s.strip()) >= 2))
def test_masked_name_never_holds_the_name(name: str) -> None:
    masked = mask_name(name)
    assert name.strip() not in masked
    assert masked.endswith("**") and len(masked) == 3


@settings(max_examples=200, deadline=None)
@given(st.text(NO_STAR, min_size=3, max_size=60))
def test_masked_text_never_holds_the_text(text: str) -> None:
    masked = mask_text(text)
    assert text not in masked
    assert masked == text[:2] + "***"


PHONE_CHARS = st.sampled_from("0123456789+- ()")


@settings(max_examples=300, deadline=None)
@given(st.text(PHONE_CHARS, min_size=8, max_size=20).filter(lambda p: len(digits(p)) >= 8))
def test_masked_phone_always_hides_some_digits(phone: str) -> None:
    masked = mask_phone(phone)
    assert phone not in masked
    assert len(digits(masked)) < len(digits(phone))
    d = digits(phone)
    assert digits(masked) == (d[:3] + d[-4:] if len(d) >= 11 else d[-2:])


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20))
def test_short_or_digitless_phones_are_fully_hidden(phone: str) -> None:
    if len(digits(phone)) < 7:
        assert mask_phone(phone) == "***"


@pytest.mark.parametrize("phone", ["8888123", "888-8123"])
def test_seven_digit_phone_is_not_revealed(phone: str) -> None:
    assert len(digits(mask_phone(phone))) < len(digits(phone))


# --- whole orders -------------------------------------------------------------------------


def test_mask_order_dict_leaks_nothing_personal() -> None:
    order = make_order().model_dump(mode="json")
    masked = mask_order_dict(order)
    dumped = orjson.dumps(masked).decode()
    for secret in [
        NAME,
        PHONE,
        "13812345678",
        STREET,
        "华星时代广场",
        "310012",
        "nana.ouyang@example.com",
        "1234",
    ]:
        assert secret not in dumped, secret
    assert masked["address"]["name"] == "欧**"
    assert masked["address"]["phone"] == "861****5678"
    assert masked["buyer"]["email"] == "na***"
    assert masked["raw"] == {"masked": True}


def test_mask_order_dict_keeps_region_and_business_fields() -> None:
    order = make_order().model_dump(mode="json")
    masked = mask_order_dict(order)
    for key in ["province", "province_code", "city", "district", "country"]:
        assert masked["address"][key] == order["address"][key], key
    for key in ["order_id", "channel", "shop_id", "external_id", "lines", "payment", "total"]:
        assert masked[key] == order[key], key
    # The buyer id is personal (a Taobao nick, a JD pin): a stable hint, not the id.
    assert masked["buyer"]["id"] == mask_id("buyer-7")
    assert masked["buyer"]["id"].startswith("b***#") and "buyer-7" not in masked["buyer"]["id"]


def test_mask_order_dict_does_not_touch_its_input() -> None:
    order = make_order().model_dump(mode="json")
    snapshot = orjson.dumps(order)
    mask_order_dict(order)
    assert orjson.dumps(order) == snapshot


def test_mask_order_dict_with_empty_and_missing_parts() -> None:
    assert mask_order_dict({"order_id": "O1"}) == {
        "order_id": "O1",
        "address": {},
        "buyer": {},
        "raw": {},
    }
    masked = mask_order_dict({"address": {"name": "", "phone": ""}, "buyer": None, "raw": {}})
    assert masked["address"] == {"name": "", "phone": ""}
    assert masked["raw"] == {}


@pytest.mark.parametrize("channel", ["taobao", "jd", "douyin", "shopify", "amazon", "own"])
def test_sample_orders_are_masked(channel: str) -> None:
    order = adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())
    data: dict[str, Any] = order.model_dump(mode="json")
    masked = mask_order_dict(data)
    dumped = orjson.dumps(masked).decode()
    address = order.address
    for secret in (
        address.phone,
        address.street,
        order.buyer.phone,
        order.buyer.email,
        order.buyer.id,
        order.payment.transaction_id,
    ):
        if len(secret) >= 3:
            assert secret not in dumped, secret
    if len(address.name.strip()) >= 2:
        assert address.name not in dumped
    assert masked["address"]["province_code"] == address.province_code
    assert masked["address"]["city"] == address.city


# --- buyer ids and remarks (issue 13, item 11) ----------------------------------------------

NICK, REMARK_PHONE, REMARK_EMAIL = "tb_nana_1988", "13912345678", "nana.private@example.org"


def order_with_remarks() -> Order:
    order = make_order()
    return order.model_copy(
        update={
            "buyer": order.buyer.model_copy(update={"id": NICK, "name": NICK}),
            "payment": order.payment.model_copy(update={"transaction_id": "2026111122001"}),
            "buyer_remark": f"周末送, call {REMARK_PHONE} or mail {REMARK_EMAIL}, 'ring twice'",
            "seller_remark": f"VIP {NICK}: 收件人 {NAME}, {STREET}",
        }
    )


def test_buyer_id_nick_and_remarks_are_masked_in_the_shown_order() -> None:
    """Before the fix buyer.id and both remarks were shown in clear to every role."""
    masked = mask_order_dict(order_with_remarks().model_dump(mode="json"))
    dumped = orjson.dumps(masked).decode()
    for secret in (
        NICK,
        REMARK_PHONE,
        REMARK_EMAIL,
        "ring twice",
        NAME,
        STREET,
        "2026111122001",
        "nana",
    ):
        assert secret not in dumped, secret
    # what the buyer asked for stays readable; the id keeps a stable, one-way hint
    assert masked["buyer_remark"].startswith("周末送, call <digits> or mail <email>")
    assert masked["buyer"]["id"] == mask_id(NICK) == masked["buyer"]["id"]
    assert masked["buyer"]["id"] != mask_id("tb_nana_1989")


def test_buyer_id_hint_is_stable_and_short() -> None:
    assert mask_id("jd_pin_42") == mask_id(" jd_pin_42 ") and len(mask_id("x" * 256)) <= 12
    assert mask_id("") == ""


@pytest.mark.parametrize("channel", ["taobao", "jd", "douyin", "shopify", "amazon", "own"])
def test_views_mask_every_channel_buyer_id(channel: str) -> None:
    """Taobao falls back to buyer_nick, JD to pin, Douyin to the open id: none shown."""
    order = adapt(channel, (SAMPLES / f"{channel}.json").read_bytes())
    dumped = orjson.dumps(mask_order_dict(order.model_dump(mode="json"))).decode()
    if len(order.buyer.id) >= 3:
        assert order.buyer.id not in dumped
