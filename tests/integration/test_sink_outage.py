"""ClickHouse goes away in the middle of a flood, through the real stack (broker, Redis,
ClickHouse, two workers and the fact sink process).

While ClickHouse is down the fact sink keeps retrying one batch (FactSink.write, offsets
uncommitted), and the workers must go on processing orders. The sink runs in a process of its
own by default; with OMS_SINK_IN_WORKER=true it shares each worker's event loop with the
pipeline's agents, so a retry that blocked the loop would stall them, and when the sink was a
Faust agent its full stream buffer held up the worker's shared consumer (this test found that;
the sink now has a consumer of its own). After ClickHouse comes back the sink catches up: every
input lands exactly once as a fact (report figures and GMV equal to what the load generator
planned, no fact id with two different rows), and the sink process lived through the outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from analytics.client import connect as ch_connect
from analytics.reports import build_report, latest_states, processed_inputs
from core.heartbeat import sink_heartbeat_key
from core.kafka import Record, produce
from core.settings import REPO_ROOT, Settings
from ops import stack
from ops.loadgen import SHOP_HEADERS, BurstMessage, generate_burst
from order import lifecycle
from order.record import OrderRecord
from state.keys import Keys
from state.redis import connect
from streams import topics
from streams.channels import AdapterContext, adapt

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

ORDERS = 2000
FIRST_PART = 0.4  # share of the burst sent before ClickHouse is stopped; the rest while down
MIN_OUTAGE_S = 12.0  # ClickHouse stays down at least this long
OUTAGE_PROGRESS_TIMEOUT_S = 90.0  # bound on waiting for intake to get through part two
CATCH_UP_TIMEOUT_S = 150.0  # bound on waiting for every input to be a fact
WORKERS = ("w0", "w1")

# States an order only passes through on its way (a merge window holds it in "routed"); every
# other state means intake is done with it: released or later, held, rejected, cancelled.
IN_FLIGHT = {"received", "audited", "reserved", "routed"}
RELEASED_OR_LATER = {state.value for state in lifecycle.RELEASED_OR_LATER}

_SCOPE = "SELECT order_id FROM order_status WHERE first_at >= toDateTime(%(since)s)"
# The paid total of each order's latest version, over the orders of this run.
Q_GMV_IN_SCOPE = f"""
SELECT sum(o_paid)
FROM (
    SELECT order_id, argMax(paid_total, version) AS o_paid
    FROM orders
    WHERE order_id IN ({_SCOPE})
    GROUP BY order_id
)
"""
# No fact twice: one row per id under FINAL (every emission of an event sorts under its id
# alone, migration 0006, so even one emitted again with other content collapses), distinct
# rows per id (a replay writes an identical row, which DISTINCT folds; more means an event was
# emitted again with other content: logged, the latest one counts), and one event per
# (order, seq) (a re-processed input would add a second event under a new id).
Q_EVENT_IDS = f"""
SELECT
    uniqExact(event_id),
    (SELECT count() FROM (
        SELECT DISTINCT event_id, order_id, seq, kind, from_state, to_state, reason, at,
               channel, shop_id, external_id, warehouse, actor, alloc_sku, alloc_warehouse,
               alloc_qty
        FROM order_events WHERE order_id IN ({_SCOPE}))),
    uniqExact((order_id, seq)),
    count(),
    (SELECT count() FROM order_events FINAL WHERE order_id IN ({_SCOPE}))
FROM order_events
WHERE order_id IN ({_SCOPE})
"""
Q_DIVERGED = f"""
SELECT event_id, groupArray(tuple(kind, to_state, reason, toString(at), warehouse, actor))
FROM (
    SELECT DISTINCT event_id, order_id, seq, kind, from_state, to_state, reason, at,
           channel, shop_id, external_id, warehouse, actor, alloc_sku, alloc_warehouse,
           alloc_qty
    FROM order_events WHERE order_id IN ({_SCOPE}))
GROUP BY event_id
HAVING count() > 1
"""
Q_DLQ_IDS = """
SELECT
    uniqExact(dlq_id),
    (SELECT count() FROM (
        SELECT DISTINCT dlq_id, reason, detail, source_topic, source_partition, source_offset,
               channel, received_at
        FROM dlq WHERE received_at >= toDateTime(%(since)s))),
    count()
