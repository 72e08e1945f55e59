"""The WMS loop without Redis (order/wms.py): what each answer on ``oms.wms.events`` does to an
order record built in a given state: its new state, its parcels' statuses, the messages it emits
(events, commands, write-backs to the shop), the stock effects it saves for later, and what it
refuses. Stock itself is Redis's: here only the effects a decision asks for are checked."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order.lifecycle import ALLOWED
from order.plan import Plan
from order.record import LIVE_OUTBOUND, CommandRef, CommandStatus, OrderRecord
from order.reservation import EffectKind, Reservation, ReserveStatus, StockEffect
from order.wms import IN_PLAY, own_skus, own_units, refund_value, returned_lines
from streams.messages import AfterSalesKind, CommandKind, CommandLine, EventKind, OrderState
from streams.messages import WmsEventKind as K
from tests.unit.records import (
    CLOCK_S,
    CLOSE_AFTER_S,
    PRICE,
    Desk,
    address,
    answer,
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
SPLIT = {"WH-SH": {"A": 1}, "WH-BJ": {"B": 1}}  # one sku in each warehouse: two parcels


def split_desk(state: OrderState = S.RELEASED, status: CommandStatus = C.SENT) -> Desk:
    return Desk(record_in(state, {"A": 1, "B": 1}, parcels=SPLIT, status=status))


# --- accepted, picked -------------------------------------------------------------------------


def test_accepted_then_picked_move_the_order_and_its_parcel_along() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 2}))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.ACCEPTED)
    assert desk.record.state is S.ACCEPTED and ref.status is C.ACCEPTED
    [event] = events(plan)
    assert plan.messages == [event]
    assert (event.kind, event.from_state, event.to_state) == (
        EventKind.WMS_ACCEPTED,
        S.RELEASED,
        S.ACCEPTED,
    )
    assert not plan.effects and not plan.refused and plan.reserve is None
    again = desk.wms(ref, K.ACCEPTED, n=2)  # a repeated answer is noted, moves nothing
    assert kinds(again) == [EventKind.WMS_ACCEPTED] and desk.record.state is S.ACCEPTED
    assert [e.to_state for e in events(again)] == [None]
    desk.wms(ref, K.PICKED)
    assert desk.record.state is S.PICKED and ref.status is C.PICKED
    late = desk.wms(ref, K.ACCEPTED, n=3)  # an accepted overtaken by picked: no step back
    assert desk.record.state is S.PICKED and ref.status is C.PICKED
    assert kinds(late) == [EventKind.WMS_ACCEPTED] and not late.refused


def test_picked_may_come_without_accepted() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    ref = outbound(desk.record)
    desk.wms(ref, K.PICKED)
    assert desk.record.state is S.PICKED and ref.status is C.PICKED


def test_one_parcel_accepted_of_a_split_order_moves_the_order_once() -> None:
    desk = split_desk()
    desk.wms(outbound(desk.record, "WH-SH"), K.ACCEPTED)
    second = desk.wms(outbound(desk.record, "WH-BJ"), K.ACCEPTED)
    assert desk.record.state is S.ACCEPTED
    assert [c.status for c in desk.record.commands] == [C.ACCEPTED, C.ACCEPTED]
    assert [e.to_state for e in events(second)] == [None]


# --- shipped ----------------------------------------------------------------------------------


def test_shipped_commits_the_parcels_units_and_tells_the_shop() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 2, "B": 1}, status=C.PICKED))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.SHIPPED, carrier="ZTO", tracking_number="ZT123")
    record = desk.record
    assert record.state is S.SHIPPED and kinds(plan) == [EventKind.SHIPPED]
    assert (ref.status, ref.carrier, ref.tracking_number) == (C.SHIPPED, "ZTO", "ZT123")
    assert plan.effects == [
        StockEffect(
            kind=EffectKind.COMMIT,
            shipment=record.order_id,
            skus=("A", "B"),
            warehouse="WH-SH",
            units=(("A", 2), ("B", 1)),
        )
    ]
    [update] = updates(plan)
    assert (update.status, update.carrier, update.tracking_number) == ("shipped", "ZTO", "ZT123")
    assert update.order_id == record.order_id and update.extra["api"] == "webhook"
    assert desk.result.counts["parcels_shipped"] == 1 and not plan.refused


def test_a_shipped_answer_without_a_carrier_keeps_the_one_routing_chose() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.SHIPPED, tracking_number="T1")
    assert ref.carrier == "SF" and updates(plan)[0].carrier == "SF"


def test_shipped_twice_commits_once() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 2}, status=C.PICKED))
    ref = outbound(desk.record)
    desk.wms(ref, K.SHIPPED, tracking_number="T1")
    again = desk.wms(ref, K.SHIPPED, tracking_number="T1", n=2)  # another event id, same news
    assert again.refused and again.effects == [] and updates(again) == []
    assert kinds(again) == [EventKind.TRANSITION_REFUSED]
    assert desk.result.counts["refused"] == 1
    assert [e.kind for e in desk.effects] == [EffectKind.COMMIT]
    assert desk.record.state is S.SHIPPED


def test_split_parcels_ship_partially_then_wholly_each_committing_its_own_warehouse() -> None:
    desk = split_desk(S.ACCEPTED, C.ACCEPTED)
    record = desk.record
    first = desk.wms(outbound(record, "WH-SH"), K.SHIPPED, tracking_number="T-SH")
    assert record.state is S.PARTIALLY_SHIPPED and kinds(first) == [EventKind.PARTIALLY_SHIPPED]
    [commit] = first.effects
    assert (commit.warehouse, commit.skus, commit.units) == ("WH-SH", ("A",), (("A", 1),))
    assert [u.tracking_number for u in updates(first)] == ["T-SH"]  # each parcel's number
    assert outbound(record, "WH-BJ").status is C.ACCEPTED
    second = desk.wms(outbound(record, "WH-BJ"), K.SHIPPED, tracking_number="T-BJ")
    assert record.state is S.SHIPPED and kinds(second) == [EventKind.SHIPPED]
    [commit] = second.effects
    assert (commit.warehouse, commit.skus, commit.units) == ("WH-BJ", ("B",), (("B", 1),))
    assert [u.tracking_number for u in updates(second)] == ["T-BJ"]


def test_a_sku_split_over_two_warehouses_commits_each_share_where_it_left() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 3}, parcels={"WH-SH": {"A": 2}, "WH-BJ": {"A": 1}}))
    record = desk.record
    assert {c.warehouse: lines_of(c) for c in record.commands} == {
        "WH-BJ": [("A", 1)],
        "WH-SH": [("A", 2)],
    }
    plan = desk.wms(outbound(record, "WH-SH"), K.SHIPPED)
    assert [(e.warehouse, e.units) for e in plan.effects] == [("WH-SH", (("A", 2),))]
    assert record.state is S.PARTIALLY_SHIPPED
    plan = desk.wms(outbound(record, "WH-BJ"), K.SHIPPED)
    assert [(e.warehouse, e.units) for e in plan.effects] == [("WH-BJ", (("A", 1),))]
    assert record.state is S.SHIPPED


def test_a_merged_parcel_commits_only_the_orders_own_units() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    ref = outbound(desk.record)
    ref.lines = [*ref.lines, CommandLine(line_id="L1", sku="B", quantity=4, order_id="O-OTHER")]
    plan = desk.wms(ref, K.SHIPPED)
    assert [(e.skus, e.units) for e in plan.effects] == [(("A",), (("A", 1),))]


# --- delivered --------------------------------------------------------------------------------


def test_delivered_settles_the_parcel_and_opens_the_after_sales_window() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 2}, status=C.SHIPPED))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.DELIVERED)
    record = desk.record
    assert record.state is S.DELIVERED and ref.status is C.DELIVERED
    assert kinds(plan) == [EventKind.DELIVERED]
    assert plan.effects == [
        StockEffect(
            kind=EffectKind.SETTLE, shipment=record.order_id, skus=("A",), warehouse="WH-SH"
        )
    ]
    assert record.close_due == CLOCK_S + CLOSE_AFTER_S  # from the clock, not the event time


def test_delivered_before_shipped_is_only_noted() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.DELIVERED)
    assert desk.record.state is S.RELEASED and ref.status is C.SENT
    assert kinds(plan) == [EventKind.DELIVERED] and plan.effects == []
    assert desk.record.close_due == 0


def test_a_split_order_is_delivered_when_its_last_parcel_is() -> None:
    desk = split_desk()
    record = desk.record
    sh, bj = outbound(record, "WH-SH"), outbound(record, "WH-BJ")
    desk.wms(sh, K.SHIPPED)
    early = desk.wms(sh, K.DELIVERED)  # one parcel arrives while the other is still packed
    assert record.state is S.PARTIALLY_SHIPPED and sh.status is C.DELIVERED
    assert [(e.kind, e.warehouse) for e in early.effects] == [(EffectKind.SETTLE, "WH-SH")]
    assert record.close_due == 0
    shipped = desk.wms(bj, K.SHIPPED)
    assert record.state is S.SHIPPED and kinds(shipped) == [EventKind.SHIPPED]
    last = desk.wms(bj, K.DELIVERED)
    assert record.state is S.DELIVERED and record.close_due == CLOCK_S + CLOSE_AFTER_S
    assert [(e.kind, e.warehouse) for e in last.effects] == [(EffectKind.SETTLE, "WH-BJ")]


# --- exception --------------------------------------------------------------------------------


def test_an_exception_waits_for_a_person_then_the_parcel_goes_again() -> None:
    desk = Desk(record_in(S.ACCEPTED, {"A": 2}, status=C.ACCEPTED))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.EXCEPTION, detail="box crushed")
    record = desk.record
    assert record.state is S.EXCEPTION and ref.status is C.FAILED
    assert record.hold_reason == "wms_exception" and plan.effects == []  # the stock stays
    assert kinds(plan) == [EventKind.WMS_EXCEPTION]
    again = desk.wms(ref, K.EXCEPTION, n=2)  # the failed parcel is no longer being worked
    assert again.refused and record.state is S.EXCEPTION
    follow = desk.resend()
    [command] = sent(follow)
    assert (command.warehouse, command.attempt, lines_of(command)) == ("WH-SH", 2, [("A", 2)])
    assert command.command_id != ref.command_id and ref.status is C.SUPERSEDED
    assert outbound(record).command_id == command.command_id
    assert record.state is S.RELEASED and record.hold_reason == "" and follow.effects == []


def test_an_exception_after_shipping_is_refused() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 1}, status=C.SHIPPED))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.EXCEPTION)
    assert plan.refused and kinds(plan) == [EventKind.TRANSITION_REFUSED]
    assert desk.result.counts["refused"] == 1
    assert desk.record.state is S.SHIPPED and ref.status is C.SHIPPED


def test_the_other_parcel_of_an_exception_ships_without_moving_the_order() -> None:
    desk = split_desk()
    record = desk.record
    desk.wms(outbound(record, "WH-SH"), K.EXCEPTION)
    plan = desk.wms(outbound(record, "WH-BJ"), K.SHIPPED, tracking_number="T-BJ")
    assert record.state is S.EXCEPTION  # still the person's
    assert kinds(plan) == [EventKind.SHIPPED] and events(plan)[0].to_state is None
    assert [(e.kind, e.warehouse) for e in plan.effects] == [(EffectKind.COMMIT, "WH-BJ")]
    assert [u.tracking_number for u in updates(plan)] == ["T-BJ"]
    follow = desk.resend()  # the person clears it: partly shipped again
    assert record.state is S.PARTIALLY_SHIPPED
    assert [c.warehouse for c in sent(follow)] == ["WH-SH"]


# --- short pick -------------------------------------------------------------------------------


def test_a_short_pick_writes_the_missing_units_off_and_reroutes_elsewhere() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 2, "B": 1}, status=C.PICKED))
    record, ref = desk.record, outbound(desk.record)
    missing = [CommandLine(line_id="L1", sku="A", quantity=1)]
    plan = desk.wms(ref, K.SHORT_PICK, lines=missing, detail="one A not on the shelf")
    assert ref.status is C.SUPERSEDED and record.excluded_warehouses == ["WH-SH"]
    # Every sku of the order is undone (the reservation's channel quota goes back with it, to be
    # charged again by the re-reservation); only the missing units are written off.
    assert plan.effects == [
        StockEffect(
            kind=EffectKind.SHORT_PICK,
            shipment=record.order_id,
            skus=("A", "B"),
            warehouse="WH-SH",
            units=(("A", 1),),
        )
    ]
    assert kinds(plan) == [EventKind.SHORT_PICK] and record.state is S.PICKED
    assert desk.result.counts["short_picks"] == 1
    intent = plan.reserve
    assert intent is not None and intent.shipment == record.order_id
    assert intent.quantities == {"A": 2, "B": 1}
    assert intent.warehouses == [w for w in routing().candidates(record.order) if w != "WH-SH"]
    follow = desk.reserved(plan, granted(record.order_id, {"WH-GZ": {"A": 2, "B": 1}}))
    assert kinds(follow) == [EventKind.RESERVED, EventKind.ROUTED, EventKind.RELEASED]
    [command] = sent(follow)
    assert (command.warehouse, command.attempt) == ("WH-GZ", 2)
    assert command.command_id != ref.command_id
    assert lines_of(command) == [("A", 2), ("B", 1)]
    assert record.state is S.RELEASED and record.warehouse == "WH-GZ"
    assert [c.status for c in record.commands] == [C.SUPERSEDED, C.SENT]


def test_a_short_pick_nobody_else_can_serve_holds_the_order() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 2}))
    ref = outbound(desk.record)
    plan = desk.wms(ref, K.SHORT_PICK, lines=[CommandLine(line_id="L1", sku="A", quantity=2)])
    follow = desk.reserved(plan, short(desk.record.order_id))
    assert desk.record.state is S.HELD and desk.record.hold_reason == "out_of_stock"
    assert sent(follow) == [] and follow.effects == []


def test_a_short_pick_on_one_parcel_of_several_waits_for_a_person() -> None:
    desk = split_desk()
    record = desk.record
    sh = outbound(record, "WH-SH")
    plan = desk.wms(sh, K.SHORT_PICK, lines=[CommandLine(line_id="L1", sku="A", quantity=1)])
    assert record.state is S.EXCEPTION and sh.status is C.FAILED
    assert record.hold_reason == "short_pick" and record.excluded_warehouses == []
    assert plan.effects == [] and plan.reserve is None  # the other parcel keeps its stock
    assert outbound(record, "WH-BJ").status is C.SENT


def test_a_short_pick_after_the_other_parcel_shipped_still_waits_for_a_person() -> None:
    desk = split_desk()
    record = desk.record
    desk.wms(outbound(record, "WH-BJ"), K.SHIPPED)
    plan = desk.wms(
        outbound(record, "WH-SH"),
        K.SHORT_PICK,
        lines=[CommandLine(line_id="L1", sku="A", quantity=1)],
    )
    assert record.state is S.EXCEPTION and plan.effects == [] and plan.reserve is None


# --- answers about commands no longer being worked --------------------------------------------


@pytest.mark.parametrize("kind", [K.SHIPPED, K.SHORT_PICK, K.EXCEPTION])
@pytest.mark.parametrize("status", [C.SUPERSEDED, C.CANCELLED, C.FAILED, C.SHIPPED, C.DELIVERED])
def test_an_answer_about_a_parcel_no_longer_worked_is_refused(
    kind: K, status: CommandStatus
) -> None:
    desk = split_desk()
    record = desk.record
    stale, live = outbound(record, "WH-SH"), outbound(record, "WH-BJ")
    stale.status = status
    lines = [CommandLine(line_id="L1", sku="A", quantity=1)]
    plan = desk.wms(stale, kind, lines=lines, tracking_number="LATE")
    assert plan.refused and kinds(plan) == [EventKind.TRANSITION_REFUSED]
    assert desk.result.counts["refused"] == 1
    assert plan.effects == [] and plan.reserve is None and updates(plan) == []
    assert record.state is S.RELEASED and record.excluded_warehouses == []
    assert (stale.status, live.status) == (status, C.SENT)
    assert stale.tracking_number == ""


def test_a_superseded_parcel_shipping_after_its_reroute_is_refused() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    record, first = desk.record, outbound(desk.record)
    plan = desk.wms(first, K.SHORT_PICK, lines=[CommandLine(line_id="L1", sku="A", quantity=1)])
    desk.reserved(plan, granted(record.order_id, {"WH-BJ": {"A": 1}}))
    late = desk.wms(first, K.SHIPPED, tracking_number="GHOST")
    assert late.refused and late.effects == [] and record.state is S.RELEASED
    shipped = desk.wms(outbound(record, "WH-BJ"), K.SHIPPED)
    assert record.state is S.SHIPPED
    assert [(e.kind, e.warehouse) for e in shipped.effects] == [(EffectKind.COMMIT, "WH-BJ")]


def test_an_answer_about_an_unknown_command_is_refused() -> None:
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    ghost = outbound(desk.record).model_copy(update={"command_id": "C-NOBODY"})
    plan = desk.wms(ghost, K.SHIPPED)
    assert plan.refused and desk.result.counts["refused"] == 1
    assert "unknown command C-NOBODY" in events(plan)[0].detail
    assert plan.effects == [] and desk.record.state is S.RELEASED


def test_only_an_outbound_ships() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 1}, status=C.SHIPPED))
    desk.ask(AfterSalesKind.RETURN)
    [ret] = commands_of(desk.record, CommandKind.RETURN_INBOUND)
    plan = desk.wms(ret, K.SHIPPED)
    assert plan.refused and plan.effects == [] and desk.record.state is S.RETURNING


# --- answers to a cancel: intercept confirmed or failed ---------------------------------------


def test_a_confirmed_stop_cancels_the_order_and_gives_the_stock_back() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 2}, status=C.PICKED))
    record, ref = desk.record, outbound(desk.record)
    desk.ask(AfterSalesKind.CANCEL)
    [stop] = commands_of(record, CommandKind.INTERCEPT)
    plan = desk.wms(stop, K.CANCELLED)
    assert record.state is S.CANCELLED and ref.status is C.CANCELLED
    assert kinds(plan) == [EventKind.CANCELLED]
    assert plan.effects == [
        StockEffect(kind=EffectKind.RELEASE, shipment=record.order_id, skus=("A",))
    ]
    assert [u.status for u in updates(plan)] == ["cancelled"]
    assert desk.result.counts["cancelled"] == 1


def test_a_split_order_is_cancelled_once_every_parcel_stopped() -> None:
    desk = split_desk()
    record = desk.record
    desk.ask(AfterSalesKind.CANCEL)
    stops = commands_of(record, CommandKind.CANCEL)
    assert {s.refers_to for s in stops} == {c.command_id for c in record.live_commands()}
    first = desk.wms(stops[0], K.CANCELLED)
    assert record.state is S.INTERCEPTING and first.effects == [] and updates(first) == []
    assert kinds(first) == [EventKind.CANCELLED]  # noted: waiting for the other parcels
    last = desk.wms(stops[1], K.CANCELLED)
    assert record.state is S.CANCELLED
    assert [(e.kind, e.skus) for e in last.effects] == [(EffectKind.RELEASE, ("A", "B"))]


def test_a_failed_intercept_commits_the_parcel_and_turns_the_cancel_into_a_return() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 2}, status=C.PICKED))
    record, ref = desk.record, outbound(desk.record)
    desk.ask(AfterSalesKind.CANCEL)
    [stop] = commands_of(record, CommandKind.INTERCEPT)
    event = answer(record, stop, K.INTERCEPT_FAILED, tracking_number="SF9", detail="gone")
    plan = desk.hear(event)
    assert record.state is S.RETURNING and ref.status is C.SHIPPED
    assert ref.tracking_number == "SF9"
    assert [(e.kind, e.warehouse, e.units) for e in plan.effects] == [
        (EffectKind.COMMIT, "WH-SH", (("A", 2),))
    ]
    [ret] = sent(plan)
    assert ret.kind is CommandKind.RETURN_INBOUND and ret.warehouse == "WH-SH"
    assert lines_of(ret) == [("A", 2)] and ret.refers_to == f"intercept-{event.event_id}"
    entry = record.aftersales[-1]
    assert (entry.kind, entry.request_id, entry.line_ids) == (
        AfterSalesKind.RETURN,
        f"intercept-{event.event_id}",
        ["L1"],
    )
    back = desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[0], K.RETURN_RECEIVED)
    assert record.state is S.REFUNDED and record.refunded == Decimal("20.00")
    assert [u.extra["amount"] for u in updates(back)] == ["20.00"]


def test_a_failed_intercept_after_the_shipped_answer_commits_nothing_twice() -> None:
    desk = Desk(record_in(S.PICKED, {"A": 1}, status=C.PICKED))
    record, ref = desk.record, outbound(desk.record)
    desk.ask(AfterSalesKind.CANCEL)
    [stop] = commands_of(record, CommandKind.INTERCEPT)
    crossed = desk.wms(ref, K.SHIPPED, tracking_number="SF1")  # crossed the intercept
    assert record.state is S.INTERCEPTING and kinds(crossed) == [EventKind.SHIPPED]
    assert [e.kind for e in crossed.effects] == [EffectKind.COMMIT]
    plan = desk.wms(stop, K.INTERCEPT_FAILED)
    assert record.state is S.RETURNING and plan.effects == []
    assert [c.kind for c in sent(plan)] == [CommandKind.RETURN_INBOUND]


def crossed_cancel() -> tuple[Desk, list[CommandRef]]:
    """A split order cancelled at the WMS while its WH-SH parcel was already leaving: that
    parcel ships across the cancel; the stops of both parcels are still to be answered."""
    desk = split_desk()
    record = desk.record
    desk.ask(AfterSalesKind.CANCEL)
    desk.wms(outbound(record, "WH-SH"), K.SHIPPED, tracking_number="SF-SH")
    assert record.state is S.INTERCEPTING
    stops = {c.warehouse: c for c in commands_of(record, CommandKind.CANCEL)}
    return desk, [stops["WH-SH"], stops["WH-BJ"]]


def test_a_crossed_parcel_comes_back_and_the_stopped_one_gives_its_stock_back() -> None:
    """The shipped parcel's intercept fails first, then the other parcel is stopped: the order
    expects the shipped units back, and the stopped parcel's units are given back (they used
    to stay reserved for good)."""
    desk, (sh_stop, bj_stop) = crossed_cancel()
    record = desk.record
    failed = desk.wms(sh_stop, K.INTERCEPT_FAILED)
    assert record.state is S.RETURNING
    assert [(c.kind, c.warehouse) for c in sent(failed)] == [(CommandKind.RETURN_INBOUND, "WH-SH")]
    stopped = desk.wms(bj_stop, K.CANCELLED)
    assert outbound(record, "WH-BJ").status is C.CANCELLED
    assert [(e.kind, e.skus) for e in stopped.effects] == [(EffectKind.RELEASE, ("A", "B"))]
    assert record.state is S.RETURNING and not stopped.refused


def test_an_order_whose_parcel_crossed_the_cancel_is_not_cancelled_when_the_other_stops() -> None:
    """The other parcel is stopped first: the order must not be called cancelled (the shop
    would refund it all) while a parcel is on its way to the buyer; it becomes a return when
    that parcel's intercept fails."""
    desk, (sh_stop, bj_stop) = crossed_cancel()
    record = desk.record
    stopped = desk.wms(bj_stop, K.CANCELLED)
    assert record.state is S.INTERCEPTING and updates(stopped) == [] and stopped.effects == []
    assert outbound(record, "WH-BJ").status is C.CANCELLED
    failed = desk.wms(sh_stop, K.INTERCEPT_FAILED)
    assert record.state is S.RETURNING
    [ret] = sent(failed)
    assert (ret.kind, ret.warehouse, lines_of(ret)) == (
        CommandKind.RETURN_INBOUND,
        "WH-SH",
        [("A", 1)],
    )
    # Committed when it shipped; the stopped parcel's units go back now, once.
    assert [(e.kind, e.skus) for e in failed.effects] == [(EffectKind.RELEASE, ("A", "B"))]
    desk.wms(commands_of(record, CommandKind.RETURN_INBOUND)[0], K.RETURN_RECEIVED)
    assert record.state is S.REFUNDED and record.refunded == Decimal("10.00")


