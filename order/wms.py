"""The WMS loop: what each answer on ``oms.wms.events`` does to an order.

accepted / picked move the order along; shipped commits the parcel's stock (reserved -> sales
in transit) and writes the tracking number back to the shop; delivered settles it and starts
the after-sales window; short_pick writes the missing units off and re-routes the order
elsewhere; exception waits for a person; cancelled (an answer to cancel/intercept) gives the
stock back; intercept_failed turns the cancel into a return; return_received restocks and
refunds. Each handler fills the plan; the pipeline saves it, then carries out its stock
effects (docs/decisions/0013-decide-then-do.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from order.channel_updates import channel_update
from order.decisions import Decisions, Step
from order.fulfil import build_command, command_id, next_attempt, return_commands, track
from order.plan import BatchResult, Plan
from order.reasons import Reason
from order.record import (
    LIVE_OUTBOUND,
    SHIPPED_OR_DELIVERED,
    AfterSalesEntry,
    CommandRef,
    CommandStatus,
    OrderRecord,
)
from order.reservation import EffectKind, StockEffect
from streams.messages import (
    AfterSalesKind,
    CommandKind,
    CommandLine,
    EventKind,
    OrderState,
    WmsEvent,
    WmsEventKind,
)

S = OrderState


@dataclass
class Answer(Step):
    """One WMS answer about one order: what every handler below works with."""

    ref: CommandRef  # the command the answer is about, as this order knows it
    event: WmsEvent

    def refuse(self, why: str, detail: str) -> None:
        kind = EventKind.TRANSITION_REFUSED
        self.steps.refuse(self.plan, kind, self.now, why, detail, self.result)

    def send(self, status: str, **kw: Any) -> None:
        """Write the order's news back to its shop."""
        self.plan.messages.append(
            channel_update(self.record, status, self.now, cause=self.event.event_id, **kw)
        )


Handler = Callable[[Answer], None]

IN_PLAY = LIVE_OUTBOUND | SHIPPED_OR_DELIVERED


