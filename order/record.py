"""The order record: everything the OMS knows and has decided about one order, as a value.

Stored by ``state/orders.py`` (one Redis hash per order, saved by compare-and-set), decided on
by the pure rules of this package. A record also names the inputs whose outputs are kept for
their redeliveries (the outbox: docs/decisions/0001-at-least-once.md) and the stock work a saved
decision still has to do (``Pending``: docs/decisions/0013-decide-then-do.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from order.allocation import ShortagePolicy
from order.reasons import NoReason, Reason
from order.reservation import MAX_ATTEMPTS, ReserveRequest, StockEffect
from streams.messages import (
    AfterSalesKind,
    Allocation,
    CommandKind,
    CommandLine,
    EventKind,
    OperatorActionKind,
    OrderState,
)
from streams.models import Address, Money, Order, OrderLine, ShopKey

Output = tuple[str, str, str]  # topic, key, value JSON: a message as sent

OUTBOX_INPUTS = 16  # recent inputs whose outputs are kept for re-emission on replay
APPLIED_INPUTS = 256  # inputs recognised as applied beyond the outbox (digests)
# The trail kept in the record: the first entries (how the order began) and the latest ones;
# what falls between is counted in ``history_dropped`` (every event is in ClickHouse anyway).
HISTORY_HEAD = 20
HISTORY_MAX = 200
MAX_REASON = 200  # a history entry's reason (codes and ids; free text is clipped)
# Fences of an order's stock effects (docs/decisions/0013-decide-then-do.md): the decision
# saved as record version V numbers its effects V * FENCE_STRIDE + j, its reservation saga's
# attempts from V * FENCE_STRIDE + RESERVE_FENCE on.
FENCE_STRIDE = 64
RESERVE_FENCE = 16
# A decision's seqs: effects 0..15, its reservation's attempts 16..19, the fallback's 20..23;
# the next decision starts at the next multiple of 64. Overlap would let one decision's
# scripts answer for another's.
if RESERVE_FENCE + 2 * MAX_ATTEMPTS > FENCE_STRIDE:
    raise ValueError("a decision's seqs would overlap the next decision's")
# A decision's stock work is normally done within its batch; older than this, its worker died
# (the pending sweeper in agents/timers.py finishes it; verify reports it past twice this).
PENDING_GRACE_S = 30.0


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    event_id: str
    kind: EventKind
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    reason: str = Field(default="", max_length=MAX_REASON)
    at: AwareDatetime
    actor: str = "system"
    repeats: int = 0  # the same note came this many more times (re-pushes, refusals)


class CommandStatus(StrEnum):
    SENT = "sent"
    ACCEPTED = "accepted"
    PICKED = "picked"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"  # the WMS confirmed nothing left (cancel/intercept succeeded)
    SUPERSEDED = "superseded"  # replaced by a re-sent outbound (short pick, exception)
    FAILED = "failed"  # short pick or exception: no longer being worked
    DONE = "done"  # a return inbound whose units all came back


LIVE_OUTBOUND = frozenset({CommandStatus.SENT, CommandStatus.ACCEPTED, CommandStatus.PICKED})
SHIPPED_OR_DELIVERED = frozenset({CommandStatus.SHIPPED, CommandStatus.DELIVERED})


class CommandRef(BaseModel):
    """A command sent to the WMS for this order, and what the WMS has said about it since."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    kind: CommandKind
    warehouse: str
    shipment: str  # the reservation it fulfils: the order id, or an exchange's own id
    status: CommandStatus = CommandStatus.SENT
    attempt: int = 1
    carrier: str = ""
    tracking_number: str = ""
    lines: list[CommandLine] = Field(default_factory=list)
    primary: str = ""  # the order whose key carries a merged command ('' = this order)
    refers_to: str = ""


class AfterSalesEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    kind: AfterSalesKind
    line_ids: list[str] = Field(default_factory=list)
    status: str = "open"  # open | done | refused
    amount: Money | None = None
    exchange_sku: str = ""
    shipment: str = ""  # exchange: the replacement's reservation id


