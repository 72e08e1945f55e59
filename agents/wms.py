"""The WMS loop: what each answer on ``oms.wms.events`` does to an order.

accepted / picked move the order along; shipped commits the parcel's stock (reserved -> sales
in transit) and writes the tracking number back to the shop; delivered settles it and starts
the after-sales window; short_pick writes the missing units off and re-routes the order
elsewhere; exception waits for a person; cancelled (an answer to cancel/intercept) gives the
stock back; intercept_failed turns the cancel into a return; return_received restocks and
refunds. Each handler fills the plan; the pipeline applies the stock effects and saves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from agents.channel_updates import channel_update
from agents.fulfil import build_command, command_id, next_attempt, return_commands, track
from agents.plan import Plan, StockOp, StockOpKind
from state.orders import LIVE_OUTBOUND, AfterSalesEntry, CommandRef, CommandStatus, OrderRecord
from streams.messages import (
    AfterSalesKind,
    CommandKind,
    CommandLine,
    EventKind,
    OrderState,
    WmsEvent,
    WmsEventKind,
)

if TYPE_CHECKING:
    from agents.pipeline import BatchResult, OrderPipeline

S = OrderState
Handler = Callable[["OrderPipeline", Plan, CommandRef, WmsEvent, datetime, "BatchResult"], None]

IN_PLAY = LIVE_OUTBOUND | {CommandStatus.SHIPPED, CommandStatus.DELIVERED}


def apply_event(
    steps: OrderPipeline,
    plan: Plan,
    event: WmsEvent,
    keyed: CommandRef | None,
    now: datetime,
    result: BatchResult,
) -> None:
    """``keyed``: the command as the keyed order knows it (a merged sibling may not have a
    cancel its co-member sent)."""
    ref = plan.record.command(event.command_id) or keyed
    if ref is None:
        steps.refuse(
            plan,
            EventKind.TRANSITION_REFUSED,
            now,
            event.kind.value,
            f"unknown command {event.command_id}",
            result,
        )
        return
    HANDLERS[event.kind](steps, plan, ref, event, now, result)


def own_skus(record: OrderRecord, lines: list[CommandLine]) -> tuple[str, ...]:
    return tuple(sorted({ln.sku for ln in lines if ln.order_id in ("", record.order_id)}))


def own_units(record: OrderRecord, lines: list[CommandLine]) -> tuple[tuple[str, int], ...]:
    units: Counter[str] = Counter()
    for ln in lines:
        if ln.order_id in ("", record.order_id):
            units[ln.sku] += ln.quantity
    return tuple(sorted(units.items()))


def outbounds(record: OrderRecord) -> list[CommandRef]:
    return [c for c in record.commands if c.kind is CommandKind.OUTBOUND and c.status in IN_PLAY]


def on_accepted(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    if ref.status is CommandStatus.SENT:
        ref.status = CommandStatus.ACCEPTED
    if plan.record.state is S.RELEASED:
        steps.move(plan, EventKind.WMS_ACCEPTED, now, S.ACCEPTED, reason=ref.warehouse)
    else:
        steps.note(plan, EventKind.WMS_ACCEPTED, now, reason=ref.warehouse)


def on_picked(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    if ref.status in (CommandStatus.SENT, CommandStatus.ACCEPTED):
        ref.status = CommandStatus.PICKED
    if plan.record.state in (S.RELEASED, S.ACCEPTED):
        steps.move(plan, EventKind.PICKED, now, S.PICKED, reason=ref.warehouse)
    else:
        steps.note(plan, EventKind.PICKED, now, reason=ref.warehouse)


def mark_shipped(plan: Plan, ref: CommandRef, carrier: str, tracking: str) -> None:
    """The parcel left: commit its stock (once: the commit script is idempotent)."""
    ref.status = CommandStatus.SHIPPED
    ref.carrier = carrier or ref.carrier
    ref.tracking_number = tracking or ref.tracking_number
    plan.stock_ops.append(
        StockOp(StockOpKind.COMMIT, ref.shipment, own_skus(plan.record, ref.lines), ref.warehouse)
    )


def on_shipped(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    if ref.status not in LIVE_OUTBOUND:
        steps.refuse(
            plan,
            EventKind.TRANSITION_REFUSED,
            now,
            "shipped",
            f"command {ref.command_id} is {ref.status.value}",
            result,
        )
        return
    mark_shipped(plan, ref, event.carrier, event.tracking_number)
    result.counts["parcels_shipped"] += 1
    detail = f"{ref.carrier} {event.tracking_number} from {ref.warehouse}"
    if record.state is S.INTERCEPTING:  # too late for the intercept: its answer follows
        steps.note(plan, EventKind.SHIPPED, now, reason=ref.command_id, detail=detail)
    else:
        done = (CommandStatus.SHIPPED, CommandStatus.DELIVERED)
        everything = all(c.status in done for c in outbounds(record))
        to = S.SHIPPED if everything else S.PARTIALLY_SHIPPED
        kind = EventKind.SHIPPED if everything else EventKind.PARTIALLY_SHIPPED
        if not steps.move(plan, kind, now, to, reason=ref.command_id, detail=detail):
            return
    plan.messages.append(
        channel_update(
            record,
            "shipped",
            now,
            cause=event.event_id,
            carrier=ref.carrier,
            tracking_number=event.tracking_number,
        )
    )


def on_delivered(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    if ref.status is not CommandStatus.SHIPPED:
        steps.note(plan, EventKind.DELIVERED, now, reason=ref.command_id, detail="not shipped")
        return
    ref.status = CommandStatus.DELIVERED
    plan.stock_ops.append(
        StockOp(StockOpKind.SETTLE, ref.shipment, own_skus(record, ref.lines), ref.warehouse)
    )
    if record.state is S.SHIPPED and all(
        c.status is CommandStatus.DELIVERED for c in outbounds(record)
    ):
        record.close_due = time.time() + steps.settings.close_after_s
        steps.move(plan, EventKind.DELIVERED, now, S.DELIVERED, reason=ref.command_id)
    else:
        steps.note(plan, EventKind.DELIVERED, now, reason=ref.command_id)


def on_short_pick(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    """Missing units: write them off and re-reserve the order elsewhere. Only an order whose
    single live parcel this is can be re-routed safely; anything else waits for a person."""
    record = plan.record
    result.counts["short_picks"] += 1
    live = [c for c in outbounds(record) if c.status in LIVE_OUTBOUND]
    shipped = [c for c in outbounds(record) if c.status not in LIVE_OUTBOUND]
    if ref.status not in LIVE_OUTBOUND or len(live) != 1 or shipped or record.merged_with:
        ref.status = CommandStatus.FAILED
        record.hold_reason = "short_pick"
        steps.move(
            plan,
            EventKind.SHORT_PICK,
            now,
            S.EXCEPTION,
            reason=ref.warehouse,
            detail="needs a person: " + event.detail,
        )
        return
    short = own_units(record, event.lines)
    ref.status = CommandStatus.FAILED
    record.excluded_warehouses.append(ref.warehouse)
    plan.stock_ops.append(
        StockOp(
            StockOpKind.SHORT_PICK,
            record.order_id,
            tuple(record.quantities),
            ref.warehouse,
            units=short,
        )
    )
    steps.note(
        plan,
        EventKind.SHORT_PICK,
        now,
        reason=ref.warehouse,
        detail=", ".join(f"{sku} x{n} written off" for sku, n in short),
    )
    steps.request_reservation(plan)


def on_exception(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    if ref.status in LIVE_OUTBOUND:
        ref.status = CommandStatus.FAILED
    plan.record.hold_reason = "wms_exception"
    steps.move(
        plan, EventKind.WMS_EXCEPTION, now, S.EXCEPTION, reason="wms_exception", detail=event.detail
    )


def on_cancelled(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    """The WMS stopped an outbound. The order that asked is cancelled (stock back); a merged
    sibling whose parcel went with it is released again on its own."""
    record = plan.record
    target = record.command(ref.refers_to) if ref.refers_to else ref
    if target is None:
        steps.note(
            plan, EventKind.STOP_CONFIRMED, now, reason=ref.command_id, detail="nothing to stop"
        )
        return
    if target.status in LIVE_OUTBOUND:
        target.status = CommandStatus.CANCELLED
    if record.state is S.INTERCEPTING:
        if any(c.status in LIVE_OUTBOUND for c in outbounds(record)):
            steps.note(
                plan,
                EventKind.CANCELLED,
                now,
                reason=target.command_id,
                detail="waiting for the other parcels",
            )
            return
        steps.cancel_now(plan, record.hold_reason or "cancelled", now, result)
        if not plan.refused:
            plan.messages.append(channel_update(record, "cancelled", now, cause=event.event_id))
        return
    if record.state in (S.RELEASED, S.ACCEPTED, S.PICKED) and record.merged_with:
        record.merged_with = []
        if steps.move(
            plan,
            EventKind.RESERVED,
            now,
            S.RESERVED,
            reason="merged parcel stopped",
            allocations=record.allocations,
        ):
            steps.release_to_wms(plan, now)
        return
    steps.note(
        plan, EventKind.STOP_CONFIRMED, now, reason=target.command_id, detail="not requested"
    )


def on_intercept_failed(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    """Too late: the parcel is with the carrier, so the cancel becomes a return."""
    record = plan.record
    target = record.command(ref.refers_to) if ref.refers_to else None
    if record.state is not S.INTERCEPTING or target is None:
        steps.note(
            plan, EventKind.INTERCEPT_FAILED, now, reason=ref.command_id, detail=event.detail
        )
        return
    if target.status in LIVE_OUTBOUND:
        mark_shipped(plan, target, event.carrier, event.tracking_number)
    request_id = f"intercept-{event.event_id}"
    units = {
        target.warehouse: [
            ln.model_copy(update={"order_id": ""})
            for ln in target.lines
            if ln.order_id in ("", record.order_id)
        ]
    }
    if steps.move(
        plan,
        EventKind.INTERCEPT_FAILED,
        now,
        S.RETURNING,
        reason=record.hold_reason,
        detail=event.detail,
    ):
        record.aftersales.append(
            AfterSalesEntry(
                request_id=request_id,
                kind=AfterSalesKind.RETURN,
                line_ids=[ln.line_id for ln in units[target.warehouse]],
            )
        )
        plan.messages.extend(return_commands(record, units, request_id, now))


def refund_value(record: OrderRecord, lines: list[CommandLine]) -> Decimal:
    """What the buyer paid for these units: each line's paid amount, pro rata by units."""
    by_id = {ln.line_id: ln for ln in record.order.lines}
    total = Decimal("0")
    for ln in lines:
        line = by_id.get(ln.line_id)
        if line is not None and line.quantity:
            total += (line.paid_amount * ln.quantity / line.quantity).quantize(Decimal("0.01"))
    return total


