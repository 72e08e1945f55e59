"""Fulfilment commands (order/fulfil.py): deterministic ids and the content the WMS gets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from order.fulfil import command_id, outbound_commands, stop_command
from order.record import OrderRecord
from streams.messages import Allocation, CommandKind, FulfilmentCommand, OrderState
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


def make_record(
    lines: list[tuple[str, int]], *, warehouse: str = "WH-SH", ext: str = "E1"
) -> OrderRecord:
    order_lines = [
        OrderLine(
            line_id=f"L{i}",
            sku=sku,
            quantity=qty,
            unit_price=Decimal("3.50"),
            paid_amount=Decimal("3.50") * qty,
            is_gift=i == 3,
        )
        for i, (sku, qty) in enumerate(lines, start=1)
    ]
    total = sum((ln.paid_amount for ln in order_lines), Decimal("0"))
    order = Order(
        order_id=make_order_id("jd", "10086", ext),
        channel=Channel.JD,
        shop_id="10086",
        external_id=ext,
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(name="王小明"),
        address=Address(
            province="广东省", province_code="GD", city="深圳市", street="科苑路15号", name="王"
        ),
        lines=order_lines,
        payment=Payment(status=PaymentStatus.PAID, paid_total=total),
        total=total,
        buyer_remark="工作日配送",
    )
    return OrderRecord(
        order_id=order.order_id,
        state=OrderState.RESERVED,
        order=order,
        fingerprint=order.fingerprint(),
        warehouse=warehouse,
        allocations=[
            Allocation(sku=sku, warehouse=warehouse, quantity=qty)
            for sku, qty in order.quantity_by_sku.items()
        ],
    )


def outbound_command(record: OrderRecord, at: datetime) -> FulfilmentCommand:
    """A single-warehouse reservation gives exactly one outbound command."""
    [command] = outbound_commands(record, at)
    return command


def cancel_command(record: OrderRecord, at: datetime) -> FulfilmentCommand:
    """The stop for the record's (tracked) outbound: a cancel until the WMS has picked it."""
    return stop_command(record, record.commands[0], at)


def test_split_reservation_gives_one_command_per_warehouse_covering_every_unit() -> None:
    record = make_record(LINES)
    record.allocations = [
        Allocation(sku="SKU-A", warehouse="WH-SH", quantity=3),
        Allocation(sku="SKU-A", warehouse="WH-BJ", quantity=1),
        Allocation(sku="SKU-B", warehouse="WH-BJ", quantity=2),
    ]
    commands = outbound_commands(record, T0)
    assert [c.warehouse for c in commands] == ["WH-BJ", "WH-SH"]
    assert len({c.command_id for c in commands}) == 2
    shipped: dict[tuple[str, str], int] = {}
    for c in commands:
        for ln in c.lines:
            shipped[(c.warehouse, ln.sku)] = shipped.get((c.warehouse, ln.sku), 0) + ln.quantity
    assert shipped == {("WH-SH", "SKU-A"): 3, ("WH-BJ", "SKU-A"): 1, ("WH-BJ", "SKU-B"): 2}
    per_line: dict[str, int] = {}
    for c in commands:
        for ln in c.lines:
            per_line[ln.line_id] = per_line.get(ln.line_id, 0) + ln.quantity
    assert per_line == {ln.line_id: ln.quantity for ln in record.order.lines}


LINES = [("SKU-A", 1), ("SKU-B", 2), ("SKU-A", 3)]


# --- command ids --------------------------------------------------------------------------


def test_command_id_is_deterministic() -> None:
    assert command_id("O1", CommandKind.OUTBOUND, "WH-SH") == command_id(
        "O1", CommandKind.OUTBOUND, "WH-SH"
    )
    assert command_id("O1", CommandKind.OUTBOUND, "WH-SH") == command_id(
        "O1", CommandKind.OUTBOUND, "WH-SH", 1
    )