FROM dlq
WHERE received_at >= toDateTime(%(since)s)
"""


def oms(*args: str) -> None:
    """Run ``./oms`` the way a user does (it inherits this stack's OMS_* environment)."""
    env = {**os.environ, "OMS_CALLER_CWD": str(REPO_ROOT)}
    result = subprocess.run(
        [str(REPO_ROOT / "oms"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"./oms {' '.join(args)} -> {result.returncode}\n{result.stderr}"


def wait_until(fn: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll ``fn`` until it returns something truthy or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = fn()
    return value


def order_ids(messages: Sequence[BurstMessage]) -> list[str]:
    """OMS ids of the distinct valid orders among ``messages`` (as the workers derive them)."""
    contexts: dict[str, AdapterContext] = {}
    out = []
    for m in messages:
        if m.kind != "order":
            continue
        shop = SHOP_HEADERS.get(m.channel, "")
        ctx = contexts.setdefault(shop, AdapterContext(shop_id=shop))
        out.append(adapt(m.channel, m.value, ctx).order_id)
    return out


def redis_states(settings: Settings, ids: Sequence[str]) -> dict[str, str]:
    """Order id -> state of its Redis record (absent when the order has none yet)."""
    keys = Keys(settings.redis_prefix)
    client = connect(settings)
    pipe = client.pipeline(transaction=False)
    for oid in ids:
        pipe.hget(keys.order(oid), "doc")
    out = {}
    for oid, doc in zip(ids, pipe.execute(), strict=True):
        if doc:
            out[oid] = OrderRecord.model_validate_json(doc).state.value
    return out


def sink_heartbeats(settings: Settings) -> dict[str, str]:
    """Who runs the sink -> its heartbeat key: the sink process, or every worker when they run
    it themselves (OMS_SINK_IN_WORKER=true)."""
    if settings.sink_in_worker:
        keys = Keys(settings.redis_prefix)
        return {name: keys.worker(name) for name in WORKERS}
    return {stack.SINK: sink_heartbeat_key(settings)}


def sink_counters(settings: Settings) -> dict[str, dict[str, Any]]:
    """Who runs the sink -> the sink_* counters of its heartbeat."""
    client = connect(settings)
    out: dict[str, dict[str, Any]] = {}
    for name, key in sink_heartbeats(settings).items():
        raw = client.get(key)
        counters = json.loads(raw).get("counters", {}) if raw else {}
        out[name] = {k: v for k, v in counters.items() if k.startswith("sink_")}
    return out


@pytest.fixture(scope="module")
def loaded(running_stack: Settings) -> Iterator[Settings]:
    oms("stock", "load", "samples/stock.csv")
    yield running_stack
    # Whatever happened, leave ClickHouse running for the tests after this one.
    stack.start_component(running_stack, stack.CLICKHOUSE)


def test_facts_survive_clickhouse_outage_mid_flood(loaded: Settings) -> None:
    settings = loaded
    run = uuid.uuid4().hex[:8]
    plan = generate_burst(ORDERS, run_id=f"outage-{run}", seed=int(run, 16) % 10_000)
    records: list[Record] = [
        (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        for m in plan.messages
    ]
    split = int(len(records) * FIRST_PART)
    part_two_ids = order_ids(plan.messages[split:])
    assert plan.duplicates > 0 and plan.malformed > 0 and len(part_two_ids) > 500

    sink_pid = stack.read_pid(settings, stack.SINK)
    assert settings.sink_in_worker or sink_pid, "the stack runs no fact sink process"
    since = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(produce(settings, records[:split]))
    # Mid-flood: the sink has started landing part one, then ClickHouse goes away.
    client = ch_connect(settings)
    assert wait_until(lambda: processed_inputs(client, since) > 0, 60), "no fact ever landed"
    client.disconnect()
    stopped_at = time.monotonic()
    assert stack.stop_component(settings, stack.CLICKHOUSE), "ClickHouse was not ours to stop"
    assert not stack.clickhouse_health(settings)[0]

    asyncio.run(produce(settings, records[split:]))

    def intake_done() -> dict[str, str] | None:
        states = redis_states(settings, part_two_ids)
        done = len(states) == len(part_two_ids) and not set(states.values()) & IN_FLIGHT
        return states if done else None

    states = wait_until(intake_done, OUTAGE_PROGRESS_TIMEOUT_S)
    during = sink_counters(settings)
    still_down = not stack.clickhouse_health(settings)[0]
    remaining = MIN_OUTAGE_S - (time.monotonic() - stopped_at)
    if remaining > 0:
        time.sleep(remaining)  # scenario length, not an assertion: keep it down a while
    restarted_at = time.monotonic()
    stack.start_component(settings, stack.CLICKHOUSE)
    outage_s = restarted_at - stopped_at

    # Intake went on while the sink could not write: every order sent during the outage was
    # taken through the pipeline (released or later, or held/rejected) in Redis.
    last = redis_states(settings, part_two_ids)
    assert still_down, "ClickHouse came back by itself during the outage"
    assert states, f"intake stalled during the outage: {sorted(set(last.values()))}, {len(last)}"
    released = sum(1 for s in states.values() if s in RELEASED_OR_LATER)
    assert released > 0, sorted(set(states.values()))
    # ... while the sink was retrying (its heartbeat counters say so).
    assert any(c.get("sink_consecutive_failures", 0) > 0 for c in during.values()), during

    client = ch_connect(settings)
    total = len(records)
    assert wait_until(lambda: processed_inputs(client, since) >= total, CATCH_UP_TIMEOUT_S, 1.0), (
        f"caught up {processed_inputs(client, since)} of {total}"
    )
    catch_up_s = time.monotonic() - restarted_at
    time.sleep(3)  # anything still in flight would show up as a count above the inputs
    assert processed_inputs(client, since) == total

    report = build_report(client, since=since)
    assert report.orders_in == plan.orders
    assert report.duplicates == plan.duplicates
    assert report.dlq_total == plan.malformed
    params = {"since": int(since.timestamp())}
    gmv = client.execute(Q_GMV_IN_SCOPE, params)[0][0]
    assert Decimal(gmv) == plan.gmv

    ids, distinct_rows, order_seqs, event_rows, final_rows = client.execute(Q_EVENT_IDS, params)[0]
    # One event per (order, seq): no input was applied twice, and every id is one fact.
    assert ids == order_seqs == final_rows, (ids, order_seqs, final_rows)
    # Rows per id: a replay writes the same row again. Once, in a full-suite run, two ids had a
    # second, different row (10,457 rows for 10,455 ids; issue 13, item 10): an event emitted
    # again with other content. Since 0006 it collapses to its latest emission (checked above
    # and below); logged so a run shows which columns differed.
    if distinct_rows != ids:
        diverged = client.execute(Q_DIVERGED, params)
        log.warning("event ids emitted again with other content: %s", diverged[:5])
    # And what the facts say is what Redis holds: every order's latest state, order by order
    # (merge windows may still close meanwhile: their facts get a few seconds to land).
    all_ids = order_ids(plan.messages)

    def disagreeing() -> dict[str, tuple[str | None, str]]:
        in_redis = redis_states(settings, all_ids)
        in_clickhouse = latest_states(client, all_ids)
        return {
            o: (in_clickhouse.get(o), s) for o, s in in_redis.items() if in_clickhouse.get(o) != s
        }

    wait_until(lambda: not disagreeing(), 30, 1.0)
    differ = disagreeing()
    assert not differ, (len(differ), sorted(differ.items())[:10])
    dlq_ids, dlq_distinct, dlq_rows = client.execute(Q_DLQ_IDS, params)[0]
    assert dlq_ids == dlq_distinct == plan.malformed

    after = sink_counters(settings)
    assert all(c.get("sink_consecutive_failures", 0) == 0 for c in after.values()), after
    assert sum(c.get("sink_outages", 0) for c in after.values()) >= 1, after
    assert stack.read_pid(settings, stack.SINK) == sink_pid, "the sink process did not survive"
    print(
        f"\norders {plan.orders} (+{plan.duplicates} duplicates, {plan.malformed} malformed, "
        f"{total} inputs); part two {len(part_two_ids)} orders, {released} released or later "
        f"during the outage; outage {outage_s:.1f}s; catch-up {catch_up_s:.1f}s after restart; "
        f"order_events rows {event_rows} for {ids} ids, dlq rows {dlq_rows} for {dlq_ids} ids; "
        f"sink counters {after}"
    )