def test_a_second_parcel_crossing_the_cancel_is_noted_and_its_number_reaches_the_shop() -> None:
    """Both parcels leave across the cancel: the first one's failed intercept made the order a
    return; the second one's shipment is committed and written back, not refused as a move."""
    desk, (sh_stop, _) = crossed_cancel()
    record = desk.record
    desk.wms(sh_stop, K.INTERCEPT_FAILED)
    assert record.state is S.RETURNING
    plan = desk.wms(outbound(record, "WH-BJ"), K.SHIPPED, tracking_number="SF-BJ")
    assert not plan.refused and kinds(plan) == [EventKind.SHIPPED]
    assert record.state is S.RETURNING and outbound(record, "WH-BJ").status is C.SHIPPED
    assert [(e.kind, e.warehouse) for e in plan.effects] == [(EffectKind.COMMIT, "WH-BJ")]
    assert [u.tracking_number for u in updates(plan)] == ["SF-BJ"]


def test_a_short_pick_while_the_order_is_being_cancelled_reserves_nothing_again() -> None:
    """The stop's answer cancels the order: re-reserving it elsewhere would hold stock for a
    cancelled order (and its moves to reserved and routed would be refused)."""
    desk = Desk(record_in(S.RELEASED, {"A": 2}))
    record, ref = desk.record, outbound(desk.record)
    desk.ask(AfterSalesKind.CANCEL)
    [stop] = commands_of(record, CommandKind.CANCEL)
    plan = desk.wms(ref, K.SHORT_PICK, lines=[CommandLine(line_id="L1", sku="A", quantity=1)])
    assert plan.reserve is None and not plan.refused and record.state is S.INTERCEPTING
    assert [(e.kind, e.units) for e in plan.effects] == [(EffectKind.SHORT_PICK, (("A", 1),))]
    done = desk.wms(stop, K.CANCELLED)
    assert record.state is S.CANCELLED
    assert [e.kind for e in done.effects] == [EffectKind.RELEASE]


