"""Ship-by deadlines and priorities (pure): when an order must have left the warehouse under its
channel's rules, and which orders go first when several wait for the same thing.

Deadline: the channel's own latest ship time when it sends one (Amazon ``LatestShipDate``,
Douyin ``exp_ship_time``), else the shop's promise (config/shops.toml ``ship_within_h``, or the
channel's usual rule below) counted from payment, or from the pre-sale's ship date when that is
later (the order time for cash on delivery and for a channel that sends no pay time). An order
not paid yet has no deadline: the channel's clock starts at payment.

Priority, 0 (normal) to MAX_PRIORITY: the shop's own (``priority`` in config/shops.toml, e.g. a
flagship store), raised to EXPEDITED for an expedited shipping service (Amazon
``ShipmentServiceLevelCategory``) or a remark that asks for it (加急...). A priority gives a
backorder a head start in the retry queue and travels on the WMS command, which picks by it.
See docs/decisions/0025-deadlines-and-backorders.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from order.shops import ShopRules
from streams.models import Channel, Order, PaymentStatus

MAX_PRIORITY = 9
EXPEDITED = 5
# Hours the channel gives a paid order to ship, when the shop does not say: Taobao/Tmall and
# Douyin's standard promise is 48 h (发货时效), JD's 24 h for its POP shops' default promise;
# Shopify and own shops promise what the merchant does (3 days is common); Amazon sends
# LatestShipDate on every order (its default handling time is 2 days).
CHANNEL_SHIP_WITHIN_H: dict[Channel, float] = {
    Channel.TAOBAO: 48.0,
    Channel.DOUYIN: 48.0,
    Channel.JD: 24.0,
    Channel.SHOPIFY: 72.0,
    Channel.AMAZON: 48.0,
    Channel.OWN: 72.0,
}
# Words in a buyer's or seller's remark that ask for the parcel to go first. Plain substring
# tests (linear in the remark), case-insensitive.
EXPEDITE_WORDS = ("加急", "急发", "急件", "优先发货", "urgent", "expedite", "rush")
# "About to miss its deadline": how far `./oms orders late` and the due-soon metric look ahead.
DUE_SOON_S = 4 * 3600.0
# A backorder's head start per priority level in the retry queue: a day, so a priority order
# held out of stock goes before a day's worth of normal ones held before it.
HEAD_START_PER_LEVEL_S = 86_400.0


def ship_by(order: Order, rules: ShopRules | None) -> datetime | None:
    """The time the order must ship by, None while the channel's clock has not started."""
    if order.ship_by is not None:
        return order.ship_by
    if order.payment.status is PaymentStatus.UNPAID:
        return None
    start = order.payment.paid_at or order.created_at  # COD, or a channel without a pay time
    if order.ship_after is not None and order.ship_after > start:
        start = order.ship_after
    within = rules.ship_within_h if rules and rules.ship_within_h is not None else None
    hours = CHANNEL_SHIP_WITHIN_H.get(order.channel, 48.0) if within is None else within
    return start + timedelta(hours=hours)


def asks_to_expedite(order: Order) -> bool:
    remarks = f"{order.buyer_remark}\n{order.seller_remark}".lower()
    return order.expedited or any(word in remarks for word in EXPEDITE_WORDS)


def priority_of(order: Order, rules: ShopRules | None) -> int:
    shop = rules.priority if rules and rules.priority is not None else 0
    return min(MAX_PRIORITY, max(shop, EXPEDITED if asks_to_expedite(order) else 0))


def head_start_s(priority: int) -> float:
    """How much earlier than its hold time a backorder of this priority is queued."""
    return priority * HEAD_START_PER_LEVEL_S
