"""After-sales without Redis (order/aftersales.py): cancel, address change, return, refund only
and exchange applied to order records built in a given state. Each test reads the new state,
the commands and events emitted, the stock effects saved for later, refusals and refunds."""

from __future__ import annotations

from decimal import Decimal

import pytest

from order.aftersales import replacement_units
from order.reasons import Reason
from order.record import CommandStatus, Then
from order.reservation import EffectKind, StockEffect
from streams.messages import (
    AfterSalesKind,
    CommandKind,
    CommandLine,
    EventKind,
    OrderState,
    make_id,
)
from streams.messages import WmsEventKind as K
from tests.unit.records import (
    CLOCK_S,
    CLOSE_AFTER_S,
    Desk,
    address,
    commands_of,
    events,
    granted,
    kinds,
    lines_of,
    make_order,
    outbound,
    record_in,
    routing,
    sent,
    short,
    updates,
)

S = OrderState
C = CommandStatus
A = AfterSalesKind
SPLIT = {"WH-SH": {"A": 1}, "WH-BJ": {"B": 1}}


def delivered(lines: dict[str, int] | None = None) -> Desk:
    return Desk(record_in(S.DELIVERED, lines or {"A": 2, "B": 1}, status=C.DELIVERED))


# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.RECEIVED, S.AUDITED, S.HELD, S.RESERVED, S.ROUTED])
def test_a_cancel_before_the_wms_has_the_order_gives_the_stock_back_at_once(
    state: OrderState,
) -> None:
    desk = Desk(record_in(state, {"A": 2, "B": 1}))
    record = desk.record
    plan = desk.ask(A.CANCEL)
    assert record.state is S.CANCELLED and kinds(plan) == [EventKind.CANCELLED]
    assert plan.effects == [
        StockEffect(kind=EffectKind.RELEASE, shipment=record.order_id, skus=("A", "B"))
    ]
    assert sent(plan) == [] and record.commands == []  # the WMS never had it
    assert record.aftersales[-1].status == "done" and not plan.refused
    assert desk.result.counts["cancelled"] == 1
    assert events(plan)[0].actor == "cs:bob"


def test_a_cancel_at_the_wms_asks_it_to_stop_each_parcel_and_keeps_the_stock() -> None:
    desk = Desk(record_in(S.ACCEPTED, {"A": 1, "B": 1}, parcels=SPLIT, status=C.ACCEPTED))
    record = desk.record
    outbound(record, "WH-SH").status = C.PICKED  # picked: it takes an intercept
    plan = desk.ask(A.CANCEL)
    assert record.state is S.INTERCEPTING and kinds(plan) == [EventKind.INTERCEPT_REQUESTED]
    assert plan.effects == []  # stock comes back only when the WMS confirms
    stops = {c.warehouse: c for c in sent(plan)}
    assert stops["WH-SH"].kind is CommandKind.INTERCEPT
    assert stops["WH-BJ"].kind is CommandKind.CANCEL
    for warehouse, stop in stops.items():
        target = outbound(record, warehouse)
        assert stop.refers_to == target.command_id and lines_of(stop) == lines_of(target)
        assert target.status in (C.PICKED, C.ACCEPTED)  # still live until the WMS answers
    assert record.hold_reason == "cancelled_by_buyer" and record.aftersales[-1].status == "done"
    assert desk.result.counts["intercepts"] == 1


def test_a_cancel_of_an_order_the_wms_gave_up_on_is_immediate() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    record, ref = desk.record, outbound(desk.record)
    desk.wms(ref, K.EXCEPTION)
    plan = desk.ask(A.CANCEL)
    assert record.state is S.CANCELLED
    [stop] = sent(plan)  # the WMS is told to drop it all the same
    assert stop.kind is CommandKind.CANCEL and stop.refers_to == ref.command_id
    assert [(e.kind, e.skus) for e in plan.effects] == [(EffectKind.RELEASE, ("A",))]


def test_a_cancel_of_an_exception_whose_other_parcel_shipped_is_refused() -> None:
    """One parcel is with the buyer: the order cannot be called cancelled (its stock released,
    the shop told to refund it all); it stays with the person working the exception."""
    desk = Desk(record_in(S.RELEASED, {"A": 1, "B": 1}, parcels=SPLIT))
    record = desk.record
    desk.wms(outbound(record, "WH-BJ"), K.SHIPPED)
    desk.wms(outbound(record, "WH-SH"), K.EXCEPTION)
    assert record.state is S.EXCEPTION
    plan = desk.ask(A.CANCEL)
    assert plan.refused and record.state is S.EXCEPTION
    assert plan.effects == [] and sent(plan) == []
    assert "with a parcel shipped" in events(plan)[0].detail