def test_a_cancelled_answer_nobody_asked_for_leaves_the_parcel_live() -> None:
    """A WMS saying it cancelled an outbound no stop was sent for: noted, nothing changed (the
    parcel marked cancelled left the order released with its stock and no way to cancel)."""
    desk = Desk(record_in(S.RELEASED, {"A": 1}))
    record, ref = desk.record, outbound(desk.record)
    plan = desk.wms(ref, K.CANCELLED)
    assert kinds(plan) == [EventKind.STOP_CONFIRMED] and plan.effects == []
    assert ref.status is C.SENT and record.state is S.RELEASED
    desk.ask(AfterSalesKind.CANCEL)  # the order can still be cancelled through the WMS
    assert record.state is S.INTERCEPTING


def test_a_stop_answer_when_no_stop_was_asked_changes_nothing() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 1}, status=C.SHIPPED))
    ref = outbound(desk.record)
    failed = desk.wms(ref, K.INTERCEPT_FAILED)
    assert desk.record.state is S.SHIPPED and failed.effects == [] and sent(failed) == []
    cancelled = desk.wms(ref, K.CANCELLED)
    assert desk.record.state is S.SHIPPED and cancelled.effects == []
    assert ref.status is C.SHIPPED


# --- returns received -------------------------------------------------------------------------


