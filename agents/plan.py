"""What one input does to the orders it touches, as data: the pure stages (audit, route,
fulfil, WMS loop, after-sales) fill a ``Plan`` and the pipeline carries it out (reserve,
stock operations, CAS save, send), so every stage is testable without Redis or Kafka."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from state.orders import OrderRecord
from state.reservations import Reservation, ReserveRequest
from streams.messages import ChannelUpdate, EventKind, FulfilmentCommand, OrderEvent, OrderState

if TYPE_CHECKING:
    from datetime import datetime

    from agents.pipeline import BatchResult, OrderPipeline

Message = OrderEvent | FulfilmentCommand | ChannelUpdate


class StockOpKind(StrEnum):
    RELEASE = "release"  # cancel: units back, the reservation closed for good
    COMMIT = "commit"  # shipped: reserved -> sales in transit
    SETTLE = "settle"  # delivered: in transit ends
    RETURN = "return"  # a return arrived: restock when sellable
    SHORT_PICK = "short_pick"  # units missing at the warehouse: written off, rest undone


@dataclass(frozen=True)
class StockOp:
    """One stock effect of a plan, applied by ``StockEngine`` before the record is saved.
    Every kind is idempotent per reservation (and receipt), so redoing a plan after a lost
    CAS race or a crash changes no figure twice."""

    kind: StockOpKind
    shipment: str  # reservation id: the order id, or an exchange's id
    skus: tuple[str, ...]
    warehouse: str = ""  # '' = every warehouse of the reservation
    units: tuple[tuple[str, int], ...] = ()  # RETURN / SHORT_PICK: (sku, units)
    sellable: bool = True
    receipt: str = ""  # RETURN: the WMS event that reported it


AfterReserve = Callable[["Plan", Reservation], None]


@dataclass
class Plan:
    """What one input does to one order record, built up across the batch's phases."""

    source: Any  # what to process again after a lost race
    input_id: str
    record: OrderRecord
    expected_version: int
    messages: list[Message] = field(default_factory=list)
    reserve: ReserveRequest | None = None
    gift_fallback: ReserveRequest | None = None  # the same order without its gifts
    after_reserve: AfterReserve | None = None  # what a reservation leads to (default: release)
    stock_ops: list[StockOp] = field(default_factory=list)
    actor: str = "system"
    busy: bool = False  # another delivery of this order holds its reservation saga: redo later
    refused: bool = False  # nothing applied: an illegal move or an inapplicable request
    illegal_moves: int = 0  # moves the state machine refused (counted per batch)


@dataclass
class Step:
    """One input being applied to one order: the pipeline's shared steps bound to its plan,
    so the WMS and after-sales handlers say ``move``/``note`` and not all of this each time."""

    steps: OrderPipeline
    plan: Plan
    now: datetime
    result: BatchResult

    @property
    def record(self) -> OrderRecord:
        return self.plan.record

    def move(self, kind: EventKind, to: OrderState, **kw: Any) -> bool:
        return self.steps.move(self.plan, kind, self.now, to, **kw)

    def note(self, kind: EventKind, **kw: Any) -> None:
        self.steps.note(self.plan, kind, self.now, **kw)