def on_return_received(
    steps: OrderPipeline,
    plan: Plan,
    ref: CommandRef,
    event: WmsEvent,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    if ref.kind is not CommandKind.RETURN_INBOUND or ref.status is CommandStatus.DONE:
        steps.note(
            plan, EventKind.RETURN_RECEIVED, now, reason=ref.command_id, detail="not expected"
        )
        return
    lines = [ln for ln in (event.lines or ref.lines) if ln.order_id in ("", record.order_id)]
    ref.status = CommandStatus.DONE
    plan.stock_ops.append(
        StockOp(
            StockOpKind.RETURN,
            ref.shipment,
            own_skus(record, lines),
            ref.warehouse,
            units=own_units(record, lines),
            sellable=event.sellable,
            receipt=event.event_id,
        )
    )
    result.counts["returns_received"] += 1
    steps.note(
        plan,
        EventKind.RETURN_RECEIVED,
        now,
        reason=ref.warehouse,
        detail=("sellable, restocked" if event.sellable else "not sellable, written off"),
    )
    waiting = [
        c
        for c in record.commands
        if c.kind is CommandKind.RETURN_INBOUND and c.status is CommandStatus.SENT
    ]
    for entry in record.aftersales:
        if entry.request_id == ref.refers_to and entry.kind is not AfterSalesKind.EXCHANGE:
            entry.status = "done"
    returned = record.state is S.RETURNING and not waiting
    if returned and steps.move(plan, EventKind.RETURNED, now, S.RETURNED, reason=ref.command_id):
        value = refund_value(record, returned_lines(record))
        refund(steps, plan, value, now, cause=event.event_id)


def returned_lines(record: OrderRecord) -> list[CommandLine]:
    """Every unit that came back, except what an exchange replaces (that is not refunded)."""
    exchanged = {e.request_id for e in record.aftersales if e.kind is AfterSalesKind.EXCHANGE}
    refunded = {e.request_id for e in record.aftersales if e.kind is AfterSalesKind.REFUND}
    return [
        ln
        for c in record.commands
        if c.kind is CommandKind.RETURN_INBOUND
        and c.status is CommandStatus.DONE
        and c.refers_to not in exchanged | refunded
        for ln in c.lines
    ]


def refund(steps: OrderPipeline, plan: Plan, amount: Decimal, now: datetime, *, cause: str) -> bool:
    """Money back, never more than was paid; written back to the shop."""
    record = plan.record
    left = record.order.payment.paid_total - record.refunded
    amount = min(amount, left)
    if amount <= 0:
        return False
    if not steps.move(
        plan, EventKind.REFUNDED, now, S.REFUNDED, reason=str(amount), detail=record.order.currency
    ):
        return False
    record.refunded += amount
    record.close_due = time.time() + steps.settings.close_after_s  # a new after-sales window
    plan.messages.append(channel_update(record, "refunded", now, cause=cause, amount=amount))
    return True


def resend_outbound(steps: OrderPipeline, plan: Plan, now: datetime) -> None:
    """An operator cleared a WMS exception: the failed parcels go out again (same stock,
    next attempt, new command ids)."""
    record = plan.record
    failed = [
        c
        for c in record.commands
        if c.kind is CommandKind.OUTBOUND and c.status is CommandStatus.FAILED
    ]
    attempt = next_attempt(record)
    commands = []
    for ref in failed:
        ref.status = CommandStatus.SUPERSEDED
        lines = [
            ln.model_copy(update={"order_id": ""})
            for ln in ref.lines
            if ln.order_id in ("", record.order_id)
        ]
        command = build_command(
            record,
            CommandKind.OUTBOUND,
            ref.warehouse,
            lines,
            now,
            cid=command_id(record.order_id, CommandKind.OUTBOUND, ref.warehouse, attempt),
            carrier=ref.carrier,
            attempt=attempt,
        )
        track(record, command)
        commands.append(command)
    record.merged_with = []
    record.hold_reason = ""
    plan.messages.extend(commands)
    steps.move(
        plan,
        EventKind.RELEASED,
        now,
        S.RELEASED,
        reason="outbound " + " ".join(c.command_id for c in commands),
    )


HANDLERS: dict[WmsEventKind, Handler] = {
    WmsEventKind.ACCEPTED: on_accepted,
    WmsEventKind.PICKED: on_picked,
    WmsEventKind.SHIPPED: on_shipped,
    WmsEventKind.DELIVERED: on_delivered,
    WmsEventKind.SHORT_PICK: on_short_pick,
    WmsEventKind.EXCEPTION: on_exception,
    WmsEventKind.CANCELLED: on_cancelled,
    WmsEventKind.INTERCEPT_FAILED: on_intercept_failed,
    WmsEventKind.RETURN_RECEIVED: on_return_received,
}
