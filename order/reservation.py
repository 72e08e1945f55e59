"""What a decision asks of stock, as plain values: a reservation request and its outcome, and
the stock effects a decision saves in the order record before anything is carried out
(docs/decisions/0013-decide-then-do.md). The Redis side is ``state/reservations.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from order.allocation import ShortagePolicy, parse_parts
from streams.messages import Allocation
from streams.models import ShopKey

MAX_ATTEMPTS = 4  # saga attempts per request: seq .. seq + 3
MAX_ID = 200  # reservation, warehouse and receipt ids
MAX_SKUS = 500  # skus one effect touches


class ReserveStatus(StrEnum):
    RESERVED = "reserved"  # reserved now
    EXISTING = "existing"  # reserved by an earlier delivery of the same input: returned as is
    BLOCKED = "blocked"  # the order's reservation was released for good (cancelled)
    SHORTAGE = "shortage"  # no plan fits the stock; nothing is reserved
    SUPERSEDED = "superseded"  # a later decision about the order was carried out already


@dataclass(frozen=True)
class ReserveRequest:
    order_id: str
    quantities: dict[str, int]  # sku -> units, lines of one sku summed
    warehouses: Sequence[str]  # candidates in routing priority
    policy: ShortagePolicy = ShortagePolicy.HOLD
    shop: ShopKey | None = None  # its channel quotas apply (None: none; state/channel_stock.py)
    seq: int | None = None  # fence of attempt 0 (module docstring); None: unfenced (tests, bench)
    seq_limit: int | None = None  # first seq of the next decision (what "superseded" means)
    together: bool = False  # from one warehouse only, whatever the policy (a bundle's parts)

    def attempt_seq(self, attempt: int) -> str:
        return "" if self.seq is None else str(self.seq + attempt)


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReserveStatus
    allocations: list[Allocation] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in (ReserveStatus.RESERVED, ReserveStatus.EXISTING)

    @property
    def warehouses(self) -> list[str]:
        return sorted({a.warehouse for a in self.allocations})

    @property
    def warehouse(self) -> str:
        """The warehouse of a single-warehouse reservation; '' when split or empty."""
        whs = self.warehouses
        return whs[0] if len(whs) == 1 else ""


class EffectKind(StrEnum):
    RELEASE = "release"  # cancel: units back, the reservation closed for good
    UNDO = "undo"  # units back, the reservation id may reserve again
    COMMIT = "commit"  # shipped: reserved -> sales in transit
    SETTLE = "settle"  # delivered (or returned in transit): in transit ends
    RETURN = "return"  # a return arrived: restock when sellable
    SHORT_PICK = "short_pick"  # units missing at the warehouse: written off, rest undone


class StockEffect(BaseModel):
    """One stock effect of an order decision, kept in the order record until it is carried
    out (docs/decisions/0013-decide-then-do.md). ``seq`` fences it in every sku's script: it
    applies once, and never after a later decision's effect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EffectKind
    shipment: str = Field(max_length=MAX_ID)  # reservation id: the order, or an exchange's id
    skus: tuple[str, ...] = Field(max_length=MAX_SKUS)
    warehouse: str = Field(default="", max_length=MAX_ID)  # '' = every warehouse
    # RETURN / SHORT_PICK: (sku, units) back or missing; COMMIT: (sku, units) the WMS shipped
    units: tuple[tuple[str, int], ...] = Field(default=(), max_length=MAX_SKUS)
    sellable: bool = True
    returned: bool = False  # SETTLE: came back in transit instead of delivered
    receipt: str = Field(default="", max_length=MAX_ID)  # RETURN: the WMS event reporting it
    seq: int | None = None


def next_step(req: ReserveRequest, attempt: int, overtaken_at: int | None) -> int | ReserveStatus:
    """After a failed attempt: the attempt to run next, or the verdict. ``overtaken_at``: the
    highest seq a 'stale' reply named (another worker carrying out the same decision got
    further, or a later decision was carried out). Within this request's attempts: go on at
    the one it reached (its decisions are recorded there). Past them but within the decision
    (``seq_limit``): this request was concluded short and the decision moved on to its
    fallback. Past the decision: superseded."""
    if overtaken_at is None or req.seq is None:
        return attempt + 1 if attempt + 1 < MAX_ATTEMPTS else ReserveStatus.SHORTAGE
    if req.seq_limit is not None and overtaken_at >= req.seq_limit:
        return ReserveStatus.SUPERSEDED
    reached = overtaken_at - req.seq
    if reached >= MAX_ATTEMPTS:
        return ReserveStatus.SHORTAGE if req.seq_limit is not None else ReserveStatus.SUPERSEDED
    return max(reached, attempt + 1)


def to_allocations(per_sku: dict[str, str]) -> list[Allocation]:
    return [
        Allocation(sku=sku, warehouse=wh, quantity=qty)
        for sku, text in sorted(per_sku.items())
        for wh, qty in parse_parts(text)
    ]
