"""The order state machine: which transitions exist, and the event each one emits.

Pure: no Redis, no Kafka. A transition not in ``ALLOWED`` is refused (IllegalTransition), so a
bug or a reordered input can never move an order backwards silently.
"""

from __future__ import annotations

from datetime import datetime

from order.record import MAX_REASON, HistoryEntry, OrderRecord
from streams.messages import Allocation, EventKind, OrderEvent, OrderState, make_id

S = OrderState

# The WMS has the order: these states can be cancelled only through the WMS (intercept).
AT_WMS = frozenset({S.RELEASED, S.ACCEPTED, S.PICKED, S.EXCEPTION})
# Nothing left the warehouse yet and the WMS does not know the order: cancel gives stock back.
BEFORE_WMS = frozenset({S.RECEIVED, S.AUDITED, S.HELD, S.RESERVED, S.ROUTED})
_REROUTE = frozenset({S.ROUTED, S.HELD, S.RESERVED})  # after a short pick
# The fulfilment command went out: the WMS may already have moved the order on.
RELEASED_OR_LATER = frozenset(
    {S.RELEASED, S.ACCEPTED, S.PICKED, S.PARTIALLY_SHIPPED, S.SHIPPED, S.DELIVERED, S.CLOSED}
)
# A parcel is still owed to the buyer: the order's ship-by deadline runs (order/deadlines.py).
TO_SHIP = BEFORE_WMS | AT_WMS | {S.PARTIALLY_SHIPPED}
# A person has to decide (the held list of operators).
NEEDS_A_PERSON = frozenset({S.HELD, S.EXCEPTION})
# Goods with the buyer and money settled: closed when the after-sales window ends.
CLOSABLE = frozenset({S.DELIVERED, S.RETURNED, S.REFUNDED})

ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    S.RECEIVED: frozenset({S.AUDITED, S.HELD, S.REJECTED, S.CANCELLED}),
    # -> AUDITED from AUDITED, RESERVED, ROUTED: its lines changed before release, so it is
    # audited and reserved again (order/edits.py)
    S.AUDITED: frozenset(
        {S.AUDITED, S.RESERVED, S.HELD, S.REJECTED, S.CANCELLED, S.FULFILLED_ELSEWHERE}
    ),
    S.HELD: frozenset({S.HELD, S.AUDITED, S.REJECTED, S.CANCELLED}),
    S.RESERVED: frozenset({S.AUDITED, S.ROUTED, S.HELD, S.CANCELLED}),
    S.ROUTED: frozenset({S.AUDITED, S.RELEASED, S.HELD, S.CANCELLED}),
    S.RELEASED: frozenset(
        {S.ACCEPTED, S.PICKED, S.PARTIALLY_SHIPPED, S.SHIPPED, S.EXCEPTION, S.INTERCEPTING}
        | _REROUTE
    ),
    S.ACCEPTED: frozenset(
        {S.PICKED, S.PARTIALLY_SHIPPED, S.SHIPPED, S.EXCEPTION, S.INTERCEPTING} | _REROUTE
    ),
    S.PICKED: frozenset({S.PARTIALLY_SHIPPED, S.SHIPPED, S.EXCEPTION, S.INTERCEPTING} | _REROUTE),
    S.EXCEPTION: frozenset(
        {S.RELEASED, S.INTERCEPTING, S.SHIPPED, S.PARTIALLY_SHIPPED, S.CANCELLED}
    ),
    S.PARTIALLY_SHIPPED: frozenset(
        {S.PARTIALLY_SHIPPED, S.SHIPPED, S.EXCEPTION, S.INTERCEPTING, S.RETURNING}
    ),
    S.INTERCEPTING: frozenset({S.CANCELLED, S.RETURNING, S.INTERCEPTING}),
    S.SHIPPED: frozenset({S.DELIVERED, S.RETURNING, S.EXCHANGING, S.REFUNDED}),
    S.DELIVERED: frozenset({S.CLOSED, S.RETURNING, S.EXCHANGING, S.REFUNDED}),
    S.RETURNING: frozenset({S.RETURNED, S.RETURNING, S.REFUNDED}),
    S.EXCHANGING: frozenset({S.SHIPPED, S.PARTIALLY_SHIPPED, S.EXCHANGING, S.RETURNING}),
    S.RETURNED: frozenset({S.REFUNDED, S.CLOSED, S.RETURNING, S.EXCHANGING}),
    S.REFUNDED: frozenset({S.CLOSED, S.RETURNING, S.REFUNDED}),
    S.FULFILLED_ELSEWHERE: frozenset({S.CANCELLED}),  # the platform's cancel or refund
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.CLOSED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in ALLOWED.items() if not nxt)


class IllegalTransition(ValueError):
    def __init__(self, order_id: str, current: OrderState, wanted: OrderState) -> None:
        super().__init__(f"order {order_id}: {current.value} -> {wanted.value} is not allowed")
        self.current = current
        self.wanted = wanted


def can_move(current: OrderState, wanted: OrderState) -> bool:
    return wanted in ALLOWED[current]


def record_event(
    record: OrderRecord,
    kind: EventKind,
    at: datetime,
    *,
    to_state: OrderState | None = None,
    reason: str = "",
    detail: str = "",
    allocations: list[Allocation] | None = None,
    with_snapshot: bool = False,
    actor: str = "system",
) -> OrderEvent:
    """Append one entry to the record's history (moving its state if ``to_state``) and return
    the matching event. The event id is (order id, seq): a replay re-creates the same id."""
    first = not record.history
    from_state = None if first else record.state
    if to_state is not None and from_state is not None and not can_move(from_state, to_state):
        raise IllegalTransition(record.order_id, from_state, to_state)
    seq = record.next_seq
    event_id = make_id("E", record.order_id, seq)
    if to_state is not None:
        record.state = to_state
    record.add_history(
        HistoryEntry(
            seq=seq,
            event_id=event_id,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            reason=reason[:MAX_REASON],
            at=at,
            actor=actor,
        )
    )
    order = record.order
    return OrderEvent(
        event_id=event_id,
        order_id=record.order_id,
        seq=seq,
        kind=kind,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        detail=detail,
        at=at,
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        warehouse=record.warehouse,
        allocations=allocations or [],
        order=order if with_snapshot else None,
        actor=actor,
    )
