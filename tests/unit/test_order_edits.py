"""Customer service changes an order's lines before release (issue 16 item 9): the checks of
what a person types, the pure rule (order/edits.py) and the API routes that send it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from order.edits import apply_edit, with_edits
from order.plan import BatchResult, Plan
from order.reasons import Reason
from order.reservation import EffectKind
from streams.edits import EditError, edit_fields, parse_code, parse_quantity
from streams.messages import EventKind, OperatorAction, OperatorActionKind, OrderState
from streams.models import MAX_CODE_CHARS, MAX_LINE_QUANTITY
from streams.signing import PERSON_KINDS
from tests.unit.records import audit_context, decisions, make_order, record_in
from tests.unit.test_access import Actions
from tests.unit.test_customer_service import CS
from tests.unit.test_customer_service import api as customer_service_api

T = datetime(2026, 11, 11, 10, 0, tzinfo=UTC)
api = customer_service_api  # the same API fixture: an app with recording actions
GIFT, CHANGE = OperatorActionKind.ADD_GIFT, OperatorActionKind.CHANGE_LINE
S = OrderState


# --- what a person may type ----------------------------------------------------------------


@given(st.text(max_size=MAX_CODE_CHARS + 5))
def test_any_text_is_a_code_or_refused(text: str) -> None:
    try:
        code = parse_code(text, "sku")
    except EditError:
        return
    assert code == text and 1 <= len(code) <= MAX_CODE_CHARS
    assert not any(c.isspace() for c in code)


@given(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=5), st.none()))
def test_any_value_is_a_quantity_or_refused(value: object) -> None:
    try:
        units = parse_quantity(value)
    except EditError:
        return
    assert type(units) is int and 1 <= units <= MAX_LINE_QUANTITY


@pytest.mark.parametrize(
    ("kind", "given_fields"),
    [
        ("add_gift", {}),
        ("add_gift", {"sku": "A B"}),
        ("add_gift", {"sku": 7}),
        ("add_gift", {"sku": "A", "quantity": 0}),
        ("add_gift", {"sku": "A", "quantity": True}),
        ("change_line", {"line_id": "L1"}),
        ("change_line", {"line_id": "", "sku": "B"}),
        ("change_line", {"line_id": "L1", "quantity": 2.0}),
        ("cancel", {"sku": "A"}),
    ],
)
def test_edit_fields_refuses(kind: str, given_fields: dict[str, Any]) -> None:
    with pytest.raises(EditError):
        edit_fields(kind, **given_fields)


def test_edit_fields_as_sent() -> None:
    assert edit_fields("add_gift", sku="A", quantity=2) == {"sku": "A", "quantity": 2}
    assert edit_fields("change_line", line_id="L1", quantity=3) == {"line_id": "L1", "quantity": 3}


def action(kind: OperatorActionKind, action_id: str = "A1", **fields: Any) -> OperatorAction:
    return OperatorAction(
        action_id=action_id, order_id="O1", kind=kind, actor="amy", at=T, **fields
    )


def test_the_message_bounds_the_edit_fields() -> None:
    for bad in ({"sku": "A\n"}, {"line_id": "x" * 200}, {"quantity": 0}, {"quantity": "2"}):
        with pytest.raises(ValidationError):
            action(GIFT, **bad)
    assert {GIFT, CHANGE} <= PERSON_KINDS


# --- the rule ------------------------------------------------------------------------------


def apply(record: Any, act: OperatorAction) -> tuple[Plan, BatchResult]:
    plan = Plan(act, f"action:{act.action_id}", record, record.version, actor=act.actor)
    result = BatchResult()
    apply_edit(decisions(), plan, act, audit_context(), T, result)
    return plan, result


@pytest.mark.parametrize("state", [S.RESERVED, S.ROUTED])
def test_a_gift_gives_back_and_reserves_again(state: OrderState) -> None:
    record = record_in(state, {"A": 1})
    plan, _ = apply(record, action(GIFT, sku="B", quantity=2))
    gift = record.order.lines[-1]
    assert (gift.line_id, gift.sku, gift.quantity, gift.is_gift) == ("CS-GIFT-1", "B", 2, True)
    assert gift.paid_amount == Decimal(0) and gift.unit_price == Decimal(0)
    (undo,) = plan.effects
    assert undo.kind is EffectKind.UNDO and undo.skus == ("A",)
    assert plan.reserve is not None and plan.reserve.quantities == {"A": 1, "B": 2}
    assert record.state is S.AUDITED and not record.allocations
    kinds = [m.kind for m in plan.messages]
    assert kinds == [EventKind.LINES_CHANGED, EventKind.AUDITED]
    changed = plan.messages[0]
    assert changed.reason == "gift CS-GIFT-1 B x2" and changed.actor == "amy"
    assert changed.order is not None and changed.order.lines[-1].sku == "B"
    assert record.line_edits[0].line_id == "CS-GIFT-1"


def test_a_changed_line_keeps_what_was_paid() -> None:
    record = record_in(S.ROUTED, {"A": 2})
    paid = record.order.lines[0].paid_amount
    plan, _ = apply(record, action(CHANGE, line_id="L1", sku="C", quantity=3))
    line = record.order.lines[0]
    assert (line.sku, line.quantity, line.paid_amount) == ("C", 3, paid)
    assert plan.messages[0].reason == "line L1 A x2 -> C x3"
    assert plan.effects[0].skus == ("A",)
    assert plan.reserve is not None and plan.reserve.quantities == {"C": 3}


def test_an_unknown_sku_holds_the_order_as_the_audit_would() -> None:
    record = record_in(S.ROUTED, {"A": 1})
    plan, _ = apply(record, action(CHANGE, line_id="L1", sku="NOPE"))
    assert record.state is S.HELD and record.hold_reason == Reason.UNKNOWN_SKU
    assert plan.reserve is None and plan.effects[0].kind is EffectKind.UNDO


def test_an_out_of_stock_order_is_tried_again() -> None:
    record = record_in(S.HELD, {"A": 1})
    record.hold_reason = Reason.OUT_OF_STOCK
    plan, _ = apply(record, action(CHANGE, line_id="L1", sku="B"))
    assert record.state is S.AUDITED and plan.reserve is not None


@pytest.mark.parametrize("state", [S.RELEASED, S.SHIPPED, S.CANCELLED])
def test_an_edit_after_release_is_refused(state: OrderState) -> None:
    record = record_in(state, {"A": 1})
    before = record.order
    plan, result = apply(record, action(GIFT, sku="B"))
    assert plan.refused and result.counts["refused"] == 1
    assert plan.messages[-1].kind is EventKind.ACTION_REFUSED
    assert record.order == before and not record.line_edits and not plan.effects


@pytest.mark.parametrize(
    "fields",
    [{"line_id": "L9", "sku": "B"}, {"line_id": "L1", "sku": "A"}, {"line_id": "L1"}],
)
def test_a_change_of_nothing_or_of_no_line_is_refused(fields: dict[str, Any]) -> None:
    record = record_in(S.ROUTED, {"A": 1})
    plan, _ = apply(record, action(CHANGE, **fields))
    assert plan.refused and not record.line_edits and record.state is S.ROUTED


def test_gift_ids_are_deterministic_and_unique() -> None:
    record = record_in(S.HELD, {"A": 1})
    apply(record, action(GIFT, "A1", sku="B"))
    apply(record, action(GIFT, "A2", sku="C"))
    assert [ln.line_id for ln in record.order.lines] == ["L1", "CS-GIFT-1", "CS-GIFT-2"]


def test_edits_are_applied_over_a_new_channel_version() -> None:
    record = record_in(S.ROUTED, {"A": 1, "B": 1})
    apply(record, action(CHANGE, "A1", line_id="L1", quantity=4))
    apply(record, action(GIFT, "A2", sku="C"))
    update = make_order({"A": 1, "B": 1}, buyer_remark="please hurry")
    again = with_edits(update, record.line_edits)
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in again.lines] == [
        ("L1", "A", 4),
        ("L2", "B", 1),
        ("CS-GIFT-1", "C", 1),
    ]
    assert again.buyer_remark == "please hurry"
    gone = with_edits(make_order({"B": 1}), record.line_edits)  # L1 is now B; L2 gone
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in gone.lines] == [
        ("L1", "B", 4),
        ("CS-GIFT-1", "C", 1),
    ]


# --- the API routes -----------------------------------------------------------------------


async def test_post_gift_and_line_send_edit_actions(api: tuple[TestClient, Actions]) -> None:
    client, actions = api
    resp = await client.post("/orders/O1/gift", json={"sku": "B", "quantity": 2}, headers=CS)
    assert resp.status == 200, await resp.text()
    user = "user-customer_service"
    assert actions.calls == [("O1", "add_gift", user, "", {"sku": "B", "quantity": 2})]
    resp = await client.post("/orders/O1/lines/L1", json={"sku": "C", "reason": "r"}, headers=CS)
    assert resp.status == 200, await resp.text()
    assert actions.calls[-1] == ("O1", "change_line", user, "r", {"sku": "C", "line_id": "L1"})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/orders/O1/gift", {}),
        ("/orders/O1/gift", {"sku": "B", "quantity": "2"}),
        ("/orders/O1/gift", {"sku": "B", "colour": "red"}),
        ("/orders/O1/lines/L1", {}),
        ("/orders/O1/lines/L1", {"sku": "B C"}),
    ],
)
async def test_edit_routes_refuse_bad_bodies(
    api: tuple[TestClient, Actions], path: str, body: dict[str, Any]
) -> None:
    client, actions = api
    resp = await client.post(path, json=body, headers=CS)
    assert resp.status == 400 and actions.calls == []


async def test_edit_routes_need_edit_orders(api: tuple[TestClient, Actions]) -> None:
    client, actions = api
    warehouse = {"Authorization": "Bearer tok-warehouse"}
    resp = await client.post("/orders/O1/gift", json={"sku": "B"}, headers=warehouse)
    assert resp.status == 403 and actions.calls == []
