"""Stage 2: is this input new, a redelivery, a re-push, an update, or stale?

Identity is (channel, shop, external id), folded into the deterministic order id. Content is
compared by fingerprint; the channel's own ``updated_at`` orders versions of one order.
"""

from __future__ import annotations

from enum import StrEnum

from order.record import OrderRecord
from streams.models import Order


class Intake(StrEnum):
    NEW = "new"
    REDELIVERY = (
        "redelivery"  # same Kafka delivery seen again after a crash: re-emit, decide nothing
    )
    DUPLICATE = "duplicate"  # same content pushed again: counted, dropped
    UPDATE = "update"  # changed content, same or newer channel time: applied
    STALE = "stale"  # an older version than the one held: ignored


def classify(
    record: OrderRecord | None, order: Order, input_id: str, earlier_id: str = ""
) -> Intake:
    """``earlier_id`` is the input's id as a release before the receiver's ``protected`` copy
    named it (``Order.v1_fingerprint``): a redelivery or re-push of an order saved by that
    release is still one after the upgrade."""
    if record is None:
        return Intake.NEW
    if record.has_applied(input_id) or (earlier_id and record.has_applied(earlier_id)):
        return Intake.REDELIVERY
    held = record.fingerprint
    if held == order.fingerprint() or held == order.v1_fingerprint():
        return Intake.DUPLICATE
    if order.updated_at < record.order.updated_at:
        return Intake.STALE
    return Intake.UPDATE
