"""Operability against live processes: /metrics, /health/live, /health/ready and JSON logs of
two workers and the fact sink.

They run in a namespace of their own (ops/bench.py's topics, consumer groups, Redis keys and
ClickHouse database) on the test stack's broker and ClickHouse, but with a Redis of their own
(started here, under the namespace's home), so the test can stop it and see readiness fail
without touching anything another test uses. Assertions are on outcomes: the counts the
endpoints show against what was sent, never on speed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics.client import drop_database
from core.kafka import produce
from core.settings import Settings
from ops import stack
from ops.bench import namespaced_settings, prepare_namespace
from ops.demo import top_up_stock
from ops.loadgen import SHOP_HEADERS, BurstPlan, generate_burst
from streams import topics
from streams.channels import AdapterContext, adapt

pytestmark = pytest.mark.integration

ORDERS = 150  # K valid orders; the burst adds its duplicates and malformed payloads
WORKERS = 2
SETTLE_S = 180.0
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.5) -> T | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return None


def free_port_block(size: int, start: int = 21000) -> int:
    """A base port with ``size`` consecutive free ports (the workers serve on base + N)."""
    for base in range(start, 40000, size + 3):
        if not any(stack.port_in_use("127.0.0.1", p) for p in range(base - 1, base + size)):
            return base
    raise RuntimeError("no free port block")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def worker_url(settings: Settings, index: int) -> str:
    return f"http://127.0.0.1:{settings.worker_web_port + index}"


def sink_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.sink_port}"


Samples = list[tuple[str, dict[str, str], float]]


def scrape(url: str) -> Samples | None:
    status, body = get(f"{url}/metrics")
    if status != 200:
        return None
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for n, lb, v in samples if n == name and all(lb.get(k) == x for k, x in labels.items())
    )


def scrape_workers(settings: Settings) -> list[Samples] | None:
    scraped = [scrape(worker_url(settings, i)) for i in range(WORKERS)]
    return None if any(s is None for s in scraped) else scraped  # type: ignore[return-value]


def summed(scraped: list[Samples], name: str, **labels: str) -> float:
    return sum(total(s, name, **labels) for s in scraped)


@pytest.fixture(scope="module")
def ops_namespace(infra: Settings) -> Iterator[Settings]:
    """Two workers and the sink in their own namespace, with a Redis of their own and JSON
    logs; torn down (Redis stopped, database dropped) whatever the test did."""
    tag = f"ops{uuid.uuid4().hex[:8]}"
    base = namespaced_settings(infra, tag)
    own = base.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "worker_web_port": free_port_block(WORKERS),
            "workers": WORKERS,
            "log_format": "json",
        }
    )
    own = own.model_copy(update={"sink_web_port": own.worker_web_port - 1})
    stack.up(own, with_workers=False)  # only its Redis starts: broker and ClickHouse are up
    try:
        prepare_namespace(own)
        top_up_stock(own)
        stack.start_workers(own, WORKERS)
        stack.start_sink(own)
        yield own
    finally:
        stack.up(own, with_workers=False)  # Redis back (the test stops it) for a clean stop
        stack.stop_workers(own)
        stack.down(own)
        drop_database(own)
        shutil.rmtree(own.home, ignore_errors=True)


def burst(settings: Settings) -> BurstPlan:
    return generate_burst(
        ORDERS,
        seed=7,
        run_id=settings.redis_prefix,
        duplicate_rate=0.03,
        malformed_rate=0.05,
        scalper_bursts=0,
    )


def personal_data(plan: BurstPlan) -> set[str]:
    """The buyer and receiver names and phones of the valid orders sent."""
    found: set[str] = set()
    for m in plan.messages:
        if m.kind != "order":
            continue
        order = adapt(m.channel, m.value, AdapterContext(shop_id=SHOP_HEADERS.get(m.channel, "")))
        for value in (order.buyer.name, order.buyer.phone, order.address.name, order.address.phone):
            digits = "".join(c for c in value if c.isdigit())
            if len(digits) >= 7:
                found.add(digits)
            elif value and len(value) >= 2 and not value.isascii():
                found.add(value)
    return found


def log_lines(settings: Settings, component: str) -> list[str]:
    """The process's own lines (the launcher marks each start with a ``=== `` line)."""
    path: Path = stack.log_file(settings, component)
    text = path.read_text(errors="replace")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("=== ")]


