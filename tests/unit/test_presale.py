"""Pre-sales and release gates, pure: what the adapters read from the platforms' pre-sale
fields, and when an order may be handed to the WMS."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order.audit import AuditContext, Verdict, audit
from order.gates import awaits_balance, release_gate
from order.reasons import Reason
from streams.channels import adapt
from streams.channels.base import AdapterError
from streams.messages import DlqReason
from streams.models import Order, PaymentStatus, PresaleStage
from tests.unit.test_protected_receiver import SKUS, load

NOW = datetime.now(UTC)


def adapt_json(channel: str, payload: dict[str, Any]) -> Order:
    return adapt(channel, json.dumps(payload, ensure_ascii=False).encode())


def taobao_step(step: str, **extra: Any) -> dict[str, Any]:
    trade = load("taobao")
    trade.update(
        {
            "type": "step",
            "status": "WAIT_BUYER_PAY",
            "step_trade_status": step,
            "step_paid_fee": "100.00",
            **extra,
        }
    )
    trade.pop("pay_time")
    return trade


@pytest.mark.parametrize(
    ("step", "stage"),
    [
        ("FRONT_NOPAID_FINAL_NOPAID", PresaleStage.DEPOSIT_UNPAID),
        ("FRONT_PAID_FINAL_NOPAID", PresaleStage.DEPOSIT_PAID),
    ],
)
def test_taobao_step_trades_become_presales(step: str, stage: PresaleStage) -> None:
    order = adapt_json("taobao", taobao_step(step))
    assert order.presale is not None
    assert (order.presale.stage, order.presale.paid) == (stage, Decimal("100.00"))
    assert order.payment.status is PaymentStatus.UNPAID and order.payment.paid_total == 0


def test_a_taobao_presale_paid_in_full_is_a_paid_order() -> None:
    trade = {
        **load("taobao"),
        "type": "step",
        "step_trade_status": "FRONT_PAID_FINAL_PAID",
        "step_paid_fee": "3897.00",
    }
    order = adapt_json("taobao", trade)
    assert order.presale is not None and order.presale.stage is PresaleStage.BALANCE_PAID
    assert order.payment.status is PaymentStatus.PAID
    assert release_gate(order, NOW) is None


def test_an_unknown_step_status_is_refused_not_guessed() -> None:
    with pytest.raises(AdapterError) as caught:
        adapt_json("taobao", taobao_step("FRONT_HALF_PAID"))
    assert caught.value.reason is DlqReason.INVALID_FIELD
    assert "step_trade_status" in caught.value.detail


def test_the_deposit_is_not_unpaid_for_the_audit_but_gates_the_release() -> None:
    deposit = adapt_json("taobao", taobao_step("FRONT_PAID_FINAL_NOPAID"))
    assert awaits_balance(deposit)
    assert audit(deposit, AuditContext(known_skus=SKUS)).verdict is Verdict.PASS
    gate = release_gate(deposit, NOW)
    assert gate is not None and (gate.reason, gate.until) == (Reason.AWAITING_BALANCE, None)
    unpaid = adapt_json("taobao", taobao_step("FRONT_NOPAID_FINAL_NOPAID"))
    result = audit(unpaid, AuditContext(known_skus=SKUS))
    assert (result.verdict, result.reason) == (Verdict.HOLD, Reason.UNPAID)


def test_forbid_consign_and_jd_locks_are_channel_holds() -> None:
    forbid = adapt_json("taobao", {**load("taobao"), "status": "PAID_FORBID_CONSIGN"})
    assert forbid.ship_hold == "PAID_FORBID_CONSIGN"
    gate = release_gate(forbid, NOW)
    assert gate is not None and gate.reason is Reason.CHANNEL_SHIP_HOLD
    for state in ("LOCKED", "POP_ORDER_PAUSE"):
        jd = adapt_json("jd", {**load("jd"), "orderState": state})
        assert jd.ship_hold == state
    assert adapt_json("jd", load("jd")).ship_hold == ""


def phase(n: int, paid: bool, amount: int) -> dict[str, Any]:
    return {
        "phase_order_id": f"P{n}",
        "total_phase": 2,
        "current_phase": n,
        "pay_success": paid,
        "phase_pay_amount": amount,
    }


def test_douyin_phases_and_appointment_ship_time() -> None:
    ship_at = int(time.time()) + 7 * 86400
    deposit = adapt_json(
        "douyin",
        {
            **load("douyin"),
            "order_status": 103,
            "pay_time": 0,
            "order_phase_list": [phase(1, True, 5000), phase(2, False, 0)],
            "appointment_ship_time": ship_at,
        },
    )
    assert deposit.presale is not None
    assert (deposit.presale.stage, deposit.presale.paid) == (
        PresaleStage.DEPOSIT_PAID,
        Decimal("50.00"),
    )
    assert deposit.ship_after == datetime.fromtimestamp(ship_at, UTC)
    paid = adapt_json(
        "douyin",
        {
            **load("douyin"),
            "order_phase_list": [phase(1, True, 5000), phase(2, True, 57570)],
            "appointment_ship_time": ship_at,
        },
    )
    assert paid.presale is not None and paid.presale.stage is PresaleStage.BALANCE_PAID
    gate = release_gate(paid, NOW)
    assert gate is not None and gate.reason is Reason.SHIP_DATE and gate.until == paid.ship_after
    assert release_gate(paid, paid.ship_after + timedelta(seconds=1)) is None  # type: ignore[operator]
    assert adapt_json("douyin", load("douyin")).presale is None


@pytest.mark.parametrize("when", [int(time.time()) + 500 * 86400, 86400 * 365 * 20, "soon"])
def test_an_implausible_ship_date_is_refused(when: Any) -> None:
    with pytest.raises(AdapterError) as caught:
        adapt_json("douyin", {**load("douyin"), "appointment_ship_time": when})
    assert caught.value.reason is DlqReason.INVALID_FIELD
    assert "appointment_ship_time" in caught.value.detail


def test_a_long_phase_list_is_refused_unread() -> None:
    with pytest.raises(AdapterError) as caught:
        adapt_json("douyin", {**load("douyin"), "order_phase_list": [phase(1, True, 1)] * 9})
    assert caught.value.reason is DlqReason.INVALID_FIELD


@settings(max_examples=200, deadline=None)
@given(
    phases=st.lists(
        st.fixed_dictionaries(
            {
                "current_phase": st.one_of(st.integers(-3, 5), st.text(max_size=3)),
                "pay_success": st.one_of(st.booleans(), st.none(), st.text(max_size=2)),
                "phase_pay_amount": st.one_of(st.integers(-10, 10**9), st.text(max_size=5)),
            }
        ),
        max_size=10,
    )
)
def test_any_phase_list_maps_or_is_refused_with_a_reason(phases: list[dict[str, Any]]) -> None:
    try:
        order = adapt_json("douyin", {**load("douyin"), "order_phase_list": phases})
    except AdapterError as exc:
        assert exc.reason in {DlqReason.INVALID_FIELD, DlqReason.MISSING_FIELD}
        return
    if phases:
        assert order.presale is not None and order.presale.paid >= 0
    else:
        assert order.presale is None


def test_orders_the_platform_ships_or_nobody_ships_skip_the_shipping_rules() -> None:
    from order.lifecycle import ALLOWED, can_move
    from streams.messages import OrderState as S

    amazon = load("amazon")
    fba = adapt_json("amazon", {**amazon, "FulfillmentChannel": "AFN", "OrderStatus": "Shipped"})
    assert fba.fulfilled_by == "platform"
    # Amazon's own stock and address: no unknown-sku or shipped-at-channel hold
    assert audit(fba, AuditContext(known_skus=frozenset())).verdict is Verdict.PASS
    mfn = adapt_json("amazon", {**amazon, "OrderStatus": "Shipped"})
    assert mfn.fulfilled_by == ""
    assert audit(mfn, AuditContext(known_skus=frozenset())).verdict is Verdict.HOLD
    voucher = adapt_json("douyin", {**load("douyin"), "order_type": 4})
    assert voucher.fulfilled_by == "virtual"
    assert adapt_json("douyin", load("douyin")).fulfilled_by == ""
    assert can_move(S.AUDITED, S.FULFILLED_ELSEWHERE)
    assert ALLOWED[S.FULFILLED_ELSEWHERE] == frozenset({S.CANCELLED})
    # a field the first release did not have: its orders keep their old fingerprint
    assert fba.v1_fingerprint() != fba.fingerprint()


@pytest.mark.parametrize("value", [[0], "x", {"type": 4}])
def test_a_douyin_order_type_that_is_not_an_integer_is_refused(value: Any) -> None:
    """Found by the mutation fuzzer: a list here was an unhashable set lookup (TypeError)."""
    with pytest.raises(AdapterError) as caught:
        adapt_json("douyin", {**load("douyin"), "order_type": value})
    assert caught.value.reason is DlqReason.INVALID_FIELD
    assert caught.value.detail.startswith("order_type")
