"""`./oms bench` end to end on the test stack: run_bench in a namespace of its own (its own
topics, consumer groups, Redis prefix, ClickHouse database and worker home), with a small flood.
Every correctness figure must hold, every JSON key must be there, the lost-order check must see
an order whose record is gone, and after the teardown the namespace's data must be gone while the
test stack's own data is untouched. Speed is never asserted."""

from __future__ import annotations

import uuid

import pytest

from analytics.client import connect as ch_connect
from core.settings import Settings
from ops.bench import JSON_KEYS, fact_order_keys, lost_orders, namespaced_settings, run_bench
from ops.bench import teardown as bench_teardown
from state.keys import Keys
from state.redis import connect

pytestmark = pytest.mark.integration

ORDERS = 1500


def test_bench_on_the_test_stack_is_correct_and_cleans_up(infra: Settings) -> None:
    marker = f"{infra.redis_prefix}:bench-test-marker:{uuid.uuid4().hex[:6]}"
    connect(infra).set(marker, "1")  # the shared stack's own data must survive the bench
    result = run_bench(infra, orders=ORDERS, workers=1, fresh_stack=False, keep=True)

    assert not [key for key in JSON_KEYS if key not in result]
    assert result["ok"], result["violations"]
    assert result["orders"] == ORDERS
    assert result["inputs"] == ORDERS + result["duplicates"] + result["malformed"]
    assert result["duplicates"] > 0 and result["malformed"] > 0
    assert result["oversold_units"] == 0 and result["verify_ok"]
    assert result["lost_orders"] == 0
    assert result["double_reservations"] == 0
    assert result["duplicate_commands"] == 0
    assert result["dlq"] == result["expected_dlq"] >= result["malformed"]
    assert result["workers"] == 1 and result["partitions"] == infra.partitions
    assert result["seconds"] > 0 and result["orders_per_s"] > 0
    assert result["ceiling_per_s"] > 0 and result["ratio"] > 0
    assert result["ceiling_messages"] >= result["inputs"]
    assert 0 < result["flood_p50_ms"] <= result["flood_p99_ms"]
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["paced_orders"] >= 300 and result["paced_rate"] > 0
    assert result["peak_rss_mb"] > 0
    assert result["machine"]["cpus"] >= 1
    # A flash sale: most orders reserve and ship, the hottest skus sell out partway.
    states = result["states"]
    assert states.get("released", 0) > states.get("held", 0) > 0
    every_order = ORDERS + result["warmup_orders"] + result["paced_orders"]
    assert sum(states.values()) == every_order

    space = result["namespace"]
    assert space["redis_prefix"] != infra.redis_prefix
    assert space["clickhouse_database"] != infra.clickhouse_database
    bench = namespaced_settings(infra, space["redis_prefix"].removeprefix("bench"))
    assert bench.clickhouse_database == space["clickhouse_database"]
    # The lost-order check reads what it claims: an order whose Redis record is gone is lost.
    ch = ch_connect(bench)
    first, second = sorted(fact_order_keys(ch))[:2]
    client, keys = connect(bench), Keys(bench.redis_prefix)
    (oid,) = client.smembers(keys.external(*first))
    client.delete(keys.order(oid))
    assert lost_orders(bench, ch, {first, second}) == {first}
    assert lost_orders(bench, ch, {("jd", "never-sent")}) == {("jd", "never-sent")}

    bench_teardown(bench, fresh_stack=False, keep=False)  # what run_bench does without keep
    assert not list(connect(infra).scan_iter(match=f"{space['redis_prefix']}:*", count=1000))
    databases = {row[0] for row in ch_connect(infra, database="default").execute("SHOW DATABASES")}
    assert space["clickhouse_database"] not in databases
    assert connect(infra).get(marker) == "1"
    connect(infra).delete(marker)
