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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from order.decisions import Decisions, Step
from order.fulfil import build_command, command_id, return_commands, shipped_units, track
from order.lifecycle import AT_WMS, BEFORE_WMS
from order.plan import BatchResult, Plan
from order.reasons import Reason
from order.record import AfterSalesEntry, OrderRecord, ReserveIntent, Then
from order.reservation import Reservation
from order.wms import refund, refund_value
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
    from order.audit import AuditContext

S = OrderState
RETURNABLE = frozenset({S.SHIPPED, S.DELIVERED, S.PARTIALLY_SHIPPED, S.RETURNED, S.REFUNDED})
REFUNDABLE = frozenset({S.SHIPPED, S.DELIVERED, S.RETURNED, S.REFUNDED, S.RETURNING})
EXCHANGEABLE = frozenset({S.SHIPPED, S.DELIVERED})


def apply_request(
    steps: Decisions,
    plan: Plan,
    request: AfterSalesRequest,
    ctx: AuditContext,
    now: datetime,
    result: BatchResult,
) -> None:
    record = plan.record
    request, unknown_skus = with_sku_lines(record, request)
    request = with_bundle_lines(record, request)
    entry = AfterSalesEntry(
        request_id=request.request_id,
        kind=request.kind,
        line_ids=list(request.line_ids),
        amount=request.amount,
        exchange_sku=request.exchange_sku,
    )
    record.aftersales.append(entry)
    desk = Desk(steps, plan, now, result, entry, request, ctx)
    unknown = sorted(set(request.line_ids) - {ln.line_id for ln in record.order.lines})
    if unknown or unknown_skus:
        desk.refuse(f"unknown lines {', '.join(unknown + unknown_skus)}")
        return
    HANDLERS[request.kind](desk)


def with_sku_lines(
    record: OrderRecord, request: AfterSalesRequest
) -> tuple[AfterSalesRequest, list[str]]:
    """The request with the lines it names by merchant sku (a platform that sends no line id)
    added to its line ids, and the skus no line of the order has."""
    if not request.channel_skus:
        return request, []
    by_sku = {
        ln.channel_sku: ln.line_id if ln.bundle is None else ln.bundle.line_id
        for ln in reversed(record.order.lines)
    }
    unknown = sorted(sku for sku in request.channel_skus if sku not in by_sku)
    found = [by_sku[sku] for sku in request.channel_skus if sku in by_sku]
    lines = list(dict.fromkeys([*request.line_ids, *found]))
    return request.model_copy(update={"line_ids": lines}), [f"sku {s}" for s in unknown]


def with_bundle_lines(record: OrderRecord, request: AfterSalesRequest) -> AfterSalesRequest:
    """The request with each bundle line id it names replaced by the bundle's component lines:
    the buyer returns or is refunded the bundle as bought; naming one component's own line id
    (``<bundle line>/<n>``) means that component only (docs/decisions/0026-bundles.md)."""
    parts: dict[str, list[str]] = {}
    for ln in record.order.lines:
        if ln.bundle is not None:
            parts.setdefault(ln.bundle.line_id, []).append(ln.line_id)
    if not any(line_id in parts for line_id in request.line_ids):
        return request
    lines = [part for line_id in request.line_ids for part in parts.get(line_id, [line_id])]
    return request.model_copy(update={"line_ids": list(dict.fromkeys(lines))})


def whole_order(record: OrderRecord, line_ids: Sequence[str]) -> bool:
    """Whether a request names no lines (the whole order) or every line the buyer paid for: a
    platform may refund one line of several before shipment, and the cancel here stops the
    whole parcel, so such a request is refused for a person rather than cancel the rest."""
    paid = {ln.line_id for ln in record.order.lines if not ln.is_gift}
    return not line_ids or paid <= set(line_ids)


@dataclass
class Desk(Step):
    """One after-sales request on one order: what every handler below works with."""

    entry: AfterSalesEntry  # the request as the order's record keeps it
    request: AfterSalesRequest
    ctx: AuditContext

    def refuse(self, why: str) -> None:
        self.entry.status = "refused"
        self.steps.refuse(
            self.plan, EventKind.ACTION_REFUSED, self.now, self.entry.kind.value, why, self.result
        )


def cancel(d: Desk) -> None:
    state = d.plan.record.state
    if state in BEFORE_WMS | AT_WMS and not whole_order(d.record, d.request.line_ids):
        d.refuse("a cancel of some lines only: a person splits the parcel")
    elif state in BEFORE_WMS | AT_WMS:
        d.steps.cancel(d.plan, Reason.CANCELLED_BY_BUYER, d.now, d.result)
        d.entry.status = "refused" if d.plan.refused else "done"
    elif state in RETURNABLE:
        request_return(d)
    else:
        d.refuse(f"a {state.value} order cannot be cancelled")