def test_metrics_health_and_logs_of_live_workers(ops_namespace: Settings) -> None:
    settings = ops_namespace
    for i in range(WORKERS):
        assert get(f"{worker_url(settings, i)}/health/live")[0] == 200
        status, body = get(f"{worker_url(settings, i)}/health/ready")
        assert status == 200, body
        assert orjson.loads(body)["checks"]["redis"] is True
    assert wait_for(lambda: get(f"{sink_url(settings)}/health/ready")[0] == 200), "sink not ready"

    plan = burst(settings)
    assert plan.malformed > 0 and plan.duplicates > 0
    records = [
        (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        for m in plan.messages
    ]
    sent = asyncio.run(produce(settings, records))
    assert sent == len(plan.messages)

    def settled() -> list[Samples] | None:
        scraped = scrape_workers(settings)
        if scraped is None:
            return None
        counted = summed(scraped, "oms_stage_messages_total", stage="intake", outcome="input")
        lag = summed(scraped, "oms_consumer_lag")
        return scraped if counted >= sent and lag == 0 else None

    scraped = wait_for(settled, timeout=SETTLE_S, every=1.0)
    last = scrape_workers(settings) or []
    assert scraped, (
        f"intake {summed(last, 'oms_stage_messages_total', stage='intake', outcome='input')}"
        f" of {sent}, lag {summed(last, 'oms_consumer_lag')}"
    )
    # Throughput per stage adds up to what was sent, across both workers.
    assert summed(scraped, "oms_stage_messages_total", stage="intake", outcome="input") == sent
    assert summed(scraped, "oms_stage_messages_total", stage="dedupe", outcome="new") == ORDERS
    assert (
        summed(scraped, "oms_stage_messages_total", stage="dedupe", outcome="duplicate")
        == plan.duplicates
    )
    assert summed(scraped, "oms_dlq_total") == plan.malformed
    assert summed(scraped, "oms_stage_messages_total", stage="intake", outcome="dlq") == (
        plan.malformed
    )
    received = summed(scraped, "oms_stage_messages_total", stage="lifecycle", outcome="received")
    assert received == ORDERS  # one received event per new order, tallied from the outputs
    audited = sum(
        summed(scraped, "oms_stage_messages_total", stage="audit", outcome=o)
        for o in ("passed", "held", "rejected")
    )
    assert audited >= ORDERS
    assert summed(scraped, "oms_stage_messages_total", stage="fulfil", outcome="outbound") > 0
    assert summed(scraped, "oms_consumer_partitions") > 0
    assert all(total(s, "oms_ready") == 1 for s in scraped)
    # Held orders: one Redis set, so both workers show the same figure; the burst holds some.
    held = [total(s, "oms_held_orders") for s in scraped]
    assert held[0] == held[1] > 0
    assert summed(scraped, "oms_intake_batches_total") > 0

    # The sink lands every fact and its backlog drains to 0.
    def sink_drained() -> Samples | None:
        sink = scrape(sink_url(settings))
        if sink is None:
            return None
        landed = total(sink, "oms_stage_messages_total", stage="sink", outcome="landed")
        return sink if landed >= ORDERS and total(sink, "oms_sink_backlog_facts") == 0 else None

    sink = wait_for(sink_drained, timeout=SETTLE_S, every=1.0)
    assert sink, scrape(sink_url(settings))
    assert total(sink, "oms_sink_failed_flushes_total") == 0
    assert total(sink, "oms_consumer_partitions") > 0
    assert any(n == "oms_sink_backlog_facts" for n, _, _ in sink)

    # JSON logs: every line one object with the contract's fields, and no personal data.
    private = personal_data(plan)
    assert private, "the burst carries buyer names and phones"
    for component in (stack.worker_component("w0"), stack.worker_component("w1"), stack.SINK):
        lines = log_lines(settings, component)
        assert lines, component
        not_json = [line for line in lines if not line.startswith("{")]
        assert not not_json, f"{component}: {not_json[:5]}"
        entries = [orjson.loads(line) for line in lines]
        assert all({"ts", "level", "logger", "message", "component"} <= e.keys() for e in entries)
        text = "\n".join(lines)
        leaked = sorted(p for p in private if p in text)
        assert not leaked, f"{component} logged personal data: {leaked[:3]}"
    w0 = [orjson.loads(line) for line in log_lines(settings, stack.worker_component("w0"))]
    assert {e.get("worker") for e in w0} == {"w0"}

    # Redis gone: not ready (503, saying why), still alive; Redis back: ready again.
    stack.down(settings, only={stack.REDIS})

    def not_ready() -> dict[str, Any] | None:
        status, body = get(f"{worker_url(settings, 0)}/health/ready")
        return orjson.loads(body) if status == 503 else None

    verdict = wait_for(not_ready, timeout=30)
    assert verdict, get(f"{worker_url(settings, 0)}/health/ready")
    assert verdict["ready"] is False and "redis" in verdict["reason"]
    assert verdict["checks"]["redis"] is False
    assert get(f"{worker_url(settings, 0)}/health/live")[0] == 200
    down = scrape(worker_url(settings, 0))
    assert down is not None and total(down, "oms_ready") == 0
    assert not any(n == "oms_held_orders" for n, _, _ in down)

    stack.up(settings, with_workers=False)
    assert wait_for(lambda: get(f"{worker_url(settings, 0)}/health/ready")[0] == 200, 60)