def test_a_cancel_once_shipped_becomes_a_return() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 1}, status=C.SHIPPED))
    plan = desk.ask(A.CANCEL)
    assert desk.record.state is S.RETURNING and plan.effects == []
    assert [c.kind for c in sent(plan)] == [CommandKind.RETURN_INBOUND]


@pytest.mark.parametrize("state", [S.CANCELLED, S.REJECTED, S.CLOSED, S.INTERCEPTING])
def test_a_cancel_that_cannot_apply_is_refused(state: OrderState) -> None:
    desk = Desk(record_in(state, {"A": 1}, status=C.CANCELLED))
    plan = desk.ask(A.CANCEL)
    assert plan.refused and kinds(plan) == [EventKind.ACTION_REFUSED]
    assert desk.record.state is state and plan.effects == [] and sent(plan) == []
    assert desk.record.aftersales[-1].status == "refused"
    assert desk.result.counts["refused"] == 1


# --- address change ---------------------------------------------------------------------------

GUANGZHOU = address("广东省", "GD", "广州市", "天河路 385 号")


def test_an_address_change_before_release_is_what_ships() -> None:
    desk = Desk(record_in(S.RESERVED, {"A": 1}))
    record = desk.record
    plan = desk.ask(A.ADDRESS_CHANGE, new_address=GUANGZHOU)
    assert record.ship_to == GUANGZHOU and record.address == GUANGZHOU
    assert kinds(plan) == [EventKind.ADDRESS_CHANGED] and record.state is S.RESERVED
    assert "13800000000" not in events(plan)[0].detail
    assert record.aftersales[-1].status == "done"


def test_an_address_change_of_an_order_waiting_to_merge_ships_it_now() -> None:
    desk = Desk(record_in(S.ROUTED, {"A": 1}))
    record = desk.record
    record.merge_group = "G1"
    plan = desk.ask(A.ADDRESS_CHANGE, new_address=GUANGZHOU)
    [command] = sent(plan)
    assert command.ship_to == GUANGZHOU and command.kind is CommandKind.OUTBOUND
    assert record.state is S.RELEASED


def test_an_address_change_of_a_held_order_audits_it_again_for_the_new_place() -> None:
    no_street = make_order({"A": 1}, address=address(street=""))
    desk = Desk(record_in(S.HELD, {"A": 1}, order=no_street))
    record = desk.record
    record.hold_reason = Reason.ADDRESS_INCOMPLETE
    plan = desk.ask(A.ADDRESS_CHANGE, new_address=GUANGZHOU)
    assert kinds(plan) == [EventKind.ADDRESS_CHANGED, EventKind.AUDITED]
    assert record.state is S.AUDITED
    intent = plan.reserve
    assert intent is not None and intent.then is Then.ROUTE
    assert intent.warehouses == list(routing().candidates(record.order, GUANGZHOU))
    assert intent.warehouses[0] == "WH-GZ"  # the nearest to the new address


@pytest.mark.parametrize("state", [S.RELEASED, S.PICKED, S.SHIPPED, S.DELIVERED])
def test_an_address_change_after_release_is_refused(state: OrderState) -> None:
    desk = Desk(record_in(state, {"A": 1}))
    plan = desk.ask(A.ADDRESS_CHANGE, new_address=GUANGZHOU)
    assert plan.refused and desk.record.ship_to is None and sent(plan) == []
    assert "cancel and re-order" in events(plan)[0].detail
    assert desk.record.state is state and desk.record.aftersales[-1].status == "refused"


def test_an_address_change_without_an_address_is_refused() -> None:
    desk = Desk(record_in(S.RESERVED, {"A": 1}))
    plan = desk.ask(A.ADDRESS_CHANGE)
    assert plan.refused and desk.record.ship_to is None


# --- return -----------------------------------------------------------------------------------


