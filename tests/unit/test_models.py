"""The canonical Order model: strictness, money, times, fingerprints, JSON round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

from streams.models import (
    MAX_MONEY,
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    is_aware,
    make_order_id,
)
from tests.unit.test_audit import orders as audit_orders

OWN_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "payloads" / "own.json"
T0 = datetime(2024, 6, 18, 1, 30, tzinfo=UTC)


def line(**changes: Any) -> OrderLine:
    values: dict[str, Any] = {
        "line_id": "1",
        "sku": "SKU-TSHIRT-L",
        "quantity": 2,
        "unit_price": Decimal("89.00"),
        "paid_amount": Decimal("178.00"),
    }
    return OrderLine(**{**values, **changes})


def order(**changes: Any) -> Order:
    values: dict[str, Any] = {
        "order_id": make_order_id("own", "web", "W1"),
        "channel": Channel.OWN,
        "shop_id": "web",
        "external_id": "W1",
        "channel_status": ChannelStatus.PAID,
        "created_at": T0,
        "updated_at": T0,
        "currency": "CNY",
        "buyer": Buyer(),
        "address": Address(),
        "lines": [line()],
        "payment": Payment(status=PaymentStatus.PAID, paid_total=Decimal("178.00")),
        "total": Decimal("178.00"),
    }
    return Order(**{**values, **changes})


def test_valid_order_builds() -> None:
    built = order()
    assert built.quantity_by_sku == {"SKU-TSHIRT-L": 2}
    assert built.schema_version == 1


@pytest.mark.parametrize("bad", [178.0, "178.00", 178])
def test_money_must_be_decimal_in_python(bad: Any) -> None:
    """Strict: a float (binary noise) or a string never sneaks in as money from Python code."""
    with pytest.raises(ValidationError):
        order(total=bad)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_finite_money_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        order(total=Decimal(bad))
    with pytest.raises(ValidationError):
        Order.model_validate_json(order().model_dump_json().replace('"178.00"', f'"{bad}"', 1))


@pytest.mark.parametrize("bad", [Decimal("-0.01"), MAX_MONEY + 1, Decimal("1.00001")])
def test_money_range_and_precision(bad: Decimal) -> None:
    with pytest.raises(ValidationError):
        order(total=bad)
    with pytest.raises(ValidationError):
        line(unit_price=bad)


def test_four_decimal_places_allowed() -> None:
    assert line(unit_price=Decimal("33.3333")).unit_price == Decimal("33.3333")


@pytest.mark.parametrize("bad", [datetime(2024, 6, 18, 9, 30), "2024-06-18T09:30:00"])
def test_times_must_be_aware(bad: Any) -> None:
    with pytest.raises(ValidationError):
        order(created_at=bad)


def test_naive_time_in_json_is_refused() -> None:
    data = json.loads(order().model_dump_json())
    data["created_at"] = "2024-06-18T09:30:00"
    with pytest.raises(ValidationError):
        Order.model_validate_json(json.dumps(data))


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("quantity", 0),
        ("quantity", -1),
        ("quantity", 1_000_001),
        ("quantity", 1.5),
        ("quantity", "2"),
        ("quantity", True),
        ("sku", ""),
        ("line_id", ""),
    ],
)
def test_line_validation(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError):
        line(**{field: bad})


def test_strict_enums_unknown_fields_and_duplicate_lines() -> None:
    with pytest.raises(ValidationError):
        order(channel="ebay")
    with pytest.raises(ValidationError):
        order(lines=[])
    with pytest.raises(ValidationError):
        order(lines=[line(), line()])
    with pytest.raises(ValidationError):
        Order.model_validate_json(order().model_dump_json()[:-1] + ', "extra": 1}')
    with pytest.raises(ValidationError):
        order(currency="YUAN")


def test_frozen() -> None:
    built = order()
    with pytest.raises(ValidationError):
        built.total = Decimal("1")  # type: ignore[misc]


def test_json_round_trip_is_lossless() -> None:
    beijing = timezone(timedelta(hours=8))
    built = order(raw={"x": [1, {"y": "z"}]}, created_at=T0.astimezone(beijing))
    again = Order.model_validate_json(built.model_dump_json())
    assert again == built
    assert again.fingerprint() == built.fingerprint()


def test_money_is_serialised_as_string() -> None:
    data = json.loads(order().model_dump_json())
    assert data["total"] == "178.00"
    assert data["lines"][0]["unit_price"] == "89.00"
    assert data["payment"]["paid_total"] == "178.00"
    assert order().model_dump()["total"] == Decimal("178.00")  # python mode keeps Decimal


def test_fingerprint_stable_and_content_sensitive() -> None:
    assert order().fingerprint() == order().fingerprint()
    assert len(order().fingerprint()) == 32
    assert order(total=Decimal("179.00")).fingerprint() != order().fingerprint()
    assert order(updated_at=T0 + timedelta(seconds=1)).fingerprint() != order().fingerprint()
    assert order(raw={"k": 1}).fingerprint() != order(raw={"k": 2}).fingerprint()
    # dict key order does not matter
    assert order(raw={"a": 1, "b": 2}).fingerprint() == order(raw={"b": 2, "a": 1}).fingerprint()


def test_order_id_is_deterministic_and_separates_parts() -> None:
    assert make_order_id("jd", "7", "88") == make_order_id("jd", "7", "88")
    assert make_order_id("jd", "7", "88") != make_order_id("taobao", "7", "88")
    assert make_order_id("jd", "78", "8") != make_order_id("jd", "7", "88")
    assert make_order_id("jd", "7", "88").startswith("O")


def test_own_sample_is_a_valid_order_json() -> None:
    parsed = Order.model_validate_json(OWN_SAMPLE.read_bytes())
    assert parsed.order_id == make_order_id("own", parsed.shop_id, parsed.external_id)
    assert parsed.total == sum(li.paid_amount for li in parsed.lines) + parsed.shipping_fee


def test_is_aware() -> None:
    assert is_aware(T0)
    assert not is_aware(datetime(2024, 1, 1))


@settings(max_examples=60, deadline=None)
@given(order=audit_orders())
def test_an_order_spliced_in_by_its_cached_json_is_the_same_json_value(order: Order) -> None:
    """The record saved on every step and the events with a snapshot embed the order's cached
    JSON (json_with_order): the same value as a full dump, and it parses back to the same."""
    from order.lifecycle import record_event
    from order.record import OrderRecord
    from streams.messages import EventKind, OrderState
    from streams.models import json_with_order

    record = OrderRecord(
        order_id=order.order_id,
        state=OrderState.RECEIVED,
        order=order,
        fingerprint=order.fingerprint(),
    )
    event = record_event(record, EventKind.RECEIVED, order.created_at, with_snapshot=True)
    for model in (record, event):
        spliced = json_with_order(model)
        assert json.loads(spliced) == json.loads(model.model_dump_json())
        assert type(model).model_validate_json(spliced).model_dump() == model.model_dump()
    bare = record_event(record, EventKind.AUDITED, order.created_at, to_state=OrderState.AUDITED)
    assert json_with_order(bare) == bare.model_dump_json()  # no snapshot: as is
    # a changed copy is not the original's JSON
    copy = order.model_copy(update={"buyer_remark": "changed"})
    assert json.loads(copy.json_text())["buyer_remark"] == "changed"
