"""Audit rules (order/audit.py): each rule on its own (allowed, triggered, switched off, its
action), then the order in which they speak, then properties over any valid order."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order.audit import (
    DEFAULT_RULES,
    PASS,
    REQUIRED_ADDRESS_PARTS,
    RULES,
    AuditContext,
    AuditResult,
    AuditRules,
    Velocity,
    Verdict,
    audit,
    check_address,
    check_address_plausible,
    check_blacklist,
    check_channel_status,
    check_cod,
    check_high_value,
    check_payment,
    check_phone_plausible,
    check_price_below_list,
    check_quantities,
    check_remark,
    check_scalper,
    check_skus,
    is_plausible_phone,
    normalise_phone,
    normalise_text,
)
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

T0 = datetime(2026, 11, 11, tzinfo=UTC)
SKUS = frozenset({"SKU-A", "SKU-B"})
CTX = AuditContext(known_skus=SKUS, max_line_quantity=10)


DOUYIN_PHONE = "#7qZ3Jz8Rk2pW#kP1kbYq3hVq0Xx0VwQm2tA==*CgwIARCtHBiqICgDMAESHghdpf1nZ0#1##"
DOUYIN_STREET = "玉林街道##Gx7Vv1cWq2Lk9pZ3rT8yB0n4mQ==*CgwIARCtHBiqICgDMAESHgh#1##"


def make_order(
    lines: dict[str, int] | None = None,
    *,
    payment: PaymentStatus = PaymentStatus.PAID,
    unit_price: Decimal = Decimal("10.00"),
    currency: str = "CNY",
    remark: str = "",
    buyer: Buyer | None = None,
    channel_status: ChannelStatus = ChannelStatus.PAID,
    **address: Any,
) -> Order:
    order_lines = [
        OrderLine(
            line_id=f"L{i}",
            sku=sku,
            quantity=qty,
            unit_price=unit_price,
            paid_amount=unit_price * qty,
        )
        for i, (sku, qty) in enumerate((lines or {"SKU-A": 1}).items(), start=1)
    ]
    total = sum((ln.paid_amount for ln in order_lines), Decimal("0"))
    addr: dict[str, Any] = {
        "province": "浙江省",
        "province_code": "ZJ",
        "city": "杭州市",
        "street": "文三路 1 号",
        "name": "张三",
        "phone": "13800000000",
        **address,
    }
    return Order(
        order_id=make_order_id("own", "shop1", "E1"),
        channel=Channel.OWN,
        shop_id="shop1",
        external_id="E1",
        channel_status=channel_status,
        created_at=T0,
        updated_at=T0,
        currency=currency,
        buyer=buyer or Buyer(id="b1", name="张三"),
        address=Address(**addr),
        lines=order_lines,
        payment=Payment(status=payment, paid_total=total),
        total=total,
        buyer_remark=remark,
    )


def with_line(order: Order, line_id: str, **changes: Any) -> Order:
    """The order with one line changed (totals left as they were: rules read what they read)."""
    lines = [ln.model_copy(update=changes) if ln.line_id == line_id else ln for ln in order.lines]
    return order.model_copy(update={"lines": lines})


def with_quantity(order: Order, line_id: str, quantity: int) -> Order:
    """The model refuses quantity <= 0, so a rule guarding against it is reached only by an
    order built without validation (e.g. a record written by an older version)."""
    return with_line(order, line_id, quantity=quantity)


def ctx_with(velocity: dict[str, Velocity] | None = None, **sections: Any) -> AuditContext:
    """CTX with rule sections set as config/audit.toml would set them (others built-in)."""
    rules = AuditRules.model_validate(sections)
    return AuditContext(SKUS, 10, rules=rules, velocity=velocity or {})


def only(result: AuditResult | None) -> tuple[Verdict, str] | None:
    return None if result is None else (result.verdict, result.reason)


HOLD, REJECT = Verdict.HOLD, Verdict.REJECT


# --- a clean order passes every rule -------------------------------------------------------


def test_clean_order_passes() -> None:
    order = make_order({"SKU-A": 2, "SKU-B": 10})
    assert audit(order, CTX) == PASS
    for rule in RULES:
        assert rule(order, CTX) is None, rule.__name__


def test_empty_rule_list_passes_anything() -> None:
    order = make_order(payment=PaymentStatus.REFUNDED, name="")
    assert audit(order, CTX, rules=()) == PASS


# --- quantities ---------------------------------------------------------------------------


@pytest.mark.parametrize("quantity", [0, -1, -1000])
def test_non_positive_quantity_is_rejected(quantity: int) -> None:
    order = with_quantity(make_order({"SKU-A": 1, "SKU-B": 1}), "L2", quantity)
    result = check_quantities(order, CTX)
    assert result is not None
    assert result.verdict is Verdict.REJECT
    assert result.reason == "non_positive_quantity"
    assert "L2" in result.detail and "L1" not in result.detail
    assert audit(order, CTX) == result


def test_quantity_at_the_limit_passes_and_one_above_is_held() -> None:
    assert check_quantities(make_order({"SKU-A": 10}), CTX) is None
    result = check_quantities(make_order({"SKU-A": 3, "SKU-B": 11}), CTX)
    assert result is not None
    assert result.verdict is Verdict.HOLD
    assert result.reason == "implausible_quantity"
    assert "L2" in result.detail and "L1" not in result.detail
    assert "10" in result.detail


def test_default_max_line_quantity() -> None:
    ctx = AuditContext(known_skus=SKUS)
    assert ctx.line_limit == 999
    assert audit(make_order({"SKU-A": 999}), ctx) == PASS
    assert audit(make_order({"SKU-A": 1000}), ctx).reason == "implausible_quantity"


def test_the_rules_limit_applies_unless_the_caller_passes_one() -> None:
    rules = AuditRules.model_validate({"quantity": {"max_line_quantity": 20}})
    from_rules = AuditContext(SKUS, rules=rules)
    explicit = AuditContext(SKUS, 10, rules=rules)  # as the worker passes its setting
    assert (from_rules.line_limit, explicit.line_limit) == (20, 10)
    order = make_order({"SKU-A": 15})
    assert check_quantities(order, from_rules) is None
    held = check_quantities(order, explicit)
    assert held is not None and held.reason == "implausible_quantity"


def test_non_positive_beats_implausible_within_the_quantity_rule() -> None:
    order = with_quantity(make_order({"SKU-A": 50, "SKU-B": 1}), "L2", 0)
    result = check_quantities(order, CTX)
    assert result is not None and result.verdict is Verdict.REJECT


# --- payment ------------------------------------------------------------------------------


def test_unpaid_is_held() -> None:
    result = check_payment(make_order(payment=PaymentStatus.UNPAID), CTX)
    assert result is not None
    assert (result.verdict, result.reason) == (Verdict.HOLD, "unpaid")


def test_refunded_is_rejected() -> None:
    result = check_payment(make_order(payment=PaymentStatus.REFUNDED), CTX)
    assert result is not None
    assert (result.verdict, result.reason) == (Verdict.REJECT, "refunded")


@pytest.mark.parametrize(
    "status", [PaymentStatus.PAID, PaymentStatus.COD, PaymentStatus.PARTIALLY_REFUNDED]
)
def test_shippable_payment_statuses_pass(status: PaymentStatus) -> None:
    order = make_order(payment=status)
    assert check_payment(order, CTX) is None
    assert audit(order, CTX) == PASS


# --- address ------------------------------------------------------------------------------


@pytest.mark.parametrize("part", REQUIRED_ADDRESS_PARTS)
@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_each_missing_address_part_holds(part: str, blank: str) -> None:
    order = make_order(**{part: blank})
    result = check_address(order, CTX)
    assert result is not None
    assert (result.verdict, result.reason) == (Verdict.HOLD, "address_incomplete")
    assert result.detail == f"missing {part}"
    assert audit(order, CTX) == result


def test_every_missing_part_is_listed() -> None:
    order = make_order(name="", city="", phone="")
    result = check_address(order, CTX)
    assert result is not None
    assert result.detail == "missing name, phone, city"


def test_required_address_parts() -> None:
    assert set(REQUIRED_ADDRESS_PARTS) == {"name", "phone", "province", "city", "street"}


@pytest.mark.parametrize("part", ["district", "postcode", "province_code"])
def test_optional_address_parts_may_be_empty(part: str) -> None:
    assert check_address(make_order(**{part: ""}), CTX) is None


# --- skus ---------------------------------------------------------------------------------


def test_unknown_sku_is_held_and_named_once_sorted() -> None:
    order = make_order({"SKU-Z": 1, "SKU-A": 1, "SKU-C": 2})
    result = check_skus(order, CTX)
    assert result is not None
    assert (result.verdict, result.reason) == (Verdict.HOLD, "unknown_sku")
    assert result.detail == "no stock record for SKU-C, SKU-Z"
    assert "SKU-A" not in result.detail


def test_no_known_skus_holds_everything() -> None:
    ctx = AuditContext(known_skus=frozenset())
    assert audit(make_order({"SKU-A": 1}), ctx).reason == "unknown_sku"


# --- rule order ---------------------------------------------------------------------------


def test_refund_reject_beats_address_and_sku_holds() -> None:
    order = make_order({"SKU-Z": 1}, payment=PaymentStatus.REFUNDED, street="")
    result = audit(order, CTX)
    assert (result.verdict, result.reason) == (Verdict.REJECT, "refunded")


def test_non_positive_quantity_reject_beats_every_hold() -> None:
    order = with_quantity(make_order({"SKU-Z": 1}, payment=PaymentStatus.UNPAID, name=""), "L1", 0)
    result = audit(order, CTX)
    assert (result.verdict, result.reason) == (Verdict.REJECT, "non_positive_quantity")


def test_holds_speak_in_rule_order() -> None:
    both = make_order({"SKU-Z": 1}, payment=PaymentStatus.UNPAID, name="")
    assert audit(both, CTX).reason == "unpaid"
    assert audit(make_order({"SKU-Z": 1}, name=""), CTX).reason == "address_incomplete"
    assert audit(make_order({"SKU-Z": 1}), CTX).reason == "unknown_sku"


def test_first_hold_speaks_unless_any_rule_rejects() -> None:
    def quiet(order: Order, ctx: AuditContext) -> AuditResult | None:
        return None

    def hold_a(order: Order, ctx: AuditContext) -> AuditResult | None:
        return AuditResult(Verdict.HOLD, "a")

    def hold_b(order: Order, ctx: AuditContext) -> AuditResult | None:
        return AuditResult(Verdict.HOLD, "b")

    def reject(order: Order, ctx: AuditContext) -> AuditResult | None:
        return AuditResult(Verdict.REJECT, "final")

    assert audit(make_order(), CTX, rules=(quiet, hold_a, hold_b)).reason == "a"
    assert audit(make_order(), CTX, rules=(quiet, hold_a, reject)).reason == "final"
    assert audit(make_order(), CTX, rules=(quiet,)).verdict is Verdict.PASS


def test_refund_reject_beats_implausible_quantity_hold() -> None:
    order = make_order({"SKU-A": 11}, payment=PaymentStatus.REFUNDED)
    result = audit(order, CTX)
    assert (result.verdict, result.reason) == (Verdict.REJECT, "refunded")


def test_channel_status_shipped_or_completed_is_held() -> None:
    for status in (ChannelStatus.SHIPPED, ChannelStatus.COMPLETED):
        result = check_channel_status(make_order(channel_status=status), CTX)
        assert only(result) == (HOLD, "shipped_at_channel")
    assert check_channel_status(make_order(channel_status=ChannelStatus.PAID), CTX) is None


# --- blacklist ----------------------------------------------------------------------------

BLACKLIST = {
    "buyer_ids": ["bad-buyer"],
    "phones": ["+86 130 0000 0666"],
    "addresses": ["文三路１号"],  # full-width digit: compared normalised
}


@pytest.mark.parametrize(
    "phone", ["13000000666", "+86 130-0000-0666", "008613000000666", "(130) 0000 0666"]
)
def test_blacklisted_phone_is_rejected_however_written(phone: str) -> None:
    order = make_order(phone=phone, street="解放路 88 号")
    ctx = ctx_with(blacklist=BLACKLIST)
    result = check_blacklist(order, ctx)
    assert only(result) == (REJECT, "blacklisted")
    assert result is not None and "0666" not in result.detail  # never the number itself
    assert audit(order, ctx) == result


def test_blacklisted_buyer_phone_is_rejected() -> None:
    order = make_order(buyer=Buyer(id="b1", phone="130 0000 0666"), street="解放路 88 号")
    assert only(check_blacklist(order, ctx_with(blacklist=BLACKLIST))) == (REJECT, "blacklisted")


@pytest.mark.parametrize("phone", ["130****0666", "13000000667", DOUYIN_PHONE])
def test_masked_encrypted_and_other_phones_are_not_blacklisted(phone: str) -> None:
    order = make_order(phone=phone, street="解放路 88 号")
    assert check_blacklist(order, ctx_with(blacklist=BLACKLIST)) is None


def test_blacklisted_buyer_id_matches_exactly() -> None:
    ctx = ctx_with(blacklist=BLACKLIST)
    bad = make_order(buyer=Buyer(id="bad-buyer"), street="解放路 88 号")
    result = check_blacklist(bad, ctx)
    assert only(result) == (REJECT, "blacklisted")
    assert result is not None and "bad-buyer" not in result.detail
    assert check_blacklist(make_order(buyer=Buyer(id="bad-buyer-2"), street="解放路"), ctx) is None


@pytest.mark.parametrize("street", ["文三路1号", "浙江 文三路 1 号 301 室", "文三路１号B座"])
def test_blacklisted_street_matches_within_ignoring_spacing_and_width(street: str) -> None:
    result = check_blacklist(make_order(street=street), ctx_with(blacklist=BLACKLIST))
    assert only(result) == (REJECT, "blacklisted")


@pytest.mark.parametrize("street", ["文三路 11 号", "文三路 2 号", "文二路1号"])
def test_other_streets_are_not_blacklisted(street: str) -> None:
    assert check_blacklist(make_order(street=street), ctx_with(blacklist=BLACKLIST)) is None


def test_blacklist_action_and_switch() -> None:
    order = make_order(phone="13000000666")
    held = check_blacklist(order, ctx_with(blacklist={**BLACKLIST, "action": "hold"}))
    assert only(held) == (HOLD, "blacklisted")
    assert check_blacklist(order, ctx_with(blacklist={**BLACKLIST, "enabled": False})) is None


def test_default_rules_blacklist_the_demo_phone() -> None:
    assert audit(make_order(phone="13000000666"), CTX).reason == "blacklisted"
    assert audit(make_order(phone="13000000666"), ctx_with()) == PASS  # built-in: empty list


# --- address and phone plausibility -------------------------------------------------------


@pytest.mark.parametrize(
    ("street", "detail"),
    [
        ("1号", "street has 2 characters, at least 4 expected"),
        ("- - -", "street has 0 characters, at least 4 expected"),
        ("123456", "street has no letters, only digits"),
    ],
)
def test_implausible_street_is_held(street: str, detail: str) -> None:
    order = make_order(street=street)
    result = check_address_plausible(order, CTX)
    assert result == AuditResult(HOLD, "address_implausible", detail)
    assert audit(order, CTX) == result


@pytest.mark.parametrize(
    "street", ["文三路1号", "1 Main St", DOUYIN_STREET, "文**路**号", "西溪街道文三路90号"]
)
def test_plausible_masked_or_encrypted_streets_pass(street: str) -> None:
    assert check_address_plausible(make_order(street=street), CTX) is None


def test_street_rule_settings() -> None:
    short = make_order(street="1号")
    three, two = ({"min_street_chars": n} for n in (3, 2))
    held = check_address_plausible(short, ctx_with(address_implausible=three))
    assert only(held) == (HOLD, "address_implausible")
    assert check_address_plausible(short, ctx_with(address_implausible=two)) is None
    rejecting = ctx_with(address_implausible={"action": "reject"})
    assert only(check_address_plausible(short, rejecting)) == (REJECT, "address_implausible")
    off = ctx_with(address_implausible={"enabled": False})
    assert check_address_plausible(short, off) is None


def test_an_empty_street_is_incomplete_not_implausible() -> None:
    order = make_order(street="", phone="")
    assert check_address_plausible(order, CTX) is None
    assert check_phone_plausible(order, CTX) is None
    assert audit(order, CTX).reason == "address_incomplete"


@pytest.mark.parametrize(
    "phone",
    [
        "13800000000",
        "+86 138 0000 0000",
        "+8613612345678",
        "0086-13800000000",
        "0571-88888888",
        "(010) 1234 5678",
        "138-0013-8000",
        "13800138000-1234",  # platform privacy number with extension
        "13800138000转1234",
        "１３８００１３８０００",  # full-width
    ],
)
def test_cn_phones_that_are_plausible(phone: str) -> None:
    assert is_plausible_phone(phone, "CN")
    assert check_phone_plausible(make_order(phone=phone), CTX) is None


@pytest.mark.parametrize(
    "phone", ["12345678901", "1380000000", "138000000001", "23800000000", "110", "call me"]
)
def test_cn_phones_that_are_implausible_are_held(phone: str) -> None:
    order = make_order(phone=phone)
    result = check_phone_plausible(order, CTX)
    assert result == AuditResult(
        HOLD, "phone_implausible", "ship-to phone is not a plausible CN number"
    )
    assert audit(order, CTX) == result


@pytest.mark.parametrize(
    "phone",
    ["138****1234", "1*********8", DOUYIN_PHONE, "~AgAAAAAwMDE5NTIzMTU2MDYxNTc3OA==~1~~"],
)
def test_masked_and_encrypted_phones_pass(phone: str) -> None:
    assert check_phone_plausible(make_order(phone=phone), CTX) is None
    assert normalise_phone(phone) == ""  # and are never compared


def test_foreign_phones_need_6_to_15_digits() -> None:
    assert check_phone_plausible(make_order(phone="+1 415 555 0100", country="US"), CTX) is None
    result = check_phone_plausible(make_order(phone="12", country="US"), CTX)
    assert only(result) == (HOLD, "phone_implausible")


def test_phone_rule_action_and_switch() -> None:
    order = make_order(phone="123")
    rejecting = ctx_with(phone_implausible={"action": "reject"})
    assert only(check_phone_plausible(order, rejecting)) == (REJECT, "phone_implausible")
    assert check_phone_plausible(order, ctx_with(phone_implausible={"enabled": False})) is None


# --- money: cash on delivery and high value -----------------------------------------------


def priced(amount: str, **kw: Any) -> Order:
    return make_order({"SKU-A": 1}, unit_price=Decimal(amount), **kw)


def test_cod_above_the_limit_is_held() -> None:
    result = check_cod(priced("2000.01", payment=PaymentStatus.COD), CTX)
    assert only(result) == (HOLD, "cod")
    assert result is not None and "2000.01 CNY" in result.detail


@pytest.mark.parametrize(
    "order",
    [
        priced("2000.00", payment=PaymentStatus.COD),  # at the limit: not above it
        priced("5000.00", payment=PaymentStatus.PAID),  # not cash on delivery
        priced("90000.00", payment=PaymentStatus.COD, currency="USD"),  # no USD limit
    ],
)
def test_cod_within_limits_passes(order: Order) -> None:
    assert check_cod(order, CTX) is None


def test_cod_rule_settings() -> None:
    order = priced("600.00", payment=PaymentStatus.COD)
    assert check_cod(order, CTX) is None
    strict = ctx_with(cod={"max_amount": {"CNY": "500.00"}, "action": "reject"})
    assert only(check_cod(order, strict)) == (REJECT, "cod")
    off = ctx_with(cod={"max_amount": {"CNY": "500.00"}, "enabled": False})
    assert check_cod(order, off) is None


@pytest.mark.parametrize(
    ("amount", "currency", "held"),
    [
        ("20000.00", "CNY", True),  # at the threshold
        ("19999.99", "CNY", False),
        ("3000.00", "USD", True),
        ("2999.99", "USD", False),
        ("3000.00", "usd", True),  # compared by code, whatever its case
        ("900000.00", "EUR", False),  # no EUR threshold
    ],
)
def test_high_value_is_compared_per_currency(amount: str, currency: str, held: bool) -> None:
    result = check_high_value(priced(amount, currency=currency), CTX)
    assert only(result) == ((HOLD, "high_value") if held else None)


def test_high_value_rule_settings() -> None:
    order = priced("500.00")
    low = {"thresholds": {"CNY": "500"}}
    assert only(check_high_value(order, ctx_with(high_value=low))) == (HOLD, "high_value")
    reject = ctx_with(high_value={**low, "action": "reject"})
    assert only(check_high_value(order, reject)) == (REJECT, "high_value")
    assert check_high_value(order, ctx_with(high_value={**low, "enabled": False})) is None


# --- scalper ------------------------------------------------------------------------------


ORDER_ID = make_order().order_id


@pytest.mark.parametrize(
    ("velocity", "detail"),
    [
        (Velocity(buyer=6), "6 orders from the buyer within 3600s"),
        (Velocity(address=11), "11 orders to the address within 3600s"),
        (Velocity(buyer=6, address=11), "6 orders from the buyer within 3600s"),
    ],
)
def test_too_many_recent_orders_are_held(velocity: Velocity, detail: str) -> None:
    ctx = ctx_with({ORDER_ID: velocity})
    result = check_scalper(make_order(), ctx)
    assert result == AuditResult(HOLD, "scalper_suspected", detail)
    assert audit(make_order(), ctx) == result


@pytest.mark.parametrize(
    "velocity", [Velocity(), Velocity(buyer=5, address=10), Velocity(buyer=1, address=1)]
)
def test_orders_within_the_limits_pass(velocity: Velocity) -> None:
    assert check_scalper(make_order(), ctx_with({ORDER_ID: velocity})) is None


def test_an_order_without_counts_is_not_judged() -> None:
    assert check_scalper(make_order(), ctx_with({"other-order": Velocity(buyer=99)})) is None


def test_scalper_rule_settings() -> None:
    busy = {ORDER_ID: Velocity(buyer=3)}
    tight = {"max_orders_per_buyer": 2}
    assert only(check_scalper(make_order(), ctx_with(busy, scalper=tight))) == (
        HOLD,
        "scalper_suspected",
    )
    reject = ctx_with(busy, scalper={**tight, "action": "reject"})
    assert only(check_scalper(make_order(), reject)) == (REJECT, "scalper_suspected")
    assert check_scalper(make_order(), ctx_with(busy, scalper={**tight, "enabled": False})) is None


# --- price below list ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "paid", "held"),
    [
        (1, "2.99", True),  # below 30% of 10.00
        (1, "3.00", False),  # exactly the ratio
        (2, "5.99", True),  # the list price of the whole line: 20.00
        (2, "6.00", False),
    ],
)
def test_a_line_paid_far_below_list_is_held(quantity: int, paid: str, held: bool) -> None:
    order = with_line(make_order({"SKU-A": quantity, "SKU-B": 1}), "L1", paid_amount=Decimal(paid))
    result = check_price_below_list(order, CTX)
    if held:
        assert result == AuditResult(
            HOLD, "price_below_list", "lines L1 paid below 30% of list price"
        )
    else:
        assert result is None


def test_gifts_and_lines_without_list_price_are_not_judged() -> None:
    order = make_order({"SKU-A": 1, "SKU-B": 1})
    gift = with_line(order, "L1", paid_amount=Decimal("0"), is_gift=True)
    free = with_line(order, "L2", unit_price=Decimal("0"), paid_amount=Decimal("0"))
    assert check_price_below_list(gift, CTX) is None
    assert check_price_below_list(free, CTX) is None


def test_price_rule_settings() -> None:
    order = with_line(make_order(), "L1", paid_amount=Decimal("4.99"))
    assert check_price_below_list(order, CTX) is None
    half = {"min_paid_ratio": "0.5"}
    assert only(check_price_below_list(order, ctx_with(price_below_list=half))) == (
        HOLD,
        "price_below_list",
    )
    reject = ctx_with(price_below_list={**half, "action": "reject"})
    assert only(check_price_below_list(order, reject)) == (REJECT, "price_below_list")
    off = ctx_with(price_below_list={**half, "enabled": False})
    assert check_price_below_list(order, off) is None


# --- buyer remarks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remark", "keyword"),
    [
        ("麻烦开发票，谢谢", "发票"),
        ("地址写错了，请帮我改地址", "改地址"),
        ("加急！", "加急"),
        ("Please send an INVOICE", "invoice"),
        ("I need to  Change\tAddress", "change address"),
        ("ＵＲＧＥＮＴ", "urgent"),  # full-width
        ("不要放发票，但请改地址", "改地址"),  # an ignored phrase does not hide another ask
    ],
)
def test_remarks_that_need_a_person_are_held(remark: str, keyword: str) -> None:
    order = make_order(remark=remark)
    result = check_remark(order, CTX)
    assert result == AuditResult(HOLD, "remark_review", f"buyer remark mentions {keyword!r}")
    assert audit(order, CTX) == result


@pytest.mark.parametrize(
    "remark", ["", "   ", "送礼用，不要放发票", "请尽快发货，谢谢", "周末不在家，请工作日配送"]
)
def test_ordinary_remarks_pass(remark: str) -> None:
    assert check_remark(make_order(remark=remark), CTX) is None


def test_the_detail_names_the_keyword_not_the_remark() -> None:
    result = check_remark(make_order(remark="加急 张三 13800000000 文三路"), CTX)
    assert result is not None and result.detail == "buyer remark mentions '加急'"


def test_remark_rule_settings() -> None:
    own = ctx_with(remark_review={"keywords": ["Gift Wrap"]})
    assert only(check_remark(make_order(remark="gift  wrap please"), own)) == (
        HOLD,
        "remark_review",
    )
    assert check_remark(make_order(remark="开发票"), own) is None  # the list replaces the default
    reject = ctx_with(remark_review={"action": "reject"})
    assert only(check_remark(make_order(remark="加急"), reject)) == (REJECT, "remark_review")
    off = ctx_with(remark_review={"enabled": False})
    assert check_remark(make_order(remark="加急"), off) is None


# --- switches and precedence across the new rules -----------------------------------------

ALL_OFF = AuditRules.model_validate({name: {"enabled": False} for name in AuditRules.model_fields})


def test_every_rule_can_be_switched_off() -> None:
    order = with_line(
        make_order({"SKU-Z": 5000}, payment=PaymentStatus.REFUNDED, name="", street="1", phone="1"),
        "L1",
        paid_amount=Decimal("0.01"),
    ).model_copy(update={"buyer_remark": "加急", "channel_status": ChannelStatus.SHIPPED})
    ctx = AuditContext(frozenset(), rules=ALL_OFF, velocity={order.order_id: Velocity(99, 99)})
    assert audit(order, ctx) == PASS
    assert audit(order, AuditContext(frozenset())).verdict is REJECT


# Reason -> the config section that switches it off, in the order the rules speak.
HOLD_ORDER = {
    "implausible_quantity": "quantity",
    "unpaid": "payment",
    "address_incomplete": "address_incomplete",
    "address_implausible": "address_implausible",
    "phone_implausible": "phone_implausible",
    "unknown_sku": "unknown_sku",
    "scalper_suspected": "scalper",
    "price_below_list": "price_below_list",
    "high_value": "high_value",
    "remark_review": "remark_review",
    "shipped_at_channel": "shipped_at_channel",
}


def test_holds_speak_in_the_documented_order() -> None:
    """One order trips every hold; switching off whichever speaks lets the next one speak."""
    order = with_line(
        make_order(
            {"SKU-A": 11, "SKU-Z": 1},
            payment=PaymentStatus.UNPAID,
            unit_price=Decimal("5000.00"),
            remark="加急",
            channel_status=ChannelStatus.SHIPPED,
            name="",
            street="1",
            phone="123",
        ),
        "L2",
        paid_amount=Decimal("1.00"),
    )
    velocity = {order.order_id: Velocity(buyer=99)}
    off: dict[str, Any] = {}
    for reason, section in HOLD_ORDER.items():
        result = audit(order, ctx_with(velocity, **off))
        assert (result.verdict, result.reason) == (HOLD, reason)
        off[section] = {"enabled": False}
    assert audit(order, ctx_with(velocity, **off)) == PASS


def test_a_blacklist_reject_beats_the_holds_before_it() -> None:
    order = make_order({"SKU-A": 11}, payment=PaymentStatus.UNPAID, phone="13000000666")
    assert only(audit(order, CTX)) == (REJECT, "blacklisted")


def test_address_and_street_normalisation() -> None:
    assert normalise_text("文三路 90 号") == normalise_text("文三路９０号") == "文三路90号"
    assert normalise_text("1 Main St.") == normalise_text("1 MAIN ST") == "1mainst"
    assert normalise_text(" ,.- ") == ""


# --- properties over any valid order ------------------------------------------------------

KNOWN_REASONS = {
    "non_positive_quantity",
    "blacklisted",
    "refunded",
    "cod",
    *HOLD_ORDER,
}
money = st.decimals(min_value=0, max_value=100000, places=2, allow_nan=False, allow_infinity=False)
short_text = st.text(max_size=30)
mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
protected_phones = st.one_of(
    st.from_regex(r"1[3-9][0-9]\*{4}[0-9]{4}", fullmatch=True),
    st.just(DOUYIN_PHONE),
    st.from_regex(r"~[A-Za-z0-9+/]{20,40}~1~~", fullmatch=True),
)
phones = st.one_of(short_text, mobiles, mobiles.map(lambda m: "+86 " + m), protected_phones)
streets = st.one_of(short_text, st.just(DOUYIN_STREET), st.just("文三路 1 号"))
remarks = st.one_of(short_text, st.sampled_from(["加急", "送礼用，不要放发票", "Invoice pls"]))


@st.composite
def lines(draw: st.DrawFn) -> list[OrderLine]:
    return [
        OrderLine(
            line_id=f"L{i}",
            sku=draw(st.sampled_from(["SKU-A", "SKU-B", "SKU-Z"])),
            quantity=draw(st.integers(1, 2000)),
            unit_price=draw(money),
            paid_amount=draw(money),
            is_gift=draw(st.booleans()),
        )
        for i in range(draw(st.integers(1, 4)))
    ]


@st.composite
def orders(draw: st.DrawFn) -> Order:
    address = Address(
        country=draw(st.sampled_from(["CN", "US", "HK"])),
        province=draw(short_text),
        city=draw(short_text),
        street=draw(streets),
        name=draw(short_text),
        phone=draw(phones),
    )
    return Order(
        order_id=make_order_id("own", "shop1", "E1"),
        channel=draw(st.sampled_from(Channel)),
        shop_id="shop1",
        external_id="E1",
        channel_status=draw(st.sampled_from(ChannelStatus)),
        created_at=T0,
        updated_at=T0,
        currency=draw(st.sampled_from(["CNY", "USD", "EUR"])),
        buyer=Buyer(id=draw(st.sampled_from(["", "b1", "bad-buyer"])), phone=draw(short_text)),
        address=address,
        lines=draw(lines()),
        payment=Payment(status=draw(st.sampled_from(PaymentStatus)), paid_total=draw(money)),
        total=draw(money),
        buyer_remark=draw(remarks),
    )


@st.composite
def contexts(draw: st.DrawFn) -> AuditContext:
    """Any mix of rules on and off, holding or rejecting, with or without counts."""
    sections: dict[str, Any] = {"blacklist": dict(BLACKLIST)}
    for name, field in AuditRules.model_fields.items():
        section = sections.setdefault(name, {})
        section["enabled"] = draw(st.booleans())
        if "action" in field.annotation.model_fields:  # type: ignore[union-attr]
            section["action"] = draw(st.sampled_from(["hold", "reject"]))
    velocity = draw(
        st.dictionaries(
            st.just(ORDER_ID), st.builds(Velocity, st.integers(0, 30), st.integers(0, 30))
        )
    )
    return AuditContext(SKUS, rules=AuditRules.model_validate(sections), velocity=velocity)


@settings(max_examples=300, deadline=None)
@given(order=orders(), ctx=st.one_of(st.just(CTX), contexts()))
def test_audit_never_raises_and_a_verdict_always_has_a_reason(
    order: Order, ctx: AuditContext
) -> None:
    result = audit(order, ctx)
    assert result.verdict in Verdict
    assert (result.verdict is Verdict.PASS) == (result.reason == "")
    assert result == PASS or result.reason in KNOWN_REASONS


@settings(max_examples=300, deadline=None)
@given(order=orders(), ctx=contexts())
def test_a_reject_anywhere_beats_every_hold(order: Order, ctx: AuditContext) -> None:
    findings = [r for r in (rule(order, ctx) for rule in RULES) if r is not None]
    rejects = [r for r in findings if r.verdict is REJECT]
    result = audit(order, ctx)
    if rejects:
        assert result == rejects[0]
    elif findings:
        assert result == findings[0] and result.verdict is HOLD
    else:
        assert result == PASS


@settings(max_examples=100, deadline=None)
@given(order=orders())
def test_with_every_rule_off_any_order_passes(order: Order) -> None:
    ctx = AuditContext(frozenset(), rules=ALL_OFF, velocity={order.order_id: Velocity(99, 99)})
    assert audit(order, ctx) == PASS


@given(phone=protected_phones, country=st.sampled_from(["CN", "US"]))
def test_masked_or_encrypted_phones_are_never_implausible(phone: str, country: str) -> None:
    order = make_order(phone=phone, country=country)
    assert check_phone_plausible(order, CTX) is None
    assert normalise_phone(phone) == ""


@given(mobile=mobiles)
def test_the_country_prefix_never_changes_a_phone(mobile: str) -> None:
    spellings = [mobile, f"+86{mobile}", f"0086 {mobile}", f"+86 {mobile[:3]}-{mobile[3:]}"]
    assert {normalise_phone(p) for p in spellings} == {mobile}
    assert all(is_plausible_phone(p, "CN") for p in spellings)


def test_default_rules_are_the_built_in_ones_plus_the_demo_blacklist() -> None:
    assert AuditRules().model_copy(update={"blacklist": DEFAULT_RULES.blacklist}) == DEFAULT_RULES
    assert DEFAULT_RULES.blacklist.phones == {"13000000666"}