def test_a_return_expects_the_shipped_units_back_where_they_left() -> None:
    desk = Desk(record_in(S.DELIVERED, {"A": 1, "B": 1}, parcels=SPLIT, status=C.DELIVERED))
    record = desk.record
    plan = desk.ask(A.RETURN, reason="too small")
    assert record.state is S.RETURNING and kinds(plan) == [EventKind.RETURN_REQUESTED]
    assert events(plan)[0].reason == "too small"
    assert {c.warehouse: lines_of(c) for c in sent(plan)} == {
        "WH-SH": [("A", 1)],
        "WH-BJ": [("B", 1)],
    }
    assert all(c.kind is CommandKind.RETURN_INBOUND for c in sent(plan))
    assert all(c.refers_to == "R-return-1" for c in sent(plan))
    assert plan.effects == []  # nothing moves until the units are received
    assert record.aftersales[-1].line_ids == ["L1", "L2"]
    assert desk.result.counts["returns_requested"] == 1


def test_a_return_of_some_lines_asks_only_those_back_and_never_twice() -> None:
    desk = delivered()
    record = desk.record
    plan = desk.ask(A.RETURN, line_ids=["L2"])
    assert [lines_of(c) for c in sent(plan)] == [[("B", 1)]]
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[0], K.RETURN_RECEIVED)
    assert record.state is S.REFUNDED and record.refunded == Decimal("10.00")
    again = desk.ask(A.RETURN, 2, line_ids=["L2"])
    assert again.refused and sent(again) == [] and record.state is S.REFUNDED


def test_a_return_of_a_partly_shipped_order_asks_back_only_what_left() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1, "B": 1}, parcels=SPLIT))
    desk.wms(outbound(desk.record, "WH-SH"), K.SHIPPED)
    plan = desk.ask(A.RETURN)
    assert [(c.warehouse, lines_of(c)) for c in sent(plan)] == [("WH-SH", [("A", 1)])]
    assert desk.record.state is S.RETURNING


@pytest.mark.parametrize("state", [S.RESERVED, S.RELEASED, S.PICKED, S.CANCELLED])
def test_nothing_shipped_nothing_to_return(state: OrderState) -> None:
    desk = Desk(record_in(state, {"A": 1}))
    plan = desk.ask(A.RETURN)
    assert plan.refused and sent(plan) == [] and desk.record.state is state


def test_a_request_naming_lines_the_order_does_not_have_is_refused() -> None:
    desk = delivered()
    plan = desk.ask(A.RETURN, line_ids=["L1", "L9"])
    assert plan.refused and "unknown lines L9" in events(plan)[0].detail
    assert sent(plan) == [] and desk.record.state is S.DELIVERED


def test_each_return_refunds_only_the_units_it_brought_back() -> None:
    """Two returns one after the other: the second refunds its own line, not the first's
    again (which left the buyer refunded for a line they kept)."""
    desk = delivered({"A": 1, "B": 1, "C": 1})
    record = desk.record
    desk.ask(A.RETURN, 1, line_ids=["L1"])
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[-1], K.RETURN_RECEIVED)
    assert record.refunded == Decimal("10.00")
    desk.ask(A.RETURN, 2, line_ids=["L2"])
    second = desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[-1], K.RETURN_RECEIVED)
    assert record.state is S.REFUNDED
    assert [u.extra["amount"] for u in updates(second)] == ["10.00"]
    assert record.refunded == Decimal("20.00")  # line L3 is still with the buyer


def test_a_return_refunds_the_lines_not_the_shipping_fee() -> None:
    order = make_order({"A": 1, "B": 1}, paid_total=Decimal("28.00"), shipping_fee=Decimal("8"))
    desk = Desk(record_in(S.DELIVERED, {"A": 1, "B": 1}, status=C.DELIVERED, order=order))
    record = desk.record
    desk.ask(A.RETURN, 1, line_ids=["L1"])
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[-1], K.RETURN_RECEIVED)
    desk.ask(A.RETURN, 2, line_ids=["L2"])
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[-1], K.RETURN_RECEIVED)
    assert record.refunded == Decimal("20.00")


# --- refund only ------------------------------------------------------------------------------


def test_a_refund_of_a_line_is_what_was_paid_for_it() -> None:
    desk = delivered()
    record = desk.record
    plan = desk.ask(A.REFUND, line_ids=["L2"])
    assert record.state is S.REFUNDED and record.refunded == Decimal("10.00")
    assert kinds(plan) == [EventKind.REFUNDED] and plan.effects == []  # no goods move
    [update] = updates(plan)
    assert update.status == "refunded"
    assert (update.extra["amount"], update.extra["currency"]) == ("10.00", "CNY")
    assert record.aftersales[-1].amount == Decimal("10.00")
    assert record.aftersales[-1].status == "done"
    assert record.close_due == CLOCK_S + CLOSE_AFTER_S
    assert desk.result.counts["refunds"] == 1


