"""Which warehouse(s) serve an order: pure planning over a snapshot of available stock.

The plan is then reserved per sku by Lua scripts that re-check every figure, so a plan made on
a stale snapshot can fail (and be retried) but can never oversell.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from enum import StrEnum

Plan = dict[str, list[tuple[str, int]]]  # sku -> [(warehouse, units)]
Available = dict[str, dict[str, int]]  # sku -> warehouse -> available units
# sku -> warehouses that stock it at all (its hash has on_hand:WH, even at 0)
Stocked = Mapping[str, Collection[str]]


class ShortagePolicy(StrEnum):
    """What a shop wants when no single warehouse can serve a whole order."""

    HOLD = "hold"  # wait for stock (or a person); split if no warehouse stocks every sku
    REJECT = "reject"  # refuse the order
    SPLIT = "split"  # ship from several warehouses


def plan_single(
    quantities: Mapping[str, int], candidates: Sequence[str], available: Available
) -> Plan | None:
    """The first warehouse, in routing priority, that can serve every line."""
    for wh in candidates:
        if all(available.get(sku, {}).get(wh, 0) >= qty for sku, qty in quantities.items()):
            return {sku: [(wh, qty)] for sku, qty in quantities.items()}
    return None


def plan_split(
    quantities: Mapping[str, int], candidates: Sequence[str], available: Available
) -> Plan | None:
    """Warehouses in priority order each give what they can; None when even all of them
    together cannot serve the order (then nothing is reserved)."""
    candidates = list(dict.fromkeys(candidates))
    plan: Plan = {sku: [] for sku in quantities}
    for sku, wanted in quantities.items():
        remaining = wanted
        for wh in candidates:
            take = min(remaining, max(0, available.get(sku, {}).get(wh, 0)))
            if take:
                plan[sku].append((wh, take))
                remaining -= take
            if remaining == 0:
                break
        if remaining:
            return None
    return plan


def stocks_everything(quantities: Mapping[str, int], warehouse: str, stocked: Stocked) -> bool:
    return all(warehouse in stocked.get(sku, ()) for sku in quantities)


def plan_allocation(
    quantities: Mapping[str, int],
    candidates: Sequence[str],
    available: Available,
    policy: ShortagePolicy = ShortagePolicy.HOLD,
    stocked: Stocked | None = None,
    together: bool = False,
) -> Plan | None:
    """One warehouse if any can serve the whole order; else split when the policy says so, or
    when the policy is HOLD but no candidate even stocks every sku (``stocked`` given): then
    waiting for a restock could never make one warehouse able to serve it. ``together``
    (an order with a bundle, whose components ship as one parcel) never splits."""
    candidates = list(dict.fromkeys(candidates))  # a warehouse listed twice is one warehouse
    single = plan_single(quantities, candidates, available)
    if single is not None or policy is ShortagePolicy.REJECT or together:
        return single
    never_single = stocked is not None and not any(
        stocks_everything(quantities, wh, stocked) for wh in candidates
    )
    if policy is ShortagePolicy.SPLIT or never_single:
        return plan_split(quantities, candidates, available)
    return None


def take(available: Available, plan: Plan) -> None:
    """Count a plan against the snapshot, so later orders of the same batch see less."""
    for sku, parts in plan.items():
        for wh, qty in parts:
            available.setdefault(sku, {})[wh] = available.get(sku, {}).get(wh, 0) - qty


def format_parts(parts: Sequence[tuple[str, int]]) -> str:
    return ",".join(f"{wh}={qty}" for wh, qty in parts)


def parse_parts(text: str) -> list[tuple[str, int]]:
    if not text or text == "-":
        return []
    out = []
    for item in text.split(","):
        wh, qty = item.split("=")
        out.append((wh, int(qty)))
    return out
