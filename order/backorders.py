"""Which backorders to retry when stock comes back (pure): orders held out of stock, queued
first-held first (a priority gives a head start, order/deadlines.py), each asking for units of
one or more skus.

The walk is first come, first served per sku: once an order cannot be covered by what is
available of one of its skus, no order queued after it gets that sku, so a large early order is
not overtaken forever by a stream of small later ones (its other skus stay free for others: an
order that cannot ship keeps nothing back). Units the walk gives an order are taken
off what the next ones see, so a restock of 10 units retries the orders those 10 can serve and
not the whole queue. The reserve script still decides atomically (a retry that loses the race
is held again, no harm); this only keeps the retries few and in the right order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Backorder:
    order_id: str
    queued_at: float  # its score in the backorder index: the hold time less the head start
    units: Mapping[str, int]  # units per sku the order waits for


def choose_retries(queue: Sequence[Backorder], available: Mapping[str, int]) -> list[Backorder]:
    """The backorders the available units can serve, in queue order (see the module doc)."""
    left = {sku: max(0, units) for sku, units in available.items()}
    blocked: set[str] = set()
    chosen = []
    for backorder in queue:
        wanted = backorder.units
        if not wanted:
            continue
        short = {s for s, n in wanted.items() if s in blocked or left.get(s, 0) < n}
        if short:
            blocked |= short
            continue
        for sku, units in wanted.items():
            left[sku] -= units
        chosen.append(backorder)
    return chosen
