"""Property tests of the pure planner (order/allocation.py).

The Lua scripts re-check every figure, but they trust the *shape* of a plan (which warehouse,
how many units), so the planner must never hand them a plan that takes more than the snapshot
says is there, or covers an order only partly.
"""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from order.allocation import (
    Available,
    ShortagePolicy,
    Stocked,
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
# Where each sku is stocked at all; independent of available_st so a stocked place may show 0
# or less and an unstocked one may (in a stale snapshot) still show units.
stocked_st: st.SearchStrategy[Stocked] = st.dictionaries(
    st.sampled_from(SKUS), st.frozensets(st.sampled_from(WAREHOUSES))
)


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


# --- HOLD splits when no candidate stocks every sku (waiting would never help) ----------------


def assert_within_stock_and_complete(
    plan: dict[str, list[tuple[str, int]]] | None,
    quantities: dict[str, int],
    candidates: list[str],
    available: Available,
) -> None:
    if plan is None:
        return
    assert set(plan) == set(quantities)
    for sku, parts in plan.items():
        assert sum(qty for _, qty in parts) == quantities[sku], "every unit or nothing"
        for wh, qty in parts:
            assert wh in candidates and 0 < qty <= avail(available, sku, wh)


@PROPERTY
@given(
    quantities_st,
    candidates_st,
    available_st,
    st.sampled_from(list(ShortagePolicy)),
    stocked_st | st.none(),
)
def test_plan_never_exceeds_availability_and_covers_every_unit_or_is_none(
    quantities: dict[str, int],
    candidates: list[str],
    available: Available,
    policy: ShortagePolicy,
    stocked: Stocked | None,
) -> None:
    before = copy.deepcopy(available)
    plan = plan_allocation(quantities, candidates, available, policy, stocked)
    assert available == before, "planning must not touch the snapshot"
    assert_within_stock_and_complete(plan, quantities, candidates, available)


@PROPERTY
@given(quantities_st, candidates_st, available_st, stocked_st)
def test_hold_splits_exactly_when_no_candidate_stocks_every_sku(
    quantities: dict[str, int], candidates: list[str], available: Available, stocked: Stocked
) -> None:
    plan = plan_allocation(quantities, candidates, available, ShortagePolicy.HOLD, stocked)
    single = plan_single(quantities, candidates, available)
    some_stock_all = any(all(wh in stocked.get(s, ()) for s in quantities) for wh in candidates)
    if single is not None:
        assert plan == single
    elif some_stock_all:
        assert plan is None  # a restock there could serve it whole: wait
    else:
        assert plan == plan_split(quantities, candidates, available)


@PROPERTY
@given(quantities_st, candidates_st, available_st, stocked_st)
def test_reject_and_split_ignore_where_skus_are_stocked(
    quantities: dict[str, int], candidates: list[str], available: Available, stocked: Stocked
) -> None:
    for policy in (ShortagePolicy.REJECT, ShortagePolicy.SPLIT):
        assert plan_allocation(quantities, candidates, available, policy, stocked) == (
            plan_allocation(quantities, candidates, available, policy)
        )


SH_ONLY_A = {"A": {"WH-SH": 5, "WH-BJ": 0}, "B": {"WH-SH": 0, "WH-BJ": 5}}


def test_hold_splits_an_order_no_warehouse_stocks_whole() -> None:
    stocked = {"A": {"WH-SH"}, "B": {"WH-BJ"}}
    plan = plan_allocation(
        {"A": 2, "B": 1}, ["WH-SH", "WH-BJ"], SH_ONLY_A, ShortagePolicy.HOLD, stocked
    )
    assert plan == {"A": [("WH-SH", 2)], "B": [("WH-BJ", 1)]}


def test_hold_waits_when_a_warehouse_stocks_every_sku_even_at_zero() -> None:
    stocked = {"A": {"WH-SH"}, "B": {"WH-BJ", "WH-SH"}}  # B is stocked in WH-SH, sold out
    plan = plan_allocation(
        {"A": 2, "B": 1}, ["WH-SH", "WH-BJ"], SH_ONLY_A, ShortagePolicy.HOLD, stocked
    )
    assert plan is None


def test_hold_split_counts_only_candidate_warehouses() -> None:
    stocked = {"A": {"WH-SH", "WH-GZ"}, "B": {"WH-BJ", "WH-GZ"}}  # WH-GZ is not a candidate
    plan = plan_allocation(
        {"A": 1, "B": 1}, ["WH-SH", "WH-BJ"], SH_ONLY_A, ShortagePolicy.HOLD, stocked
    )
    assert plan == {"A": [("WH-SH", 1)], "B": [("WH-BJ", 1)]}


def test_hold_split_is_none_when_all_candidates_together_are_short() -> None:
    stocked = {"A": {"WH-SH"}, "B": {"WH-BJ"}}
    plan = plan_allocation(
        {"A": 6, "B": 1}, ["WH-SH", "WH-BJ"], SH_ONLY_A, ShortagePolicy.HOLD, stocked
    )
    assert plan is None
