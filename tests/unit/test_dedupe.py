"""Intake classification (order/dedupe.py), content fingerprints, and the pipeline's split of a
batch into rounds with one input per order id (agents/pipeline.py ``first_per_order``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.pipeline import first_per_order
from order.dedupe import Intake, classify
from order.record import APPLIED_INPUTS, OrderRecord
from streams.channels import adapt
from streams.messages import OrderState
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
from streams.normalise import RawInput

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
T0 = datetime(2026, 11, 11, tzinfo=UTC)


def make_order(
    *, ext: str = "E1", qty: int = 1, minutes: int = 0, remark: str = "", **changes: Any
) -> Order:
    line = OrderLine(
        line_id="L1",
        sku="SKU-A",
        quantity=qty,
        unit_price=Decimal("10.00"),
        paid_amount=Decimal("10.00") * qty,
    )
    values: dict[str, Any] = {
        "order_id": make_order_id("own", "shop1", ext),
        "channel": Channel.OWN,
        "shop_id": "shop1",
        "external_id": ext,
        "channel_status": ChannelStatus.PAID,
        "created_at": T0,
        "updated_at": T0 + timedelta(minutes=minutes),
        "currency": "CNY",
        "buyer": Buyer(name="张三"),
        "address": Address(province="浙江省", province_code="ZJ", city="杭州市", street="x"),
        "lines": [line],
        "payment": Payment(status=PaymentStatus.PAID, paid_total=line.paid_amount),
        "total": line.paid_amount,
        "buyer_remark": remark,
    }
    return Order(**{**values, **changes})


def record_of(order: Order, *inputs: str) -> OrderRecord:
    record = OrderRecord(
        order_id=order.order_id,
        state=OrderState.RESERVED,
        order=order,
        fingerprint=order.fingerprint(),
    )
    for input_id in inputs:
        record.remember_outputs(input_id)
    return record


# --- classify -----------------------------------------------------------------------------


def test_unknown_order_is_new() -> None:
    assert classify(None, make_order(), "t:0:1") is Intake.NEW


def test_same_delivery_is_a_redelivery() -> None:
    order = make_order()
    assert classify(record_of(order, "t:0:1"), order, "t:0:1") is Intake.REDELIVERY


def test_redelivery_wins_over_any_content_comparison() -> None:
    held = make_order(minutes=10)
    older_and_different = make_order(minutes=0, qty=3)
    record = record_of(held, "t:0:1")
    assert classify(record, older_and_different, "t:0:1") is Intake.REDELIVERY
    assert classify(record, older_and_different, "t:0:2") is Intake.STALE


def test_same_content_on_a_new_delivery_is_a_duplicate() -> None:
    order = make_order(minutes=5)
    again = make_order(minutes=5)  # a separate, equal object
    assert again is not order
    assert classify(record_of(order, "t:0:1"), again, "t:0:2") is Intake.DUPLICATE


def test_changed_content_newer_is_an_update() -> None:
    record = record_of(make_order(minutes=0), "t:0:1")
    assert classify(record, make_order(minutes=1, qty=2), "t:0:2") is Intake.UPDATE


def test_changed_content_same_channel_time_is_an_update() -> None:
    record = record_of(make_order(minutes=0), "t:0:1")
    assert classify(record, make_order(minutes=0, remark="ring twice"), "t:0:2") is Intake.UPDATE


def test_changed_content_older_is_stale() -> None:
    record = record_of(make_order(minutes=10), "t:0:1")
    assert classify(record, make_order(minutes=9, qty=2), "t:0:2") is Intake.STALE


def test_duplicate_is_judged_against_the_held_fingerprint() -> None:
    """After an update the held version is the new one: re-pushing the old one is stale,
    re-pushing the new one a duplicate."""
    old, new = make_order(minutes=0), make_order(minutes=1, qty=2)
    record = record_of(new, "t:0:2")
    assert classify(record, old, "t:0:3") is Intake.STALE
    assert classify(record, new, "t:0:4") is Intake.DUPLICATE


def test_inputs_beyond_the_outbox_are_still_known() -> None:
    """Outputs are kept for the last OUTBOX_INPUTS inputs only, but an input applied earlier is
    still a redelivery (issue 13 item 9: it used to be re-applied); only beyond APPLIED_INPUTS
    does the content decide (a duplicate)."""
    order = make_order()
    record = record_of(order, *(f"t:0:{i}" for i in range(1, 40)))
    assert classify(record, order, "t:0:39") is Intake.REDELIVERY
    assert "t:0:1" not in record.outbox
    assert classify(record, order, "t:0:1") is Intake.REDELIVERY
    many = record_of(order, *(f"t:0:{i}" for i in range(1, APPLIED_INPUTS + 10)))
    assert classify(many, order, "t:0:1") is Intake.DUPLICATE


# --- fingerprints -------------------------------------------------------------------------


def test_fingerprint_is_stable_and_content_sensitive() -> None:
    base = make_order()
    assert base.fingerprint() == make_order().fingerprint()
    variants = [
        make_order(qty=2),
        make_order(minutes=1),
        make_order(remark="x"),
        make_order(ext="E2"),
        make_order(currency="USD"),
        make_order(channel_status=ChannelStatus.CANCELLED),
        make_order(raw={"k": "v"}),
    ]
    prints = {v.fingerprint() for v in variants}
    assert base.fingerprint() not in prints
    assert len(prints) == len(variants)


def _reorder(value: Any) -> Any:
    """The same JSON with every object's keys in reverse order (arrays untouched)."""
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


