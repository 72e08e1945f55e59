"""Audit rules (agents/audit.py): each rule on its own, then the order in which they speak."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from agents.audit import (
    PASS,
    REQUIRED_ADDRESS_PARTS,
    RULES,
    AuditContext,
    AuditResult,
    Verdict,
    audit,
    check_address,
    check_payment,
    check_quantities,
    check_skus,
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


def make_order(
    lines: dict[str, int] | None = None,
    *,
    payment: PaymentStatus = PaymentStatus.PAID,
    **address: Any,
) -> Order:
    order_lines = [
        OrderLine(
            line_id=f"L{i}",
            sku=sku,
            quantity=qty,
            unit_price=Decimal("10.00"),
            paid_amount=Decimal("10.00") * qty,
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
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(id="b1", name="张三"),
        address=Address(**addr),
        lines=order_lines,
        payment=Payment(status=payment, paid_total=total),
        total=total,
    )


def with_quantity(order: Order, line_id: str, quantity: int) -> Order:
    """The model refuses quantity <= 0, so a rule guarding against it is reached only by an
    order built without validation (e.g. a record written by an older version)."""
    lines = [
        ln.model_copy(update={"quantity": quantity}) if ln.line_id == line_id else ln
        for ln in order.lines
    ]
    return order.model_copy(update={"lines": lines})


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
    assert ctx.max_line_quantity == 999
    assert audit(make_order({"SKU-A": 999}), ctx) == PASS
    assert audit(make_order({"SKU-A": 1000}), ctx).reason == "implausible_quantity"


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