@pytest.mark.parametrize("sellable", [True, False])
def test_a_received_return_restocks_only_what_is_sellable_and_refunds(sellable: bool) -> None:
    desk = Desk(record_in(S.DELIVERED, {"A": 2, "B": 1}, status=C.DELIVERED))
    record = desk.record
    desk.ask(AfterSalesKind.RETURN, line_ids=["L1"])
    [ret] = commands_of(record, CommandKind.RETURN_INBOUND)
    event = answer(record, ret, K.RETURN_RECEIVED, sellable=sellable)
    plan = desk.hear(event)
    assert plan.effects == [
        StockEffect(
            kind=EffectKind.RETURN,
            shipment=record.order_id,
            skus=("A",),
            warehouse="WH-SH",
            units=(("A", 2),),
            sellable=sellable,
            receipt=event.event_id,
        )
    ]
    assert ret.status is C.DONE and record.aftersales[-1].status == "done"
    assert kinds(plan) == [EventKind.RETURN_RECEIVED, EventKind.RETURNED, EventKind.REFUNDED]
    assert record.state is S.REFUNDED and record.refunded == Decimal("20.00")
    assert record.close_due == CLOCK_S + CLOSE_AFTER_S
    again = desk.hear(answer(record, ret, K.RETURN_RECEIVED, n=2))  # the same box, told twice
    assert again.effects == [] and record.refunded == Decimal("20.00")


