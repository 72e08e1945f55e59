"""Property tests of the pure planner (state/allocation.py).

The Lua scripts re-check every figure, but they trust the *shape* of a plan (which warehouse,
how many units), so the planner must never hand them a plan that takes more than the snapshot
says is there, or covers an order only partly.
"""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from state.allocation import (
    Available,
    ShortagePolicy,
    format_parts,
    parse_parts,
    plan_allocation,
    plan_single,
    plan_split,
    take,
)

PROPERTY = settings(max_examples=300, deadline=None)
WAREHOUSES = ["WH-SH", "WH-BJ", "WH-GZ", "WH-CD"]
SKUS = ["A", "B", "C", "D"]

quantities_st = st.dictionaries(
    st.sampled_from(SKUS), st.integers(min_value=1, max_value=12), min_size=1, max_size=4
)
# Snapshots may hold negative figures (a race seen mid-flight) and miss skus or warehouses.
available_st: st.SearchStrategy[Available] = st.dictionaries(
    st.sampled_from(SKUS),
    st.dictionaries(st.sampled_from(WAREHOUSES), st.integers(min_value=-3, max_value=15)),
)
candidates_st = st.lists(st.sampled_from(WAREHOUSES), unique=True, max_size=len(WAREHOUSES))


def avail(available: Available, sku: str, wh: str) -> int:
    return available.get(sku, {}).get(wh, 0)


def can_serve(quantities: dict[str, int], wh: str, available: Available) -> bool:
    return all(avail(available, sku, wh) >= qty for sku, qty in quantities.items())


@PROPERTY
@given(quantities_st, candidates_st, available_st)
def test_plan_single_picks_first_warehouse_able_to_serve_everything(
    quantities: dict[str, int], candidates: list[str], available: Available
) -> None:
    able = [wh for wh in candidates if can_serve(quantities, wh, available)]
    plan = plan_single(quantities, candidates, available)
    if not able:
        assert plan is None
    else:
        assert plan == {sku: [(able[0], qty)] for sku, qty in quantities.items()}


@PROPERTY
@given(quantities_st, candidates_st, available_st)
def test_plan_split_covers_exactly_within_stock_or_is_none(
    quantities: dict[str, int], candidates: list[str], available: Available
) -> None:
    before = copy.deepcopy(available)
    plan = plan_split(quantities, candidates, available)
    assert available == before, "planning must not touch the snapshot"
    enough = all(
        sum(max(0, avail(available, sku, wh)) for wh in candidates) >= qty
        for sku, qty in quantities.items()
    )
    assert (plan is None) == (not enough)
    if plan is None:
        return
    assert set(plan) == set(quantities)
    for sku, parts in plan.items():
        assert sum(qty for _, qty in parts) == quantities[sku]
        assert all(qty > 0 for _, qty in parts)
        for wh, qty in parts:
            assert wh in candidates
            assert qty <= avail(available, sku, wh)
        # Priority order: a warehouse is only used when every earlier candidate is drained.
        used = [wh for wh, _ in parts]
        assert used == [wh for wh in candidates if wh in used]
        for wh in used[:-1]:
            assert dict(parts)[wh] == avail(available, sku, wh)


@PROPERTY
@given(quantities_st, candidates_st, available_st, st.sampled_from(list(ShortagePolicy)))
def test_plan_allocation_splits_only_when_asked_and_single_fails(
    quantities: dict[str, int],
    candidates: list[str],
    available: Available,
    policy: ShortagePolicy,
) -> None:
    plan = plan_allocation(quantities, candidates, available, policy)
    single = plan_single(quantities, candidates, available)
    if single is not None:
        assert plan == single
    elif policy is ShortagePolicy.SPLIT:
        assert plan == plan_split(quantities, candidates, available)
    else:
        assert plan is None


@PROPERTY
@given(quantities_st, candidates_st, available_st)
def test_take_decrements_exactly_the_plan(
    quantities: dict[str, int], candidates: list[str], available: Available
) -> None:
    plan = plan_split(quantities, candidates, available)
    if plan is None:
        return
    after = copy.deepcopy(available)
    take(after, plan)
    for sku in set(after) | set(available):
        for wh in set(after.get(sku, {})) | set(available.get(sku, {})):
            used = sum(q for w, q in plan.get(sku, []) if w == wh)
            assert avail(after, sku, wh) == avail(available, sku, wh) - used
            assert avail(after, sku, wh) >= min(0, avail(available, sku, wh))


@PROPERTY
@given(quantities_st, candidates_st, available_st)
def test_take_then_plan_again_never_double_counts(
    quantities: dict[str, int], candidates: list[str], available: Available
) -> None:
    """Two orders planned on one snapshot (as reserve_many does) never exceed it together."""
    snapshot = copy.deepcopy(available)
    first = plan_split(quantities, candidates, snapshot)
    if first is None:
        return
    take(snapshot, first)
    second = plan_split(quantities, candidates, snapshot)
    if second is None:
        return
    for sku in quantities:
        for wh in candidates:
            used = sum(q for w, q in first[sku] + second[sku] if w == wh)
            assert used <= max(0, avail(available, sku, wh))


warehouse_name_st = st.text(
    alphabet=st.characters(exclude_characters=",=", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s != "-")


@PROPERTY
@given(st.lists(st.tuples(warehouse_name_st, st.integers(min_value=0, max_value=10**9))))
def test_format_parse_round_trip(parts: list[tuple[str, int]]) -> None:
    assert parse_parts(format_parts(parts)) == parts


def test_parse_closed_reservation_is_empty() -> None:
    assert parse_parts("-") == []
    assert parse_parts("") == []


def test_plan_split_with_repeated_candidate_stays_within_stock() -> None:
    """Regression (66bf720): a warehouse listed twice was drawn from twice."""
    plan = plan_split({"A": 5}, ["WH-SH", "WH-SH"], {"A": {"WH-SH": 3}})
    assert plan is None  # 3 units in the only warehouse cannot serve 5


@PROPERTY
@given(
    quantities_st,
    st.lists(st.sampled_from(WAREHOUSES), max_size=8),
    available_st,
    st.sampled_from(list(ShortagePolicy)),
)
def test_repeated_candidates_never_plan_beyond_stock(
    quantities: dict[str, int],
    candidates: list[str],
    available: Available,
    policy: ShortagePolicy,
) -> None:
    plan = plan_allocation(quantities, candidates, available, policy)
    for sku, parts in (plan or {}).items():
        used: dict[str, int] = {}
        for wh, qty in parts:
            used[wh] = used.get(wh, 0) + qty
        assert len(used) == len(parts), "one warehouse, one part"
        assert all(qty <= avail(available, sku, wh) for wh, qty in used.items())