def test_a_refund_without_lines_or_amount_is_the_whole_order() -> None:
    desk = delivered()
    desk.ask(A.REFUND)
    assert desk.record.refunded == Decimal("30.00")


def test_refunds_add_up_to_what_was_paid_and_never_more() -> None:
    desk = delivered()  # 30.00 paid
    record = desk.record
    desk.ask(A.REFUND, 1, amount=Decimal("12.34"))
    desk.ask(A.REFUND, 2, amount=Decimal("17.66"))
    assert record.refunded == Decimal("30.00")
    over = desk.ask(A.REFUND, 3, amount=Decimal("0.01"))
    assert over.refused and record.refunded == Decimal("30.00") and updates(over) == []
    assert "exceeds what is left (0.00)" in events(over)[0].detail
    assert record.aftersales[-1].status == "refused"


@pytest.mark.parametrize("amount", ["30.01", "100", "0", "-5"])
def test_a_refund_beyond_what_is_left_or_not_positive_is_refused(amount: str) -> None:
    desk = delivered()
    plan = desk.ask(A.REFUND, amount=Decimal(amount))
    assert plan.refused and desk.record.refunded == 0 and desk.record.state is S.DELIVERED
    assert updates(plan) == [] and desk.result.counts["refused"] == 1


def test_the_whole_paid_amount_can_be_refunded_exactly() -> None:
    desk = delivered()
    desk.ask(A.REFUND, amount=Decimal("30.00"))
    assert desk.record.refunded == Decimal("30.00") and desk.record.state is S.REFUNDED


def test_a_refund_after_a_returns_refund_only_has_what_is_left() -> None:
    desk = delivered()
    record = desk.record
    desk.ask(A.RETURN, line_ids=["L1"])
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[0], K.RETURN_RECEIVED)
    assert record.refunded == Decimal("20.00")
    assert desk.ask(A.REFUND, 2, amount=Decimal("10.01")).refused
    desk.ask(A.REFUND, 3, amount=Decimal("10.00"))
    assert record.refunded == Decimal("30.00")


@pytest.mark.parametrize("state", [S.RESERVED, S.RELEASED, S.PICKED, S.CANCELLED, S.EXCHANGING])
def test_a_refund_before_shipping_is_refused(state: OrderState) -> None:
    desk = Desk(record_in(state, {"A": 1}))
    plan = desk.ask(A.REFUND, amount=Decimal("1"))
    assert plan.refused and desk.record.refunded == 0 and desk.record.state is state


# --- exchange ---------------------------------------------------------------------------------


def test_an_exchange_first_asks_for_the_replacement_under_its_own_reservation() -> None:
    desk = delivered()
    record = desk.record
    plan = desk.ask(A.EXCHANGE, line_ids=["L2"], exchange_sku="C", reason="wrong colour")
    intent = plan.reserve
    assert intent is not None
    shipment = make_id("X", record.order_id, "R-exchange-1")
    assert intent.shipment == shipment != record.order_id
    assert (intent.then, intent.request_id, intent.quantities) == (
        Then.EXCHANGE,
        "R-exchange-1",
        {"C": 1},
    )
    assert intent.warehouses == list(routing().candidates(record.order))
    assert record.aftersales[-1].shipment == shipment
    # Nothing asked back and nothing moved until the replacement is known to be reserved.
    assert record.state is S.DELIVERED and plan.messages == [] and plan.effects == []