def test_a_return_in_two_warehouses_is_refunded_when_both_boxes_arrived() -> None:
    desk = split_desk(S.DELIVERED, C.DELIVERED)
    record = desk.record
    desk.ask(AfterSalesKind.RETURN)
    rets = commands_of(record, CommandKind.RETURN_INBOUND)
    assert sorted(r.warehouse for r in rets) == ["WH-BJ", "WH-SH"]
    first = desk.wms(rets[0], K.RETURN_RECEIVED)
    assert record.state is S.RETURNING and record.refunded == 0
    assert [e.kind for e in first.effects] == [EffectKind.RETURN]
    desk.wms(rets[1], K.RETURN_RECEIVED)
    assert record.state is S.REFUNDED and record.refunded == Decimal("20.00")


def test_a_return_received_for_an_outbound_is_not_expected() -> None:
    desk = Desk(record_in(S.SHIPPED, {"A": 1}, status=C.SHIPPED))
    plan = desk.wms(outbound(desk.record), K.RETURN_RECEIVED)
    assert plan.effects == [] and desk.record.state is S.SHIPPED
    assert kinds(plan) == [EventKind.RETURN_RECEIVED]


# --- every handled answer keeps to the state machine -------------------------------------------


@pytest.mark.parametrize("kind", list(K))
@pytest.mark.parametrize(
    "state", [S.RELEASED, S.ACCEPTED, S.PICKED, S.SHIPPED, S.DELIVERED, S.CANCELLED, S.CLOSED]
)
def test_an_answer_moves_the_order_only_along_the_state_machine(kind: K, state: OrderState) -> None:
    """The record's state changes only through recorded moves, each one the table allows."""
    status = {S.SHIPPED: C.SHIPPED, S.DELIVERED: C.DELIVERED, S.CLOSED: C.DELIVERED}.get(
        state, C.SENT
    )
    desk = Desk(record_in(state, {"A": 1}, status=status))
    lines = [CommandLine(line_id="L1", sku="A", quantity=1)]
    desk.wms(outbound(desk.record), kind, lines=lines)
    assert_moves_in_table(desk, state)
    if state in (S.CANCELLED, S.CLOSED):
        assert desk.record.state is state