def test_command_id_differs_by_every_part() -> None:
    ids = {
        command_id(order, kind, wh, attempt)
        for order, kind, wh, attempt in itertools.product(
            ["O1", "O2"], list(CommandKind), ["WH-SH", "WH-BJ"], [1, 2]
        )
    }
    assert len(ids) == 2 * len(CommandKind) * 2 * 2
    assert all(i.startswith("C") for i in ids)


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=12),
    st.text(min_size=1, max_size=12),
    st.text(min_size=1, max_size=12),
)
def test_command_ids_of_distinct_warehouses_differ(order_id: str, wh1: str, wh2: str) -> None:
    a = command_id(order_id, CommandKind.OUTBOUND, wh1)
    b = command_id(order_id, CommandKind.OUTBOUND, wh2)
    assert (a == b) == (wh1 == wh2)


# --- outbound -----------------------------------------------------------------------------


def test_outbound_command_content() -> None:
    record = make_record(LINES)
    order = record.order
    cmd = outbound_command(record, T0)
    assert cmd.kind is CommandKind.OUTBOUND
    assert cmd.command_id == command_id(order.order_id, CommandKind.OUTBOUND, "WH-SH")
    assert (cmd.order_id, cmd.channel, cmd.shop_id, cmd.external_id) == (
        order.order_id,
        order.channel,
        order.shop_id,
        order.external_id,
    )
    assert cmd.warehouse == "WH-SH"
    assert cmd.ship_to == order.address
    assert cmd.buyer_remark == order.buyer_remark
    assert cmd.created_at == T0


def test_outbound_lines_equal_order_lines() -> None:
    record = make_record(LINES)
    cmd = outbound_command(record, T0)
    assert [(c.line_id, c.sku, c.quantity) for c in cmd.lines] == [
        (ln.line_id, ln.sku, ln.quantity) for ln in record.order.lines
    ]
    # lines of one sku stay separate lines (the WMS confirms per line)
    assert [c.sku for c in cmd.lines] == ["SKU-A", "SKU-B", "SKU-A"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["SKU-A", "SKU-B", "SKU-C"]), st.integers(1, 1000)),
        min_size=1,
        max_size=20,
    )
)
def test_outbound_lines_mirror_any_order(lines: list[tuple[str, int]]) -> None:
    record = make_record(lines)
    cmd = outbound_command(record, T0)
    assert [(c.line_id, c.sku, c.quantity) for c in cmd.lines] == [
        (ln.line_id, ln.sku, ln.quantity) for ln in record.order.lines
    ]


def test_outbound_is_the_same_command_on_replay() -> None:
    a = outbound_command(make_record(LINES), T0)
    b = outbound_command(make_record(LINES), T0 + timedelta(minutes=5))
    assert a.command_id == b.command_id
    assert a.model_dump(exclude={"created_at"}) == b.model_dump(exclude={"created_at"})


def test_outbound_id_depends_on_order_and_warehouse() -> None:
    base = outbound_command(make_record(LINES), T0).command_id
    assert outbound_command(make_record(LINES, warehouse="WH-BJ"), T0).command_id != base
    assert outbound_command(make_record(LINES, ext="E2"), T0).command_id != base


def test_outbound_round_trips_as_json() -> None:
    cmd = outbound_command(make_record(LINES), T0)
    assert FulfilmentCommand.model_validate_json(cmd.model_dump_json()) == cmd


# --- cancel -------------------------------------------------------------------------------


def test_cancel_command_mirrors_outbound_with_its_own_id() -> None:
    record = make_record(LINES)
    out = outbound_command(record, T0)
    cancel = cancel_command(record, T0)
    assert cancel.kind is CommandKind.CANCEL and cancel.refers_to == out.command_id
    assert cancel.command_id == command_id(
        record.order_id, CommandKind.CANCEL, "WH-SH", 1, out.command_id
    )
    assert cancel.command_id != out.command_id
    assert cancel.model_dump(exclude={"kind", "command_id", "refers_to"}) == out.model_dump(
        exclude={"kind", "command_id", "refers_to"}
    )
    assert cancel_command(record, T0).command_id == cancel.command_id


def test_a_picked_outbound_is_intercepted_not_cancelled() -> None:
    from order.record import CommandStatus

    record = make_record(LINES)
    out = outbound_command(record, T0)
    record.commands[0].status = CommandStatus.PICKED
    stop = cancel_command(record, T0)
    assert stop.kind is CommandKind.INTERCEPT and stop.refers_to == out.command_id
