"""The stock benchmark on the test Redis, small: its figures must be sane and consistent (never a
timing threshold: the machine is shared and noisy), nothing oversold, and no keys left behind."""

from __future__ import annotations

import pytest

from core.settings import Settings
from ops.bench_stock import bench_reservations, make_workload
from state.redis import connect

pytestmark = pytest.mark.integration


def test_bench_reservations_small_run_is_sane(infra: Settings) -> None:
    result = bench_reservations(infra, orders=500, concurrency=4)
    n = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}

    assert n["orders"] == 500
    assert n["engine_oversold"] == 0
    assert n["baseline_oversold"] == 0
    assert result["engine_verify_ok"] is True
    for side in ("engine", "baseline"):
        assert n[f"{side}_reserved"] + n[f"{side}_shortage"] == 500
        assert 0 < n[f"{side}_reserved"] < 500  # hot skus sell out
        assert n[f"{side}_per_s"] > 0
        assert n[f"{side}_seconds"] > 0
    # The lock-per-sku baseline decides each order against exact figures: never a lost sale.
    assert n["baseline_false_shortage"] == 0
    ratio = n["engine_per_s"] / n["baseline_per_s"]
    assert n["ratio"] == pytest.approx(ratio, rel=0.01)
    assert str(result["redis_version"])[:1].isdigit()
    assert not list(connect(infra).scan_iter(match="bench-*", count=1000)), "bench keys left"


def test_workload_is_deterministic_and_sells_hot_skus_out() -> None:
    orders, rows = make_workload(2000)
    assert (orders, rows) == make_workload(2000)
    assert len({o.order_id for o in orders}) == 2000
    stock: dict[str, int] = {}
    for row in rows:
        stock[row.sku] = stock.get(row.sku, 0) + row.qty
    demand: dict[str, int] = {}
    for o in orders:
        demand[o.sku] = demand.get(o.sku, 0) + o.qty
    short = [sku for sku, units in demand.items() if units > stock[sku]]
    assert short, "some skus must sell out, or the bench measures no contention"