def assert_moves_in_table(desk: Desk, start: OrderState) -> None:
    current = start
    for entry in desk.record.history[1:]:
        if entry.to_state is not None:
            assert entry.from_state is current, (entry.kind, entry.from_state, current)
            assert entry.to_state in ALLOWED[current]
            current = entry.to_state
    assert desk.record.state is current


# --- random lifecycles: the state machine, the stock effects and the money stay consistent -----


@dataclass
class Books:
    """The stock the saved effects ask for, per reservation, as the Redis scripts keep it:
    reserved units per (sku, warehouse), units shipped, units back."""

    reserved: defaultdict[str, Counter[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    shipped: defaultdict[str, Counter[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    back: defaultdict[str, Counter[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(Counter)
    )

    def grant(self, reservation: Reservation) -> None:
        held = self.reserved[reservation.order_id]
        assert not +held, f"{reservation.order_id} reserves again while holding {dict(held)}"
        for a in reservation.allocations:
            held[(a.sku, a.warehouse)] += a.quantity

    def drop(self, shipment: str, skus: tuple[str, ...], warehouse: str = "") -> None:
        held = self.reserved[shipment]
        for key in list(held):
            if key[0] in skus and warehouse in ("", key[1]):
                del held[key]

    def apply(self, e: StockEffect) -> None:
        held = self.reserved[e.shipment]
        if e.kind in (EffectKind.RELEASE, EffectKind.UNDO):
            self.drop(e.shipment, e.skus)
        elif e.kind is EffectKind.COMMIT:
            for sku, units in e.units:
                assert units <= held[(sku, e.warehouse)], f"{sku} shipped beyond its reservation"
                self.shipped[e.shipment][(sku, e.warehouse)] += units
            self.drop(e.shipment, e.skus, e.warehouse)
        elif e.kind is EffectKind.SETTLE:
            for sku in e.skus:
                assert self.shipped[e.shipment][(sku, e.warehouse)], f"{sku} settled, not shipped"
        elif e.kind is EffectKind.RETURN:
            for sku, units in e.units:
                self.back[e.shipment][(sku, e.warehouse)] += units
                came = self.back[e.shipment][(sku, e.warehouse)]
                assert came <= self.shipped[e.shipment][(sku, e.warehouse)], f"{sku} back twice"
        else:  # SHORT_PICK: the missing units were reserved there; the rest is undone
            for sku, units in e.units:
                assert units <= held[(sku, e.warehouse)], f"{sku} short beyond its reservation"
            self.drop(e.shipment, e.skus)


def keeps_stock_with_a_parcel(record: OrderRecord, books: Books) -> None:
    """Units reserved for a shipment are there for a parcel still being worked, one a person
    decides about, or one stopped while its order waits for its other parcels' answers: none
    is held for an order that ended or for a parcel that will never ship."""
    for shipment, held in books.reserved.items():
        parcels = [
            c for c in record.commands if c.kind is CommandKind.OUTBOUND and c.shipment == shipment
        ]
        # While intercepting (or while another parcel may still be stopped) the stopped
        # parcels keep their units until every stop is answered.
        waiting = record.state is S.INTERCEPTING or any(c.status in LIVE_OUTBOUND for c in parcels)
        keep = {C.FAILED, *LIVE_OUTBOUND} | ({C.CANCELLED} if waiting else set())
        for (sku, wh), units in held.items():
            owners = [c for c in parcels if c.warehouse == wh and c.status in keep]
            assert owners or not units, f"{units} x {sku} at {wh} held for {shipment}"


AFTERSALES = list(AfterSalesKind)
# What the WMS says about each kind of command (half the time: anything at all).
FITTING = {
    CommandKind.OUTBOUND: [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED, K.SHORT_PICK, K.EXCEPTION],
    CommandKind.CANCEL: [K.CANCELLED, K.INTERCEPT_FAILED],
    CommandKind.INTERCEPT: [K.CANCELLED, K.INTERCEPT_FAILED],
    CommandKind.RETURN_INBOUND: [K.RETURN_RECEIVED],
}
LINE_CHOICES = st.lists(st.sampled_from(["L1", "L2"]), max_size=2, unique=True)
AMOUNTS = st.none() | st.decimals(min_value=-5, max_value=60, places=2)


def next_input(data: st.DataObject, desk: Desk) -> Plan:
    record = desk.record
    what = data.draw(st.sampled_from(["wms", "wms", "wms", "aftersales", "person"]))
    if what == "wms":
        ref = data.draw(st.sampled_from(record.commands))
        kind = data.draw(st.sampled_from(FITTING[ref.kind]) | st.sampled_from(list(K)))
        target = record.command(ref.refers_to)
        if kind is K.INTERCEPT_FAILED and target and target.status not in IN_PLAY:
            kind = K.CANCELLED  # a parcel that never left (stopped, short) is not too late
        line = ref.lines[0]
        return desk.wms(
            ref,
            kind,
            n=desk.inputs,
            lines=[line.model_copy(update={"quantity": 1})] if kind is K.SHORT_PICK else [],
            tracking_number="T" if kind is K.SHIPPED else "",
            sellable=data.draw(st.booleans()),
        )
    if what == "aftersales":
        asks = data.draw(st.sampled_from(AFTERSALES))
        return desk.ask(
            asks,
            desk.inputs,
            line_ids=data.draw(LINE_CHOICES),
            amount=data.draw(AMOUNTS) if asks is AfterSalesKind.REFUND else None,
            exchange_sku=data.draw(st.sampled_from(["", "A", "C"])),
            new_address=address(street="新街 2 号") if data.draw(st.booleans()) else None,
        )
    if record.state is S.EXCEPTION:  # a person clears it: the failed parcels go again
        return desk.resend()
    if record.state is S.HELD:  # a person releases the hold: the order is reserved again
        return desk.release_hold()
    return desk.ask(AfterSalesKind.CANCEL, desk.inputs)  # or a person cancels


def carry_out(data: st.DataObject, desk: Desk, plan: Plan, books: Books) -> list[Plan]:
    """The saved decision's stock work, then its reservation's continuation (granted in one
    of the candidate warehouses, or short), as the pipeline would: every plan it came to."""
    plans = [plan]
    while True:
        for effect in plan.effects:
            books.apply(effect)
        intent = plan.reserve
        if intent is None:
            return plans
        where = data.draw(st.sampled_from([None, *intent.warehouses]))
        got = (
            granted(intent.shipment, {where: intent.quantities})
            if where
            else short(intent.shipment)
        )
        if got.active:
            books.grant(got)
        plan = desk.reserved(plan, got)
        plans.append(plan)


def refund_bound(record: OrderRecord) -> Decimal:
    """The most the buyer may have had back: refund-only amounts and the returned units."""
    refund_only = sum(
        (
            e.amount or Decimal("0")
            for e in record.aftersales
            if e.kind is AfterSalesKind.REFUND and e.status == "done"
        ),
        Decimal("0"),
    )
    return refund_only + refund_value(record, returned_lines(record))


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    a=st.integers(1, 3),
    b=st.integers(0, 2),
    split=st.booleans(),
    fee=st.sampled_from([Decimal("0"), Decimal("8.00")]),
    delivered=st.booleans(),
    steps=st.integers(1, 25),
)
def test_random_answers_and_requests_keep_the_order_and_its_stock_consistent(
    data: st.DataObject, a: int, b: int, split: bool, fee: Decimal, delivered: bool, steps: int
) -> None:
    """Whatever the WMS answers and the buyer asks, in any order: every move is one the state
    machine has; no parcel ships, is short or comes back beyond what its reservation held or
    shipped; stock is never held for a parcel that will not ship, nor kept by a cancelled
    order; a refused input saves no stock work but the commit of a parcel that left; and the
    refunds are positive, add up to what the record says, and never exceed what was paid,
    nor what came back plus what was refunded without goods."""
    lines = {"A": a} | ({"B": b} if b else {})
    parcels = {"WH-SH": {"A": a}, "WH-BJ": {"B": b}} if split and b else None
    paid = PRICE * (a + b) + fee
    order = make_order(lines, paid_total=paid, shipping_fee=fee, total=paid)
    start, status = (S.DELIVERED, C.DELIVERED) if delivered else (S.RELEASED, C.SENT)
    desk = Desk(record_in(start, lines, parcels=parcels, order=order, status=status))
    record, books = desk.record, Books()
    books.grant(Reservation(record.order_id, ReserveStatus.RESERVED, list(record.allocations)))
    for ref in record.commands if delivered else []:  # it shipped: committed already
        books.apply(
            StockEffect(
                kind=EffectKind.COMMIT,
                shipment=ref.shipment,
                skus=own_skus(record, ref.lines),
                warehouse=ref.warehouse,
                units=own_units(record, ref.lines),
            )
        )
    refunds: list[Decimal] = []
    for _ in range(steps):
        for plan in carry_out(data, desk, next_input(data, desk), books):
            refunds += [Decimal(u.extra["amount"]) for u in updates(plan) if "amount" in u.extra]
            assert kinds(plan).count(EventKind.TRANSITION_REFUSED) >= plan.illegal_moves
            if plan.refused:
                assert plan.reserve is None, kinds(plan)
                assert {e.kind for e in plan.effects} <= {EffectKind.COMMIT}, kinds(plan)
        assert_moves_in_table(desk, start)
        assert all(r > 0 for r in refunds) and sum(refunds, Decimal("0")) == record.refunded
        assert record.refunded <= min(paid, refund_bound(record))
        if record.state is S.CANCELLED:  # nothing kept, and nothing went to the buyer
            assert not +books.reserved[record.order_id]
            assert not +books.shipped[record.order_id]
        keeps_stock_with_a_parcel(record, books)
