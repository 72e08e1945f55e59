"""Hold, reject and cancel reasons are one vocabulary (order/reasons.py)."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from order.audit import DEFAULT_RULES, AuditContext, audit
from order.reasons import Reason
from order.record import OrderRecord
from streams.messages import OrderState
from tests.unit.records import make_order


def test_codes_are_distinct_snake_case() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(re.fullmatch(r"[a-z][a-z_]*", v) for v in values)


def test_a_record_refuses_a_reason_that_is_not_one() -> None:
    order = make_order({"A": 1})
    base = {"order_id": order.order_id, "order": order, "fingerprint": "f"}
    held = OrderRecord(**base, state=OrderState.HELD, hold_reason="unpaid")
    assert held.hold_reason is Reason.UNPAID
    with pytest.raises(ValidationError, match="hold_reason"):
        OrderRecord(**base, state=OrderState.HELD, hold_reason="incomplete_address")


def test_an_audit_verdict_carries_a_member() -> None:
    order = make_order({"A": 1})
    unknown = AuditContext(rules=DEFAULT_RULES, known_skus=frozenset())
    verdict = audit(order, unknown)
    assert verdict.reason is Reason.UNKNOWN_SKU
