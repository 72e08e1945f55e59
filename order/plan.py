"""What one input does to the orders it touches, as data: the pure stages (audit, route,
fulfil, WMS loop, after-sales) fill a ``Plan`` and the pipeline carries it out, so every stage
is testable without Redis or Kafka.

A plan never touches stock itself. Its stock effects and its wish to reserve are saved in the
order record with the rest of the decision (``Pending``), and only then carried out, fenced by
the saved version (docs/decisions/0013-decide-then-do.md): a plan that loses the save has done
nothing to undo.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from order.record import OrderRecord, Output, ReserveIntent
from order.reservation import StockEffect
from streams.messages import ChannelUpdate, FulfilmentCommand, OrderEvent

Message = OrderEvent | FulfilmentCommand | ChannelUpdate


@dataclass
class BatchResult:
    """What a batch of inputs comes to: the outputs to send, counters, and the redelivered
    inputs whose kept outputs go again."""

    outputs: list[Output] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # (order id, input id) of redelivered inputs whose kept outputs are sent again
    reemit: list[tuple[str, str]] = field(default_factory=list)


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
