"""The fact sink as a process of the stack (analytics/sink_process.py), through the real broker,
Redis, ClickHouse and two workers that do not run the sink (OMS_SINK_IN_WORKER=false, the
default): `./oms up` starts it and `./oms status` shows it healthy, every input becomes a fact
through it alone, facts sent while it is killed wait in Kafka until `./oms up` restarts it and
then land once each (offsets are committed only once ClickHouse has the rows), and SIGTERM
stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.client import connect as ch_connect
from analytics.fact_consumer import FACT_TOPICS
from analytics.reports import processed_inputs
from core.heartbeat import sink_heartbeat_key
from core.kafka import Record, produce
from core.settings import Settings
from ops import stack
from ops.loadgen import generate_burst
from state.keys import Keys
from state.redis import connect
from streams import topics
from tests.integration.test_end_to_end import oms, wait_for

pytestmark = pytest.mark.integration

FACTS_TIMEOUT_S = 120.0  # bound on every input becoming a fact (2 shared cores)


@pytest.fixture
def sink_stack(running_stack: Settings) -> Iterator[Settings]:
    """The running stack with its sink process; left with a running sink whatever happens."""
    assert not running_stack.sink_in_worker, "these tests are about the sink's own process"
    yield running_stack
    stack.start_sink(running_stack)


def burst_records(settings: Settings, orders: int) -> list[Record]:
    run = uuid.uuid4().hex[:8]
    plan = generate_burst(orders, run_id=f"sinkproc-{run}", seed=int(run, 16) % 10_000)
    return [
        (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        for m in plan.messages
    ]


def landed(settings: Settings, since: datetime) -> Callable[[], int]:
    client = ch_connect(settings)
    return lambda: processed_inputs(client, since)


def status_json(settings: Settings) -> dict[str, dict[str, Any]]:
    result = oms(settings, "status", "--json", check=False)
    return {c["name"]: c for c in json.loads(result.stdout)["components"]}


def heartbeat(settings: Settings, key: str) -> dict[str, Any]:
    raw = connect(settings).get(key)
    return json.loads(raw) if raw else {}


def test_status_shows_the_sink_and_workers_do_not_sink(sink_stack: Settings) -> None:
    components = status_json(sink_stack)
    sink = components[stack.SINK]
    assert sink["healthy"], sink
    assert sink["pid"] == stack.read_pid(sink_stack, stack.SINK)
    assert "facts" in sink["detail"] and "partitions" in sink["detail"]
    keys = Keys(sink_stack.redis_prefix)
    for name in ("w0", "w1"):
        assert components[f"worker-{name}"]["healthy"]
        counters = heartbeat(sink_stack, keys.worker(name)).get("counters", {})
        assert not [k for k in counters if k.startswith("sink_") or k in ("facts", "bad_facts")]
    beat = heartbeat(sink_stack, sink_heartbeat_key(sink_stack))
    # the only sink process: every partition of every fact topic is its own
    assert beat["ready"] and beat["partitions"] == len(FACT_TOPICS) * sink_stack.partitions


def test_facts_land_through_the_sink_process(sink_stack: Settings) -> None:
    records = burst_records(sink_stack, 150)
    key = sink_heartbeat_key(sink_stack)
    facts_before = heartbeat(sink_stack, key)["counters"].get("facts", 0)
    since = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(produce(sink_stack, records))
    count = landed(sink_stack, since)
    assert wait_for(lambda: count() >= len(records), FACTS_TIMEOUT_S), (
        f"{count()} of {len(records)} inputs are facts"
    )
    assert wait_for(
        lambda: heartbeat(sink_stack, key)["counters"].get("facts", 0) >= facts_before + 1, 10
    )


def test_up_restarts_a_killed_sink_and_nothing_is_lost(sink_stack: Settings) -> None:
    first, second = burst_records(sink_stack, 200), burst_records(sink_stack, 400)
    total = len(first) + len(second)
    since = datetime.now(UTC).replace(microsecond=0)
    count = landed(sink_stack, since)
    asyncio.run(produce(sink_stack, first))
    assert wait_for(lambda: count() >= len(first), FACTS_TIMEOUT_S), f"{count()} facts"
    killed = stack.read_pid(sink_stack, stack.SINK)
    assert stack.stop_component(sink_stack, stack.SINK, kill=True)
    assert killed is not None and not stack.pid_alive(killed)
    assert stack.SINK not in status_json(sink_stack)  # its heartbeat went with it

    # The workers go on, but nothing lands the facts of the second part: they wait in Kafka.
    asyncio.run(produce(sink_stack, second))
    assert count() < total

    oms(sink_stack, "up")
    sink = status_json(sink_stack)[stack.SINK]
    assert sink["healthy"] and sink["pid"] not in (None, killed), sink
    assert wait_for(lambda: count() >= total, FACTS_TIMEOUT_S), (
        f"{count()} of {total} inputs are facts after the restart"
    )
    assert count() == total  # replayed batches are not counted twice


def test_sigterm_stops_it_cleanly(sink_stack: Settings) -> None:
    pid = stack.read_pid(sink_stack, stack.SINK)
    assert pid is not None
    assert stack.stop_sink(sink_stack)
    assert not stack.pid_alive(pid)
    assert "sink stopped" in stack.log_tail(sink_stack, stack.SINK, lines=5)
    assert not connect(sink_stack).exists(sink_heartbeat_key(sink_stack))
