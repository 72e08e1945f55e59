"""The backorder retry walk (order/backorders.py): never more units than are available, first
queued first per sku, and nothing that could be served is left out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from order.backorders import Backorder, choose_retries

SKUS = st.sampled_from(["A", "B", "C"])
UNITS = st.dictionaries(SKUS, st.integers(1, 5), min_size=1, max_size=3)
QUEUES = st.lists(UNITS, max_size=30).map(
    lambda wants: [Backorder(f"O{i}", float(i), w) for i, w in enumerate(wants)]
)
AVAILABLE = st.dictionaries(SKUS, st.integers(-3, 20))


def test_a_large_early_order_is_not_overtaken_on_its_sku() -> None:
    queue = [Backorder("big", 1.0, {"A": 3}), Backorder("small", 2.0, {"A": 1})]
    assert choose_retries(queue, {"A": 2}) == []
    assert [b.order_id for b in choose_retries(queue, {"A": 4})] == ["big", "small"]


def test_an_order_that_cannot_ship_keeps_nothing_back_of_its_other_skus() -> None:
    queue = [Backorder("both", 1.0, {"A": 1, "B": 1}), Backorder("b", 2.0, {"B": 1})]
    assert [b.order_id for b in choose_retries(queue, {"B": 1})] == ["b"]


@given(QUEUES, AVAILABLE)
def test_never_more_than_available_and_first_queued_first(
    queue: list[Backorder], available: dict[str, int]
) -> None:
    chosen = choose_retries(queue, available)
    ids = [b.order_id for b in chosen]
    assert ids == [b.order_id for b in queue if b.order_id in set(ids)]  # queue order kept
    for sku in "ABC":
        assert sum(b.units.get(sku, 0) for b in chosen) <= max(0, available.get(sku, 0))
    # Replaying the walk: each order left out was short of, or queued behind a shortage of,
    # one of its skus; each order chosen was served in full.
    left = {s: max(0, n) for s, n in available.items()}
    blocked: set[str] = set()
    for backorder in queue:
        short = {s for s, n in backorder.units.items() if s in blocked or left.get(s, 0) < n}
        assert (backorder in chosen) == (not short)
        if short:
            blocked |= short
        else:
            for s, n in backorder.units.items():
                left[s] -= n
