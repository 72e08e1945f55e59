"""What one input does to the orders it touches, as data: the pure stages (audit, route,
fulfil, WMS loop, after-sales) fill a ``Plan`` and the pipeline carries it out, so every stage
is testable without Redis or Kafka.

A plan never touches stock itself. Its stock effects and its wish to reserve are saved in the
order record with the rest of the decision (``Pending``), and only then carried out, fenced by
the saved version (docs/decisions/0013-decide-then-do.md): a plan that loses the save has done
nothing to undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from state.orders import OrderRecord, Output, ReserveIntent
from state.reservations import StockEffect
from streams.messages import ChannelUpdate, EventKind, FulfilmentCommand, OrderEvent, OrderState

if TYPE_CHECKING:
    from datetime import datetime

    from agents.pipeline import BatchResult, OrderPipeline

Message = OrderEvent | FulfilmentCommand | ChannelUpdate


@dataclass
class Plan:
    """What one input does to one order record, built up across the batch's phases."""

    source: Any  # what to process again after a lost race
    input_id: str
    record: OrderRecord
    expected_version: int
    messages: list[Message] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)  # the messages, as sent
    dropped: list[str] = field(default_factory=list)  # inputs whose kept outputs go now
    effects: list[StockEffect] = field(default_factory=list)  # carried out after the save
    reserve: ReserveIntent | None = None  # reserved after the save; its outcome decides next
    actor: str = "system"
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
