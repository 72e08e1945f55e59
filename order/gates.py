"""When a reserved order may go to the WMS: not while a pre-sale's balance is due, not while the
channel forbids shipping, not before its ship date.

An order held back here keeps its reservation and waits in ``routed`` (decisions.release_to_wms).
A gate with a date opens by itself: the order waits in a merge group of its own whose due time
is that date, so the merge timer releases it. A gate without one opens with the channel update
that lifts it (the balance paid, the hold gone): agents/pipeline.py re-checks on every update.
See docs/decisions/0021-presale-and-release-gates.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from order.reasons import Reason
from streams.models import Order, PaymentStatus, PresaleStage

GATE_REASONS = frozenset({Reason.AWAITING_BALANCE, Reason.CHANNEL_SHIP_HOLD, Reason.SHIP_DATE})


@dataclass(frozen=True)
class Gate:
    reason: Reason
    detail: str
    until: datetime | None = None  # opens by itself then; None: a channel update opens it


def awaits_balance(order: Order) -> bool:
    """Deposit paid, balance not: the buyer is committed, so the order is neither unpaid (the
    unpaid timer must not cancel it) nor shippable."""
    presale = order.presale
    return (
        presale is not None
        and presale.stage is PresaleStage.DEPOSIT_PAID
        and order.payment.status is PaymentStatus.UNPAID
    )


def release_gate(order: Order, now: datetime) -> Gate | None:
    """Why the order may not be handed to the WMS at ``now``, None when it may."""
    if order.ship_hold:
        return Gate(Reason.CHANNEL_SHIP_HOLD, f"the channel says {order.ship_hold}")
    if awaits_balance(order):
        return Gate(Reason.AWAITING_BALANCE, "deposit paid, balance due")
    if order.ship_after is not None and order.ship_after > now:
        when = order.ship_after.isoformat(timespec="minutes")
        return Gate(Reason.SHIP_DATE, f"ships from {when}", order.ship_after)
    return None


def solo_group(order_id: str) -> str:
    """The merge group an order waiting for its date waits in alone (never shared: a normal
    order must not wait weeks for a pre-sale's date)."""
    return f"S{order_id}"