def apply_event(
    steps: Decisions,
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
    HANDLERS[event.kind](Answer(steps, plan, now, result, ref, event))


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


def on_accepted(a: Answer) -> None:
    if a.ref.status is CommandStatus.SENT:
        a.ref.status = CommandStatus.ACCEPTED
    if a.plan.record.state is S.RELEASED:
        a.move(EventKind.WMS_ACCEPTED, S.ACCEPTED, reason=a.ref.warehouse)
    else:
        a.note(EventKind.WMS_ACCEPTED, reason=a.ref.warehouse)


def on_picked(a: Answer) -> None:
    if a.ref.status in (CommandStatus.SENT, CommandStatus.ACCEPTED):
        a.ref.status = CommandStatus.PICKED
    if a.plan.record.state in (S.RELEASED, S.ACCEPTED):
        a.move(EventKind.PICKED, S.PICKED, reason=a.ref.warehouse)
    else:
        a.note(EventKind.PICKED, reason=a.ref.warehouse)


def mark_shipped(plan: Plan, ref: CommandRef, carrier: str, tracking: str) -> None:
    """The parcel left: commit its stock (once: the commit script is idempotent)."""
    ref.status = CommandStatus.SHIPPED
    ref.carrier = carrier or ref.carrier
    ref.tracking_number = tracking or ref.tracking_number
    plan.effects.append(
        StockEffect(
            kind=EffectKind.COMMIT,
            shipment=ref.shipment,
            skus=own_skus(plan.record, ref.lines),
            warehouse=ref.warehouse,
            units=own_units(plan.record, ref.lines),  # checked against the reservation
        )
    )


def on_shipped(a: Answer) -> None:
    record = a.record
    if a.ref.kind is not CommandKind.OUTBOUND:  # only a parcel to the buyer ships
        a.refuse("shipped", f"command {a.ref.command_id} is a {a.ref.kind.value}")
        return
    if a.ref.status not in LIVE_OUTBOUND:
        a.refuse("shipped", f"command {a.ref.command_id} is {a.ref.status.value}")
        return
    mark_shipped(a.plan, a.ref, a.event.carrier, a.event.tracking_number)
    a.result.counts["parcels_shipped"] += 1
    detail = f"{a.ref.carrier} {a.event.tracking_number} from {a.ref.warehouse}"
    # A parcel the WMS gave up on waits for a person, with its stock: the order stays with
    # the person (it is not shipped while that parcel is not), this parcel's news noted.
    failed = record.state is S.EXCEPTION and any(
        c.status is CommandStatus.FAILED for c in record.commands if c.kind is CommandKind.OUTBOUND
    )
    # A parcel that crossed its stop: the intercept's answer decides what the order does.
    crossed = stop_sent(record, a.ref)
    if record.state is S.INTERCEPTING or failed or crossed:  # an intercept's answer, or a person
        a.note(EventKind.SHIPPED, reason=a.ref.command_id, detail=detail)
    else:
        everything = all(c.status in SHIPPED_OR_DELIVERED for c in outbounds(record))
        to = S.SHIPPED if everything else S.PARTIALLY_SHIPPED
        kind = EventKind.SHIPPED if everything else EventKind.PARTIALLY_SHIPPED
        if not a.move(kind, to, reason=a.ref.command_id, detail=detail):
            return
    a.send("shipped", carrier=a.ref.carrier, tracking_number=a.event.tracking_number)


def on_delivered(a: Answer) -> None:
    record = a.record
    if a.ref.status is not CommandStatus.SHIPPED:
        a.note(EventKind.DELIVERED, reason=a.ref.command_id, detail="not shipped")
        return
    a.ref.status = CommandStatus.DELIVERED
    a.plan.effects.append(
        StockEffect(
            kind=EffectKind.SETTLE,
            shipment=a.ref.shipment,
            skus=own_skus(record, a.ref.lines),
            warehouse=a.ref.warehouse,
        )
    )
    if record.state is S.SHIPPED and all(
        c.status is CommandStatus.DELIVERED for c in outbounds(record)
    ):
        record.close_due = a.steps.close_due()
        a.move(EventKind.DELIVERED, S.DELIVERED, reason=a.ref.command_id)
    else:
        a.note(EventKind.DELIVERED, reason=a.ref.command_id)


def on_short_pick(a: Answer) -> None:
    """Missing units: write them off and re-reserve the order elsewhere. Only an order whose
    single live parcel this is can be re-routed safely; anything else waits for a person. A
    parcel no longer being worked (shipped, stopped) cannot be short: refused, nothing
    changed (its units were committed, or given back, already)."""
    record = a.record
    a.result.counts["short_picks"] += 1
    if a.ref.kind is not CommandKind.OUTBOUND or a.ref.status not in LIVE_OUTBOUND:
        a.refuse("short_pick", f"command {a.ref.command_id} is {a.ref.status.value}")
        return
    # Other parcels of the order (live, shipped, or failed and waiting for a person) hold their
    # own stock: re-reserving "the order" would undo theirs. Only a lone parcel is re-routed.
    others = [
        c
        for c in record.commands
        if c.kind is CommandKind.OUTBOUND
        and c.command_id != a.ref.command_id
        and c.status not in (CommandStatus.SUPERSEDED, CommandStatus.CANCELLED)
    ]
    if others or record.merged_with:
        detail = "needs a person: " + a.event.detail
        if a.move(EventKind.SHORT_PICK, S.EXCEPTION, reason=a.ref.warehouse, detail=detail):
            a.ref.status = CommandStatus.FAILED
            record.hold_reason = Reason.SHORT_PICK
        return
    short = own_units(record, a.event.lines)
    a.ref.status = CommandStatus.SUPERSEDED  # by the re-routed parcel; its stock went back
    record.excluded_warehouses.append(a.ref.warehouse)
    a.plan.effects.append(
        StockEffect(
            kind=EffectKind.SHORT_PICK,
            shipment=record.order_id,
            skus=tuple(record.quantities),
            warehouse=a.ref.warehouse,
            units=short,
        )
    )
    a.note(
        EventKind.SHORT_PICK,
        reason=a.ref.warehouse,
        detail=", ".join(f"{sku} x{n} written off" for sku, n in short),
    )
    if record.state is not S.INTERCEPTING:  # else the stop's answer cancels the order
        a.steps.request_reservation(a.plan)


def on_exception(a: Answer) -> None:
    """The WMS stopped working on a parcel: a person decides. Only about a parcel still being
    worked; the command is failed only once the order has moved to the exception."""
    if a.ref.status not in LIVE_OUTBOUND:
        a.refuse("exception", f"command {a.ref.command_id} is {a.ref.status.value}")
        return
    if a.move(
        EventKind.WMS_EXCEPTION, S.EXCEPTION, reason=Reason.WMS_EXCEPTION, detail=a.event.detail
    ):
        a.ref.status = CommandStatus.FAILED
        a.plan.record.hold_reason = Reason.WMS_EXCEPTION


def on_cancelled(a: Answer) -> None:
    """The WMS stopped an outbound. The order that asked is cancelled (stock back); a merged
    sibling whose parcel went with it is released again on its own. A parcel of the order that
    shipped across the cancel keeps it from being cancelled: that parcel comes back as a return
    (its intercept fails), and the stopped parcels give their stock back."""
    record = a.record
    target = record.command(a.ref.refers_to) if a.ref.refers_to else a.ref
    if target is None:
        a.note(EventKind.STOP_CONFIRMED, reason=a.ref.command_id, detail="nothing to stop")
        return
    was = target.status
    if target.status in LIVE_OUTBOUND:
        target.status = CommandStatus.CANCELLED
    live = any(c.status in LIVE_OUTBOUND for c in outbounds(record))
    if record.state is S.INTERCEPTING:
        if live:
            a.note(
                EventKind.CANCELLED,
                reason=target.command_id,
                detail="waiting for the other parcels",
            )
            return
        if record.has_shipped():
            # A parcel left across the cancel: its intercept fails, and the order becomes a
            # return then (giving the stopped parcels' units back).
            a.note(EventKind.STOP_CONFIRMED, reason=target.command_id, detail="a parcel left")
            return
        a.steps.cancel_now(a.plan, record.hold_reason or Reason.CANCELLED, a.now, a.result)
        if not a.plan.refused:
            a.plan.messages.append(
                channel_update(record, "cancelled", a.now, cause=a.event.event_id)
            )
        return
    if record.state in (S.RELEASED, S.ACCEPTED, S.PICKED) and record.merged_with:
        record.merged_with = []
        if a.move(
            EventKind.RESERVED,
            S.RESERVED,
            reason="merged parcel stopped",
            allocations=record.allocations,
        ):
            a.steps.release_to_wms(a.plan, a.now)
        return
    if record.state is S.RETURNING and was in LIVE_OUTBOUND and stop_sent(record, target):
        if not live:  # the cancel became a return meanwhile (another parcel had left)
            a.plan.effects.append(release_all(record))
        a.note(EventKind.STOP_CONFIRMED, reason=target.command_id, detail="now a return")
        return
    target.status = was  # nobody asked to stop it: nothing changes
    a.note(EventKind.STOP_CONFIRMED, reason=target.command_id, detail="not requested")


def stop_sent(record: OrderRecord, target: CommandRef) -> bool:
    return any(
        c.refers_to == target.command_id
        for c in record.commands
        if c.kind in (CommandKind.CANCEL, CommandKind.INTERCEPT)
    )


def release_all(record: OrderRecord) -> StockEffect:
    """What the order's reservation still holds, back for good (what shipped was committed:
    it is no longer reserved)."""
    return StockEffect(
        kind=EffectKind.RELEASE, shipment=record.order_id, skus=tuple(record.quantities)
    )


def on_intercept_failed(a: Answer) -> None:
    """Too late: the parcel is with the carrier, so the cancel becomes a return."""
    record = a.record
    target = record.command(a.ref.refers_to) if a.ref.refers_to else None
    if record.state is not S.INTERCEPTING or target is None:
        a.note(EventKind.INTERCEPT_FAILED, reason=a.ref.command_id, detail=a.event.detail)
        return
    if target.status in LIVE_OUTBOUND:
        mark_shipped(a.plan, target, a.event.carrier, a.event.tracking_number)
    request_id = f"intercept-{a.event.event_id}"
    units = {
        target.warehouse: [
            ln.model_copy(update={"order_id": ""})
            for ln in target.lines
            if ln.order_id in ("", record.order_id)
        ]
    }
    if a.move(
        EventKind.INTERCEPT_FAILED,
        S.RETURNING,
        reason=record.hold_reason,
        detail=a.event.detail,
    ):
        record.aftersales.append(
            AfterSalesEntry(
                request_id=request_id,
                kind=AfterSalesKind.RETURN,
                line_ids=[ln.line_id for ln in units[target.warehouse]],
            )
        )
        a.plan.messages.extend(return_commands(record, units, request_id, a.now))
        stopped = any(c.status is CommandStatus.CANCELLED for c in record.own_outbounds())
        if stopped and not any(c.status in LIVE_OUTBOUND for c in outbounds(record)):
            a.plan.effects.append(release_all(record))  # the stopped parcels' units


def refund_value(record: OrderRecord, lines: list[CommandLine]) -> Decimal:
    """What the buyer paid for these units: each line's paid amount, pro rata by units."""
    by_id = {ln.line_id: ln for ln in record.order.lines}
    total = Decimal("0")
    for ln in lines:
        line = by_id.get(ln.line_id)
        if line is not None and line.quantity:
            total += (line.paid_amount * ln.quantity / line.quantity).quantize(Decimal("0.01"))
    return total


def on_return_received(a: Answer) -> None:
    record = a.record
    if a.ref.kind is not CommandKind.RETURN_INBOUND or a.ref.status is CommandStatus.DONE:
        a.note(EventKind.RETURN_RECEIVED, reason=a.ref.command_id, detail="not expected")
        return
    lines = [ln for ln in (a.event.lines or a.ref.lines) if ln.order_id in ("", record.order_id)]
    a.ref.status = CommandStatus.DONE
    a.plan.effects.append(
        StockEffect(
            kind=EffectKind.RETURN,
            shipment=a.ref.shipment,
            skus=own_skus(record, lines),
            warehouse=a.ref.warehouse,
            units=own_units(record, lines),
            sellable=a.event.sellable,
            receipt=a.event.event_id,
        )
    )
    a.result.counts["returns_received"] += 1
    a.note(
        EventKind.RETURN_RECEIVED,
        reason=a.ref.warehouse,
        detail=("sellable, restocked" if a.event.sellable else "not sellable, written off"),
    )
    waiting = [
        c
        for c in record.commands
        if c.kind is CommandKind.RETURN_INBOUND and c.status is CommandStatus.SENT
    ]
    for entry in record.aftersales:
        if entry.request_id == a.ref.refers_to and entry.kind is not AfterSalesKind.EXCHANGE:
            entry.status = "done"
    returned = record.state is S.RETURNING and not waiting
    if returned and a.move(EventKind.RETURNED, S.RETURNED, reason=a.ref.command_id):
        # What came back over the order's life, less what earlier returns refunded already.
        value = refund_value(record, returned_lines(record)) - refunded_for_returns(record)
        refund(a.steps, a.plan, value, a.now, cause=a.event.event_id)


def refunded_for_returns(record: OrderRecord) -> Decimal:
    """What returns were refunded so far: every refund but the refund-only requests'."""
    refund_only = [
        e.amount or Decimal("0")
        for e in record.aftersales
        if e.kind is AfterSalesKind.REFUND and e.status == "done"
    ]
    return record.refunded - sum(refund_only, Decimal("0"))


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


def refund(steps: Decisions, plan: Plan, amount: Decimal, now: datetime, *, cause: str) -> bool:
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
    record.close_due = steps.close_due()  # a new after-sales window
    plan.messages.append(channel_update(record, "refunded", now, cause=cause, amount=amount))
    return True


def resend_outbound(steps: Decisions, plan: Plan, now: datetime) -> None:
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
    # Another parcel of the order may have shipped meanwhile: then it is partly shipped.
    went = any(c.status in SHIPPED_OR_DELIVERED for c in outbounds(record))
    steps.move(
        plan,
        EventKind.RELEASED,
        now,
        S.PARTIALLY_SHIPPED if went else S.RELEASED,
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