def test_a_reserved_exchange_ships_the_replacement_and_asks_the_old_units_back() -> None:
    desk = delivered()
    record = desk.record
    plan = desk.ask(A.EXCHANGE, line_ids=["L1"], reason="wrong size")
    assert plan.reserve is not None and plan.reserve.quantities == {"A": 2}
    shipment = plan.reserve.shipment
    follow = desk.reserved(plan, granted(shipment, {"WH-GZ": {"A": 2}}))
    assert record.state is S.EXCHANGING and kinds(follow) == [EventKind.EXCHANGE_REQUESTED]
    assert events(follow)[0].reason == "wrong size"
    by_kind = {c.kind: c for c in sent(follow)}
    back, replacement = by_kind[CommandKind.RETURN_INBOUND], by_kind[CommandKind.OUTBOUND]
    assert (back.warehouse, lines_of(back)) == ("WH-SH", [("A", 2)])
    assert (replacement.warehouse, replacement.shipment) == ("WH-GZ", shipment)
    assert [(ln.line_id, ln.sku, ln.quantity) for ln in replacement.lines] == [("X-A", "A", 2)]
    assert record.aftersales[-1].status == "done" and desk.result.counts["exchanges"] == 1
    assert follow.effects == []
    # The replacement ships and commits its own reservation, not the order's.
    ref = outbound(record, "WH-GZ")
    assert ref.shipment == shipment
    shipped = desk.wms(ref, K.SHIPPED, tracking_number="SF-X")
    assert record.state is S.SHIPPED
    assert [(e.kind, e.shipment, e.units) for e in shipped.effects] == [
        (EffectKind.COMMIT, shipment, (("A", 2),))
    ]
    # The old units come back: restocked, and never refunded (the buyer got a replacement).
    received = desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[0], K.RETURN_RECEIVED)
    assert [(e.kind, e.shipment) for e in received.effects] == [
        (EffectKind.RETURN, record.order_id)
    ]
    assert record.refunded == 0 and updates(received) == []


def test_an_exchange_without_replacement_stock_is_refused_and_nothing_comes_back() -> None:
    desk = delivered()
    record = desk.record
    plan = desk.ask(A.EXCHANGE, exchange_sku="C")
    assert plan.reserve is not None
    follow = desk.reserved(plan, short(plan.reserve.shipment))
    assert follow.refused and kinds(follow) == [EventKind.ACTION_REFUSED]
    assert sent(follow) == [] and record.state is S.DELIVERED
    assert record.aftersales[-1].status == "refused"
    assert commands_of(record, CommandKind.RETURN_INBOUND) == []


@pytest.mark.parametrize("state", [S.RELEASED, S.RETURNING, S.CANCELLED])
def test_an_exchange_of_nothing_shipped_is_refused(state: OrderState) -> None:
    desk = Desk(record_in(state, {"A": 1}))
    plan = desk.ask(A.EXCHANGE)
    assert plan.refused and plan.reserve is None and desk.record.state is state


def test_an_exchanged_line_cannot_be_returned_again() -> None:
    desk = delivered({"A": 1})
    plan = desk.ask(A.EXCHANGE)
    assert plan.reserve is not None
    desk.reserved(plan, granted(plan.reserve.shipment, {"WH-SH": {"A": 1}}))
    desk.wms(outbound(desk.record, "WH-SH"), K.SHIPPED)  # the replacement
    again = desk.ask(A.RETURN, 2)
    assert again.refused and sent(again) == []


def test_a_replacement_is_every_bought_unit_but_not_the_gifts() -> None:
    units = {
        "WH-SH": [
            CommandLine(line_id="L1", sku="A", quantity=2),
            CommandLine(line_id="G1", sku="CASE", quantity=1, is_gift=True),
        ],
        "WH-BJ": [CommandLine(line_id="L2", sku="A", quantity=1)],
    }
    assert replacement_units(units, "") == {"A": 3}
    assert replacement_units(units, "B") == {"B": 3}


# --- platform after-sales (docs/decisions/0023-platform-aftersales.md) ------------------------


def test_a_platform_cancel_of_some_lines_before_shipment_is_refused_for_a_person() -> None:
    desk = Desk(record_in(S.ROUTED, {"A": 2, "B": 1}))
    plan = desk.ask(A.CANCEL, line_ids=["L1"])
    assert desk.record.state is S.ROUTED and desk.effects == []
    assert kinds(plan) == [EventKind.ACTION_REFUSED]
    assert "some lines only" in events(plan)[0].detail
    whole = desk.ask(A.CANCEL, 2, line_ids=["L1", "L2"])
    assert desk.record.state is S.CANCELLED and kinds(whole)[-1] is EventKind.CANCELLED


def test_lines_named_by_merchant_sku_are_the_order_lines_of_that_sku() -> None:
    desk = delivered()
    for line in desk.record.order.lines:
        object.__setattr__(line, "channel_sku", f"M-{line.sku}")
    plan = desk.ask(A.RETURN, channel_skus=["M-B"])
    [ret] = sent(plan)
    assert ret.kind is CommandKind.RETURN_INBOUND and [ln.line_id for ln in ret.lines] == ["L2"]
    refused = desk.ask(A.REFUND, channel_skus=["M-NOPE"])
    assert kinds(refused) == [EventKind.ACTION_REFUSED]
    assert "sku M-NOPE" in events(refused)[0].detail