class LineEdit(BaseModel):
    """A line customer service added or changed before release (order/edits.py), kept in the
    record and applied over every version of the order the channel sends, as ``ship_to`` is
    for an address: a later channel update does not undo a person's change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: OperatorActionKind  # ADD_GIFT or CHANGE_LINE
    line_id: str  # the gift's own id, or the line changed
    sku: str = ""  # the gift's sku, or the line's new one ('' = kept)
    quantity: int | None = None  # the gift's units, or the line's new count (None = kept)
    actor: str = ""
    action_id: str = ""


class Then(StrEnum):
    """What a reservation leads to once it is known (a saved decision's continuation)."""

    ROUTE = "route"  # carrier and release to the WMS, or hold / reject when short
    EXCHANGE = "exchange"  # an after-sales exchange's replacement ships, or is refused


class ReserveIntent(BaseModel):
    """A decision to reserve, saved before anything is reserved."""

    model_config = ConfigDict(extra="forbid")

    shipment: str  # reservation id: the order, or an exchange's own id
    quantities: dict[str, int]
    warehouses: list[str]
    policy: ShortagePolicy = ShortagePolicy.HOLD
    together: bool = False  # never split over warehouses: the order holds a bundle
    shop: str = ""  # ShopKey "CHANNEL/SHOP" as stored ('' = none)
    fallback: dict[str, int] | None = None  # the order without its gifts, tried when short
    then: Then = Then.ROUTE
    request_id: str = ""  # EXCHANGE: the after-sales request
    reason: str = ""  # EXCHANGE: what the buyer gave as the reason

    def requests(self, version: int) -> tuple[ReserveRequest, ReserveRequest | None]:
        """The saga's request, and the fallback's, fenced by the version that saved them."""
        base = version * FENCE_STRIDE + RESERVE_FENCE
        first = ReserveRequest(
            self.shipment,
            self.quantities,
            tuple(self.warehouses),
            self.policy,
            shop=ShopKey.parse(self.shop) if self.shop else None,
            seq=base,
            seq_limit=(version + 1) * FENCE_STRIDE,
            together=self.together,
        )
        if self.fallback is None:
            return first, None
        return first, replace(first, quantities=self.fallback, seq=base + MAX_ATTEMPTS)


class Pending(BaseModel):
    """What a saved decision still has to do to stock: its effects (fenced by the saved
    version) and a reservation whose outcome decides what happens next. Carried out by whoever
    loads the record next (the deciding worker at once, a redelivery, any later input, or the
    pending sweeper), always before anything else is decided about the order."""

    model_config = ConfigDict(extra="forbid")

    input_id: str  # whose outputs the continuation adds to
    actor: str = "system"
    effects: list[StockEffect] = Field(default_factory=list)
    reserve: ReserveIntent | None = None


class OrderRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    state: OrderState
    order: Order
    fingerprint: str
    version: int = 0  # CAS counter, maintained by the save script
    warehouse: str = ""
    allocations: list[Allocation] = Field(default_factory=list)
    hold_reason: Reason | NoReason = ""  # also the cancel reason while the WMS stops it
    reject_reason: Reason | NoReason = ""
    duplicates: int = 0
    ship_to: Address | None = None  # an after-sales address change; else the order's address
    carrier: str = ""
    weight_g: int = 0
    gift_lines: list[OrderLine] = Field(default_factory=list)
    commands: list[CommandRef] = Field(default_factory=list)
    merge_group: str = ""  # set while the order waits in its merge window
    merged_with: list[str] = Field(default_factory=list)  # every order of its merged shipment
    excluded_warehouses: list[str] = Field(default_factory=list)  # short-picked there
    aftersales: list[AfterSalesEntry] = Field(default_factory=list)
    refunded: Money = Decimal("0")
    merge_due: float = 0.0  # unix seconds its merge window closes (while merge_group is set)
    close_due: float = 0.0  # unix seconds its after-sales window ends (once delivered)
    ship_by: float = 0.0  # unix seconds it must ship by, 0 while none runs (order/deadlines.py)
    priority: int = 0  # 0 normal .. 9: who goes first at the WMS and when stock comes back
    tags: list[str] = Field(default_factory=list)  # customer service's labels (streams/tags.py)
    # gifts and line changes customer service made before release; ``order`` has them applied
    # (order/edits.py with_edits), the channel's version of it does not
    line_edits: list[LineEdit] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    last_seq: int = 0  # seq of the newest event (the history may be compacted)
    history_dropped: int = 0  # entries left out of the middle of the trail (HISTORY_MAX)
    # Inputs whose outputs are kept for their redeliveries, newest last: each input's outputs
    # are the field out:<input id> of the order's hash, beside the record, not in it (saved once,
    # read only on a redelivery: OrderStore.outputs).
    outbox: list[str] = Field(default_factory=list)
    applied: list[str] = Field(default_factory=list)  # digests of inputs applied, newest last
    pending: Pending | None = None  # a saved decision's stock work not yet known done

    @property
    def next_seq(self) -> int:
        return max(self.last_seq, len(self.history)) + 1

    def add_history(self, entry: HistoryEntry) -> None:
        """Append to the trail: a note repeating the last one is counted on it, and the
        trail keeps its head and its newest entries (``HISTORY_MAX``)."""
        self.last_seq = entry.seq
        last = self.history[-1] if self.history else None
        if (
            last is not None
            and entry.to_state is None
            and last.to_state is None
            and (last.kind, last.reason, last.actor) == (entry.kind, entry.reason, entry.actor)
        ):
            last.repeats += 1
            return
        self.history.append(entry)
        if len(self.history) > HISTORY_MAX:
            del self.history[HISTORY_HEAD]
            self.history_dropped += 1

    @property
    def address(self) -> Address:
        """Where the goods go: an after-sales change wins over what the channel sent."""
        return self.ship_to or self.order.address

    @property
    def lines(self) -> list[OrderLine]:
        """What ships: the channel's lines and the gifts promotions added."""
        return [*self.order.lines, *self.gift_lines]

    @property
    def quantities(self) -> dict[str, int]:
        """Units per sku of the order's own reservation, gifts included."""
        totals: dict[str, int] = {}
        for line in self.lines:
            totals[line.sku] = totals.get(line.sku, 0) + line.quantity
        return totals

    def live_commands(self, kind: CommandKind = CommandKind.OUTBOUND) -> list[CommandRef]:
        return [c for c in self.commands if c.kind is kind and c.status in LIVE_OUTBOUND]

    def own_outbounds(self) -> list[CommandRef]:
        """Every outbound of the order's own reservation (not an exchange's), any status."""
        return [
            c
            for c in self.commands
            if c.kind is CommandKind.OUTBOUND and c.shipment == self.order_id
        ]

    def has_shipped(self) -> bool:
        """A parcel of the order's own reservation left the warehouse."""
        return any(c.status in SHIPPED_OR_DELIVERED for c in self.own_outbounds())

    def command(self, command_id: str) -> CommandRef | None:
        return next((c for c in self.commands if c.command_id == command_id), None)

    @field_validator("outbox", mode="before")
    @classmethod
    def _outbox_ids(cls, value: Any) -> Any:
        """Records saved before the outputs moved beside the record kept them in it: their
        input ids are what is still known (those outputs are not re-sent any more)."""
        return list(value) if isinstance(value, dict) else value

    def remember_outputs(self, input_id: str) -> list[str]:
        """Note that an input's outputs are kept (a decision's continuation adds to its
        entry), and its digest for redeliveries beyond; returns the inputs whose kept outputs
        are dropped now (the oldest beyond OUTBOX_INPUTS)."""
        if input_id not in self.outbox:
            self.outbox.append(input_id)
        dropped = self.outbox[:-OUTBOX_INPUTS]
        del self.outbox[:-OUTBOX_INPUTS]
        digest = input_digest(input_id)
        if digest not in self.applied:
            self.applied.append(digest)
            del self.applied[:-APPLIED_INPUTS]
        return dropped

    @property
    def in_merge_window(self) -> bool:
        """Routed and waiting in its merge group for the group's timer (``merge_due`` 0: behind
        a release gate no timer opens, out of any window: order/gates.py)."""
        return self.state is OrderState.ROUTED and bool(self.merge_group) and self.merge_due > 0

    def has_applied(self, input_id: str) -> bool:
        """Applied before, even if its outputs left the outbox since."""
        return input_id in self.outbox or input_digest(input_id) in self.applied


def input_digest(input_id: str) -> str:
    return hashlib.blake2b(input_id.encode(), digest_size=8).hexdigest()


def effect_seq(version: int, index: int) -> int:
    """The fence of the ``index``-th stock effect of the decision saved as ``version``."""
    if not 0 <= index < RESERVE_FENCE:
        raise ValueError(f"a decision has at most {RESERVE_FENCE} stock effects")
    return version * FENCE_STRIDE + index
