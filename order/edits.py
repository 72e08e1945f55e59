"""Customer service changes an order's lines before release (``./oms orders gift`` and
``change-line``, ``POST /orders/{id}/gift`` and ``/lines/{line_id}``): operator actions like a
release, so the change is CAS-saved with the record, lands in the trail with its actor and a
redelivery applies it once (docs/decisions/0027-customer-service-tools.md).

Only while the WMS does not have the order (``BEFORE_WMS``): after that the parcel may be
packed. The edit is kept in the record (``OrderRecord.line_edits``) and applied over every
version of the order the channel sends, so a later update does not undo it. Then the order is
decided again on its new lines: what it holds is given back and it is audited and reserved
through the same path as a new order (an unknown sku or a sku without stock holds it).

Money: a gift is free (price and paid 0, ``is_gift``); a changed line keeps what the buyer
paid for it (``paid_amount``, list price and discount unchanged), so totals, refunds and the
facts' sales still add up to what was paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from order.audit import AuditContext
from order.decisions import Decisions
from order.lifecycle import BEFORE_WMS
from order.plan import BatchResult, Plan
from order.record import LineEdit, OrderRecord
from streams.edits import MAX_EDITS, MAX_GIFTS, EditError
from streams.messages import MAX_REASON_CHARS, EventKind, OperatorAction, OperatorActionKind
from streams.models import MAX_ORDER_LINES, Order, OrderLine

EDIT_KINDS = frozenset({OperatorActionKind.ADD_GIFT, OperatorActionKind.CHANGE_LINE})
GIFT_PREFIX = "CS-GIFT-"  # promotions' gifts are GIFT-<rule> (order/promotions.py)
GIFT_TITLE = "customer service gift"


def apply_edit(
    steps: Decisions,
    plan: Plan,
    action: OperatorAction,
    ctx: AuditContext,
    now: datetime,
    result: BatchResult,
) -> None:
    """Check the edit against the order, keep it, apply it, and decide the order again;
    refused (in the trail, nothing changed) when it does not fit."""
    record = plan.record
    try:
        edit = edit_of(record, action)
    except EditError as exc:
        steps.refuse(plan, EventKind.ACTION_REFUSED, now, action.kind.value, str(exc), result)
        return
    before = {ln.line_id: ln for ln in record.order.lines}
    held = list(record.quantities)
    record.line_edits.append(edit)
    record.order = with_edits(record.order, [edit])
    result.counts["lines_changed"] += 1
    steps.note(
        plan,
        EventKind.LINES_CHANGED,
        now,
        reason=describe(edit, before.get(edit.line_id)),
        detail=action.reason,
        with_snapshot=True,  # the facts get the lines as they ship now
    )
    steps.decide_again(plan, ctx, now, held)


def edit_of(record: OrderRecord, action: OperatorAction) -> LineEdit:
    """The action as an edit of this order (a gift gets its line id here); ``EditError`` says
    why it does not apply."""
    if record.state not in BEFORE_WMS:
        raise EditError(f"{record.state.value}: the WMS has the order; cancel and re-order")
    if len(record.line_edits) >= MAX_EDITS:
        raise EditError(f"an order keeps at most {MAX_EDITS} line edits")
    if action.kind is OperatorActionKind.ADD_GIFT:
        return gift_edit(record, action)
    return change_edit(record, action)


def gift_edit(record: OrderRecord, action: OperatorAction) -> LineEdit:
    if not action.sku:
        raise EditError("no gift sku given")
    gifts = sum(e.kind is OperatorActionKind.ADD_GIFT for e in record.line_edits)
    if gifts >= MAX_GIFTS or len(record.lines) >= MAX_ORDER_LINES:
        raise EditError(f"an order takes at most {MAX_GIFTS} gifts and {MAX_ORDER_LINES} lines")
    return LineEdit(
        kind=OperatorActionKind.ADD_GIFT,
        line_id=gift_line_id(record, gifts + 1),
        sku=action.sku,
        quantity=action.quantity or 1,
        actor=action.actor,
        action_id=action.action_id,
    )


def change_edit(record: OrderRecord, action: OperatorAction) -> LineEdit:
    line = next((ln for ln in record.order.lines if ln.line_id == action.line_id), None)
    if line is None:
        raise EditError(f"no line {action.line_id!r} in the order")
    sku = action.sku if action.sku != line.sku else ""
    quantity = action.quantity if action.quantity != line.quantity else None
    if not sku and quantity is None:
        raise EditError("nothing to change: give another sku or quantity")
    return LineEdit(
        kind=OperatorActionKind.CHANGE_LINE,
        line_id=line.line_id,
        sku=sku,
        quantity=quantity,
        actor=action.actor,
        action_id=action.action_id,
    )


def gift_line_id(record: OrderRecord, n: int) -> str:
    """``CS-GIFT-<n>``, the first n not taken by a line of the order: the same on every
    worker, since an action is applied once, on the record as saved."""
    taken = {ln.line_id for ln in record.lines}
    while f"{GIFT_PREFIX}{n}" in taken:
        n += 1
    return f"{GIFT_PREFIX}{n}"


def with_edits(order: Order, edits: Sequence[LineEdit]) -> Order:
    """The order with the edits applied in turn. An edit whose line the channel no longer
    sends, or a gift whose id a channel line took, is left out of this version (it stays in
    the record)."""
    if not edits:
        return order
    lines = list(order.lines)
    for edit in edits:
        ids = [ln.line_id for ln in lines]
        if edit.kind is OperatorActionKind.ADD_GIFT and edit.line_id not in ids:
            lines.append(gift_line(edit))
        elif edit.kind is OperatorActionKind.CHANGE_LINE and edit.line_id in ids:
            at = ids.index(edit.line_id)
            lines[at] = changed_line(lines[at], edit)
    return order.model_copy(update={"lines": lines})


def gift_line(edit: LineEdit) -> OrderLine:
    return OrderLine(
        line_id=edit.line_id,
        sku=edit.sku,
        title=GIFT_TITLE,
        quantity=edit.quantity or 1,
        unit_price=Decimal(0),
        paid_amount=Decimal(0),
        is_gift=True,
    )


def changed_line(line: OrderLine, edit: LineEdit) -> OrderLine:
    """The line with its new sku and units; its money (what the buyer paid) unchanged."""
    return line.model_copy(
        update={"sku": edit.sku or line.sku, "quantity": edit.quantity or line.quantity}
    )


def describe(edit: LineEdit, before: OrderLine | None) -> str:
    """What changed, as the trail says it: ``gift CS-GIFT-1 SKU x1`` or
    ``line L1 A x2 -> B x3`` (ids and codes only: a reason is no place for text)."""
    if edit.kind is OperatorActionKind.ADD_GIFT or before is None:
        said = f"gift {edit.line_id} {edit.sku} x{edit.quantity}"
    else:
        after = changed_line(before, edit)
        said = (
            f"line {edit.line_id} {before.sku} x{before.quantity} -> {after.sku} x{after.quantity}"
        )
    return said[:MAX_REASON_CHARS]
