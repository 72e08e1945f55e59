"""The chaos scenarios, bounded: all six on a stack of their own (home .oms/test-chaos, ports
apart from the test, bench and chaos stacks), 1,000 orders each and a 10 s ClickHouse outage.
Every scenario's figures must be zero and exact, and each fault must really have happened (the
killed pid gone, Redis's run id new, ClickHouse refusing connections throughout the outage).
Speed is never asserted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import REPO_ROOT, Settings
from ops import chaos, stack

pytestmark = pytest.mark.integration

ORDERS = 1000
OUTAGE_S = 10.0
TEST_CHAOS_STACK: dict[str, Any] = {
    **chaos.CHAOS_STACK,
    "kafka_bootstrap": "127.0.0.1:19492",
    "redis_url": "redis://127.0.0.1:16779/0",
    "clickhouse_port": 19400,
    "clickhouse_http_port": 18523,
    "worker_web_port": 16566,
    "topic_prefix": "tchaos",
    "app_id": "oms-tchaos",
    "redis_prefix": "tchaos",
    "clickhouse_database": "oms_tchaos",
}


@pytest.fixture(scope="module")
def own_stack(base_settings: Settings) -> Settings:
    return base_settings.model_copy(
        update={**TEST_CHAOS_STACK, "home": (REPO_ROOT / ".oms" / "test-chaos").resolve()}
    )


@pytest.fixture(scope="module")
def run(own_stack: Settings) -> Iterator[dict[str, Any]]:
    try:
        yield chaos.run_chaos(own_stack, orders=ORDERS, clickhouse_outage_s=OUTAGE_S, own=own_stack)
    finally:
        stack.down(own_stack)


def scenario(run: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in run["scenarios"] if s["name"] == name]
    return found


def assert_nothing_lost_nor_doubled(s: dict[str, Any]) -> None:
    assert not s.get("error"), s.get("error")
    assert s["orders_sent"] == ORDERS and s["inputs_sent"] > ORDERS
    assert s["lost_orders"] == 0
    assert s["double_reservations"] == 0
    assert s["duplicate_commands"] == 0
    assert s["oversold_units"] == 0
    assert s["verify_ok"]
    assert s["clickhouse_exact"], s["clickhouse_counts"]
    counts = s["clickhouse_counts"]
    assert counts["orders_in_events"]["got"] == ORDERS
    assert counts["dlq"]["got"] == s["malformed"] > 0
    # A flash sale: most orders ship, the hottest skus sell out partway.
    assert s["states"]["released"] > s["states"]["held"] > 0
    assert sum(s["states"].values()) == ORDERS


def the_fault(s: dict[str, Any], kind: str) -> dict[str, Any]:
    (fault,) = s["faults"]
    assert fault["kind"] == kind
    assert fault["proof"] and all(fault["proof"].values()), fault["proof"]
    return fault


def test_worker_kill9_restart(run: dict[str, Any]) -> None:
    s = scenario(run, "worker_kill9_restart")
    assert_nothing_lost_nor_doubled(s)
    fault = the_fault(s, "kill9")
    assert fault["target"] == "worker-w1" and fault["proof"]["mid_flood"]
    assert not stack.pid_alive(fault["pid"]) and fault["restarted_pid"] != fault["pid"]
    assert s["ok"], s["violations"]


def test_worker_lost_rebalance(run: dict[str, Any]) -> None:
    s = scenario(run, "worker_lost_rebalance")
    assert_nothing_lost_nor_doubled(s)
    fault = the_fault(s, "kill9")
    assert fault["target"] == "worker-w2" and "restarted_pid" not in fault
    assert s["workers_alive_at_end"] == {"worker-w0": True, "worker-w1": True, "worker-w2": False}
    assert s["ok"], s["violations"]


def test_redis_restart(run: dict[str, Any]) -> None:
    s = scenario(run, "redis_restart")
    assert_nothing_lost_nor_doubled(s)
    fault = the_fault(s, "restart")
    assert fault["run_id_before"] != fault["run_id_after"] and fault["proof"]["was_down"]
    assert all(s["workers_alive_at_end"].values())  # the workers lived through it
    assert s["ok"], s["violations"]


def test_redis_kill9(run: dict[str, Any]) -> None:
    """SIGKILL: Redis gets no chance to fsync; what it acknowledged must still be there."""
    s = scenario(run, "redis_kill9")
    assert_nothing_lost_nor_doubled(s)
    fault = the_fault(s, "kill9")
    assert fault["target"] == "redis" and fault["proof"]["was_down"]
    assert fault["run_id_before"] != fault["run_id_after"]
    assert all(s["workers_alive_at_end"].values())
    assert s["ok"], s["violations"]


def test_clickhouse_outage(run: dict[str, Any]) -> None:
    s = scenario(run, "clickhouse_outage")
    assert_nothing_lost_nor_doubled(s)
    fault = the_fault(s, "outage")
    assert fault["proof"]["unreachable_during_outage"] and fault["probes"] >= 1
    assert fault["down_s"] >= OUTAGE_S
    assert all(s["workers_alive_at_end"].values())
    assert s["ok"], s["violations"]


def test_burst_over_memory_loses_nothing_and_is_not_held(run: dict[str, Any]) -> None:
    """The burst lands while processing is stalled (Redis down): a consumer that buffered by
    count would hold all of it (measured: 330 MB of growth for a 304 MB burst with the byte
    bound lifted); the workers may grow by their headroom only."""
    s = scenario(run, "burst_over_memory")
    assert_nothing_lost_nor_doubled(s)
    (fault,) = s["faults"]
    assert fault["kind"] == "burst"
    assert fault["proof"]["processing_stalled"] and fault["stalled_s"] >= chaos.BURST_STALL_S
    assert fault["proof"]["workers_survived"] and fault["proof"]["burst_exceeds_worker_memory"]
    assert fault["burst_bytes"] >= 4 * chaos.BURST_HEADROOM_BYTES  # twice two workers' headroom
    assert fault["proof"]["rss_growth_bounded"], fault
    assert fault["summed_rss_growth_mb"] * 2**20 <= 2 * chaos.BURST_HEADROOM_BYTES
    assert s["ok"], s["violations"]