def change_address(d: Desk) -> None:
    record = d.record
    if d.request.new_address is None:
        d.refuse("no new address given")
        return
    if record.state not in BEFORE_WMS:
        d.refuse(f"{record.state.value}: the WMS has the parcel; cancel and re-order instead")
        return
    record.ship_to = d.request.new_address
    d.entry.status = "done"
    new = d.request.new_address
    where = f"{new.province_code or new.province} {new.city}"  # region only: no personal data
    d.note(EventKind.ADDRESS_CHANGED, reason="address_change", detail=where)
    if record.state is S.HELD:
        d.steps.decide(d.plan, d.ctx, d.now)
    elif record.state is S.ROUTED:  # a new address leaves its merge group: ship now, unless
        d.steps.release_waiting(d.plan, d.now)  # a release gate (order/gates.py) still stands


def request_return(d: Desk) -> None:
    record = d.record
    units = unreturned(record, shipped_units(record, d.request.line_ids))
    if record.state not in RETURNABLE or not units:
        d.refuse(f"nothing shipped to return ({record.state.value})")
        return
    d.entry.line_ids = sorted({ln.line_id for lines in units.values() for ln in lines})
    if d.move(EventKind.RETURN_REQUESTED, S.RETURNING, reason=d.request.reason or "return"):
        d.plan.messages.extend(return_commands(record, units, d.request.request_id, d.now))
        d.result.counts["returns_requested"] += 1


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


def refund_only(d: Desk) -> None:
    record = d.record
    if record.state not in REFUNDABLE:
        d.refuse(f"a {record.state.value} order cannot be refunded")
        return
    amount = d.request.amount
    if amount is None:
        lines = [
            CommandLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
            for ln in record.order.lines
            if not d.request.line_ids or ln.line_id in d.request.line_ids
        ]
        amount = refund_value(record, lines)
    left = record.order.payment.paid_total - record.refunded
    if amount <= 0 or amount > left:
        d.refuse(f"refund {amount} exceeds what is left ({left})")
        return
    if refund(d.steps, d.plan, amount, d.now, cause=d.request.request_id):
        d.entry.status = "done"
        d.entry.amount = amount
        d.result.counts["refunds"] += 1
    else:
        d.entry.status = "refused"


def exchange(d: Desk) -> None:
    """Reserve the replacement first: if it is out of stock nothing is asked back. The wish
    is saved with the request; ``exchange_reserved`` goes on once the reservation is known."""
    record = d.record
    units = unreturned(record, shipped_units(record, d.request.line_ids))
    if record.state not in EXCHANGEABLE or not units:
        d.refuse(f"nothing shipped to exchange ({record.state.value})")
        return
    shipment = make_id("X", record.order_id, d.request.request_id)
    d.entry.shipment = shipment
    d.plan.reserve = ReserveIntent(
        shipment=shipment,
        quantities=replacement_units(units, d.request.exchange_sku),
        warehouses=list(d.steps.routing.candidates(record.order, record.address)),
        shop=record.order.shop_key,
        then=Then.EXCHANGE,
        request_id=d.request.request_id,
        reason=d.request.reason,
    )


def replacement_units(units: dict[str, list[CommandLine]], exchange_sku: str) -> dict[str, int]:
    """What ships instead: every unit bought (the buyer keeps a gift), as the same or another
    sku."""
    replacement: dict[str, int] = {}
    for lines in units.values():
        for ln in lines:
            if not ln.is_gift:
                sku = exchange_sku or ln.sku
                replacement[sku] = replacement.get(sku, 0) + ln.quantity
    return replacement


def exchange_reserved(
    steps: Decisions,
    plan: Plan,
    intent: ReserveIntent,
    reservation: Reservation,
    now: datetime,
    result: BatchResult,
) -> None:
    """The replacement's reservation is known: ship it and ask the old units back, or refuse
    the exchange when it is out of stock."""
    record = plan.record
    entry = next(e for e in record.aftersales if e.request_id == intent.request_id)
    if not reservation.active:
        entry.status = "refused"
        why = "replacement out of stock"
        steps.refuse(plan, EventKind.ACTION_REFUSED, now, entry.kind.value, why, result)
        return
    if not steps.move(
        plan, EventKind.EXCHANGE_REQUESTED, now, S.EXCHANGING, reason=intent.reason or "exchange"
    ):
        return
    entry.status = "done"
    units = unreturned(record, shipped_units(record, entry.line_ids))
    plan.messages.extend(return_commands(record, units, intent.request_id, now))
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
            cid=command_id(intent.shipment, CommandKind.OUTBOUND, warehouse, 1),
            carrier=record.carrier,
            shipment=intent.shipment,
        )
        track(record, command)
        plan.messages.append(command)
    result.counts["exchanges"] += 1


HANDLERS: dict[AfterSalesKind, Callable[[Desk], None]] = {
    AfterSalesKind.CANCEL: cancel,
    AfterSalesKind.ADDRESS_CHANGE: change_address,
    AfterSalesKind.RETURN: request_return,
    AfterSalesKind.REFUND: refund_only,
    AfterSalesKind.EXCHANGE: exchange,
}
