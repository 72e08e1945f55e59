"""After-sales requests on ``oms.aftersales``: cancel, address change, return, refund only,
exchange. Each references the original order (and its lines); each is applied once (its
request id is the input id) and lands in the order's trail with who asked.

- cancel: before release the stock goes back; after release the WMS is asked to stop the
  parcel; once shipped, the cancel becomes a return.
- address change: only before the WMS has the order (after, it would need an intercept and a
  new parcel: refused with that reason); a held order is audited again with the new address.
- return: units that shipped are expected back (a return inbound command per warehouse);
  they restock on receipt when sellable, and the buyer is refunded.
- refund only: money back without goods, never more than was paid.
- exchange: the old units are expected back and a replacement (same or another sku) is
  reserved under its own reservation id and shipped as a new outbound.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from agents.fulfil import build_command, command_id, return_commands, shipped_units, track
from agents.lifecycle import AT_WMS, BEFORE_WMS
from agents.plan import Plan
from agents.wms import refund, refund_value
from state.orders import AfterSalesEntry, OrderRecord
from state.reservations import Reservation, ReserveRequest
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    CommandKind,
    CommandLine,
    EventKind,
    OrderState,
    make_id,
)

if TYPE_CHECKING:
    from agents.audit import AuditContext
    from agents.pipeline import BatchResult, OrderPipeline

S = OrderState
RETURNABLE = frozenset({S.SHIPPED, S.DELIVERED, S.PARTIALLY_SHIPPED, S.RETURNED, S.REFUNDED})
REFUNDABLE = frozenset({S.SHIPPED, S.DELIVERED, S.RETURNED, S.REFUNDED, S.RETURNING})
EXCHANGEABLE = frozenset({S.SHIPPED, S.DELIVERED})


def apply_request(
    steps: OrderPipeline,
    plan: Plan,
    request: AfterSalesRequest,
    ctx: AuditContext,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    entry = AfterSalesEntry(
        request_id=request.request_id,
        kind=request.kind,
        line_ids=list(request.line_ids),
        amount=request.amount,
        exchange_sku=request.exchange_sku,
    )
    record.aftersales.append(entry)
    unknown = sorted(set(request.line_ids) - {ln.line_id for ln in record.order.lines})
    if unknown:
        refuse(steps, plan, entry, now, f"unknown lines {', '.join(unknown)}", result)
        return
    kind = request.kind
    if kind is AfterSalesKind.CANCEL:
        cancel(steps, plan, entry, request, now, result)
    elif kind is AfterSalesKind.ADDRESS_CHANGE:
        change_address(steps, plan, entry, request, ctx, now, result)
    elif kind is AfterSalesKind.RETURN:
        request_return(steps, plan, entry, request, now, result)
    elif kind is AfterSalesKind.REFUND:
        refund_only(steps, plan, entry, request, now, result)
    else:
        exchange(steps, plan, entry, request, now, result)


def refuse(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    now: datetime,
    why: str,
    result: BatchResult,
) -> None:
    entry.status = "refused"
    steps.refuse(plan, EventKind.ACTION_REFUSED, now, entry.kind.value, why, result)


def cancel(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    request: AfterSalesRequest,
    now: datetime,
    result: BatchResult,
) -> None:
    state = plan.record.state
    if state in BEFORE_WMS | AT_WMS:
        steps.cancel(plan, "cancelled_by_buyer", now, result)
        entry.status = "refused" if plan.refused else "done"
    elif state in RETURNABLE:
        request_return(steps, plan, entry, request, now, result)
    else:
        refuse(steps, plan, entry, now, f"a {state.value} order cannot be cancelled", result)


def change_address(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    request: AfterSalesRequest,
    ctx: AuditContext,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    if request.new_address is None:
        refuse(steps, plan, entry, now, "no new address given", result)
        return
    if record.state not in BEFORE_WMS:
        refuse(
            steps,
            plan,
            entry,
            now,
            f"{record.state.value}: the WMS has the parcel; cancel and re-order instead",
            result,
        )
        return
    record.ship_to = request.new_address
    entry.status = "done"
    new = request.new_address
    where = f"{new.province_code or new.province} {new.city}"  # region only: no personal data
    steps.note(plan, EventKind.ADDRESS_CHANGED, now, reason="address_change", detail=where)
    if record.state is S.HELD:
        steps.decide(plan, ctx, now)
    elif record.state is S.ROUTED and record.merge_group:
        steps.send_outbound(plan, now)  # a new address leaves its merge group: ship now


def request_return(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    request: AfterSalesRequest,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    units = unreturned(record, shipped_units(record, request.line_ids))
    if record.state not in RETURNABLE or not units:
        refuse(steps, plan, entry, now, f"nothing shipped to return ({record.state.value})", result)
        return
    entry.line_ids = sorted({ln.line_id for lines in units.values() for ln in lines})
    if steps.move(
        plan, EventKind.RETURN_REQUESTED, now, S.RETURNING, reason=request.reason or "return"
    ):
        plan.messages.extend(return_commands(record, units, request.request_id, now))
        result.counts["returns_requested"] += 1


def unreturned(
    record: OrderRecord, units: dict[str, list[CommandLine]]
) -> dict[str, list[CommandLine]]:
    """Shipped units minus lines an earlier return or exchange already asked back."""
    asked = {
        ln.line_id
        for c in record.commands
        if c.kind is CommandKind.RETURN_INBOUND
        for ln in c.lines
    }
    left = {wh: [ln for ln in lines if ln.line_id not in asked] for wh, lines in units.items()}
    return {wh: lines for wh, lines in left.items() if lines}


def refund_only(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    request: AfterSalesRequest,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    if record.state not in REFUNDABLE:
        refuse(steps, plan, entry, now, f"a {record.state.value} order cannot be refunded", result)
        return
    amount = request.amount
    if amount is None:
        lines = [
            CommandLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
            for ln in record.order.lines
            if not request.line_ids or ln.line_id in request.line_ids
        ]
        amount = refund_value(record, lines)
    left = record.order.payment.paid_total - record.refunded
    if amount <= 0 or amount > left:
        refuse(steps, plan, entry, now, f"refund {amount} exceeds what is left ({left})", result)
        return
    if refund(steps, plan, amount, now, cause=request.request_id):
        entry.status = "done"
        entry.amount = amount
        result.counts["refunds"] += 1
    else:
        entry.status = "refused"


def exchange(
    steps: OrderPipeline,
    plan: Plan,
    entry: AfterSalesEntry,
    request: AfterSalesRequest,
    now: datetime,
    result: BatchResult,
) -> None:
    """Reserve the replacement first: if it is out of stock nothing is asked back."""
    record = plan.record
    units = unreturned(record, shipped_units(record, request.line_ids))
    if record.state not in EXCHANGEABLE or not units:
        refuse(
            steps, plan, entry, now, f"nothing shipped to exchange ({record.state.value})", result
        )
        return
    shipment = make_id("X", record.order_id, request.request_id)
    entry.shipment = shipment
    replacement: dict[str, int] = {}
    for lines in units.values():
        for ln in lines:
            if not ln.is_gift:  # the buyer keeps a gift: only what was bought is replaced
                sku = request.exchange_sku or ln.sku
                replacement[sku] = replacement.get(sku, 0) + ln.quantity
    plan.reserve = ReserveRequest(
        shipment,
        replacement,
        tuple(steps.routing.candidates(record.order, record.address)),
        shop=f"{record.order.channel.value}/{record.order.shop_id}",
    )

    def after_reserve(plan: Plan, reservation: Reservation) -> None:
        if not reservation.active:
            refuse(steps, plan, entry, now, "replacement out of stock", result)
            return
        if not steps.move(
            plan,
            EventKind.EXCHANGE_REQUESTED,
            now,
            S.EXCHANGING,
            reason=request.reason or "exchange",
        ):
            return
        entry.status = "done"
        plan.messages.extend(return_commands(record, units, request.request_id, now))
        by_warehouse: dict[str, list[CommandLine]] = {}
        for alloc in reservation.allocations:
            by_warehouse.setdefault(alloc.warehouse, []).append(
                CommandLine(line_id=f"X-{alloc.sku}", sku=alloc.sku, quantity=alloc.quantity)
            )
        for warehouse, lines in sorted(by_warehouse.items()):  # one parcel per warehouse
            command = build_command(
                record,
                CommandKind.OUTBOUND,
                warehouse,
                lines,
                now,
                cid=command_id(shipment, CommandKind.OUTBOUND, warehouse, 1),
                carrier=record.carrier,
                shipment=shipment,
            )
            track(record, command)
            plan.messages.append(command)
        result.counts["exchanges"] += 1

    plan.after_reserve = after_reserve