def _jd(data: dict[str, Any]) -> Order:
    return adapt("jd", json.dumps(data, ensure_ascii=False).encode())


def test_fingerprint_ignores_field_order_in_the_raw_json() -> None:
    data = json.loads((SAMPLES / "jd.json").read_text(encoding="utf-8"))
    reordered = _reorder(data)
    assert list(reordered) != list(data)
    assert json.dumps(reordered) != json.dumps(data)
    a, b = _jd(data), _jd(reordered)
    assert a.raw  # unmapped fields are kept, so their order is exercised too
    assert a.fingerprint() == b.fingerprint()
    record = record_of(a, "t:0:1")
    assert classify(record, b, "t:0:2") is Intake.DUPLICATE


def test_fingerprint_sees_content_changes_in_the_raw_json() -> None:
    data = json.loads((SAMPLES / "jd.json").read_text(encoding="utf-8"))
    base = _jd(data).fingerprint()
    remark = {**data, "orderRemark": "请放门口"}
    unmapped = {**data, "invoiceInfo": "需要发票"}
    assert _jd(remark).fingerprint() != base
    assert _jd(unmapped).fingerprint() != base


# 64-bit ints: orjson (the fingerprint's serialiser) refuses larger ones, and payloads parsed
# by orjson never hold them (it reads larger integers as floats).
INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), INT64, max_size=6))
def test_fingerprint_ignores_key_order_of_raw(raw: dict[str, int]) -> None:
    forwards = make_order(raw=raw)
    backwards = make_order(raw=dict(reversed(list(raw.items()))))
    assert forwards.fingerprint() == backwards.fingerprint()


# --- first_per_order -------------------------------------------------------------------------


def _split_round(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """How the pipeline splits (raw, order) inputs into rounds."""
    return first_per_order(items, lambda item: [item[1].order_id])


def _item(ext: str, n: int) -> tuple[RawInput, Order]:
    return RawInput("own", b"{}", "oms.raw.own", 0, n), make_order(ext=ext)


def test_split_round_defers_repeats_keeping_order() -> None:
    items = [_item(e, n) for n, e in enumerate(["A", "B", "A", "C", "B", "A"])]
    now, later = _split_round(items)
    assert [raw.offset for raw, _ in now] == [0, 1, 3]
    assert [raw.offset for raw, _ in later] == [2, 4, 5]
    now2, later2 = _split_round(later)
    assert [raw.offset for raw, _ in now2] == [2, 4]
    assert [raw.offset for raw, _ in later2] == [5]


def test_split_round_of_nothing() -> None:
    assert _split_round([]) == ([], [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("ABCDE"), max_size=30))
def test_split_rounds_apply_each_orders_inputs_in_order(exts: list[str]) -> None:
    pending = [_item(e, n) for n, e in enumerate(exts)]
    rounds: list[list[tuple[RawInput, Order]]] = []
    while pending:
        now, pending = _split_round(pending)
        assert now, "a round must make progress"
        ids = [order.order_id for _, order in now]
        assert len(ids) == len(set(ids))
        rounds.append(now)
    flat = [raw.offset for rnd in rounds for raw, _ in rnd]
    assert sorted(flat) == list(range(len(exts)))
    for ext in set(exts):
        mine = [raw.offset for rnd in rounds for raw, o in rnd if o.external_id == ext]
        assert mine == sorted(mine)
    assert len(rounds) == max((exts.count(e) for e in set(exts)), default=0)


def test_a_record_saved_with_its_outputs_inside_still_loads() -> None:
    """Records saved before the outputs moved beside them (field out:<input> of the order's
    hash) kept them in an ``outbox`` dict: they load, their input ids still known."""
    record = record_of(make_order(), "t:0:1")
    stored = record.model_dump(mode="json")
    stored["outbox"] = {"t:0:1": [["oms.order-events", record.order_id, "{}"]]}
    again = OrderRecord.model_validate_json(orjson.dumps(stored))
    assert again.outbox == ["t:0:1"] and again.has_applied("t:0:1")
