"""Metric rendering (core/metrics.py), readiness verdicts and the probe routes
(core/health.py): parsed back with prometheus_client's own parser, so a malformed exposition
fails here and not in a Prometheus server."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from agents.counting import count_kinds, count_outputs, message_kind
from core.health import Readiness, sink_readiness, worker_readiness
from core.metrics import PartitionLag, Snapshot, lag_of, render, stage_of
from streams.messages import DlqReason
from web.api import create_api

COUNTERS = {
    "inputs": 120,
    "dlq": 4,
    "dlq_malformed_json": 3,
    "dlq_unknown_sku": 1,
    "new": 110,
    "duplicate": 6,
    "event_received": 110,
    "event_audited": 100,
    "event_held": 12,
    "event_rejected": 2,
    "event_reserved": 95,
    "shortage": 5,
    "superseded": 1,
    "event_released": 90,
    "command_outbound": 90,
    "wms_shipped": 7,
    "intake_batches": 10,
    "intake_busy_ms": 2500,
    "ledger_shipped": 33,
}


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, through the official parser."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def worker_snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = {
        "component": "worker",
        "name": "w0",
        "ready": True,
        "counters": COUNTERS,
        "lags": [PartitionLag("oms.raw.jd", 0, 7), PartitionLag("oms.raw.jd", 1, 0)],
        "partitions": 2,
        "queues": {"held": 12, "late": 3, "due_soon": 4, "backorders": 5},
        "dlq_reasons": tuple(DlqReason),
    }
    return Snapshot(**{**base, **kw})


def test_worker_metrics_parse_and_carry_every_family() -> None:
    got = samples(render(worker_snapshot()))
    assert got[("oms_stage_messages_total", (("outcome", "input"), ("stage", "intake")))] == 120
    assert got[("oms_stage_messages_total", (("outcome", "duplicate"), ("stage", "dedupe")))] == 6
    assert got[("oms_stage_messages_total", (("outcome", "held"), ("stage", "audit")))] == 12
    assert got[("oms_stage_messages_total", (("outcome", "shortage"), ("stage", "reserve")))] == 5
    assert got[("oms_stage_messages_total", (("outcome", "outbound"), ("stage", "fulfil")))] == 90
    assert got[("oms_stage_messages_total", (("outcome", "shipped"), ("stage", "lifecycle")))] == 7
    assert got[("oms_dlq_total", (("reason", "malformed_json"),))] == 3
    assert got[("oms_dlq_total", (("reason", "unknown_sku"),))] == 1
    assert got[("oms_reservation_failures_total", (("reason", "shortage"),))] == 5
    assert got[("oms_reservation_failures_total", (("reason", "superseded"),))] == 1
    assert got[("oms_intake_batches_total", ())] == 10
    assert got[("oms_intake_busy_seconds_total", ())] == 2.5
    assert got[("oms_consumer_lag", (("partition", "0"), ("topic", "oms.raw.jd")))] == 7
    assert got[("oms_consumer_partitions", ())] == 2
    assert got[("oms_held_orders", ())] == 12
    assert got[("oms_orders_late", ())] == 3
    assert got[("oms_orders_due_soon", ())] == 4
    assert got[("oms_backorders", ())] == 5
    assert got[("oms_ready", ())] == 1
    assert got[("oms_worker_info", (("worker", "w0"),))] == 1
    assert got[("oms_counter_total", (("name", "ledger_shipped"),))] == 33
    assert any(name.startswith("process_") for name, _ in got)


def test_every_dlq_reason_has_a_series_even_at_zero() -> None:
    got = samples(render(worker_snapshot(counters={}), with_process=False))
    reasons = {dict(labels)["reason"] for name, labels in got if name == "oms_dlq_total"}
    assert reasons == {r.value for r in DlqReason}
    assert all(v == 0 for (name, _), v in got.items() if name == "oms_dlq_total")


def test_no_counter_is_shown_twice_and_none_is_lost() -> None:
    """A counter is either a stage's, a DLQ reason's, an own family's, or oms_counter_total."""
    got = samples(render(worker_snapshot(), with_process=False))
    stage_total = sum(v for (n, _), v in got.items() if n == "oms_stage_messages_total")
    staged = sum(v for k, v in COUNTERS.items() if stage_of(k) is not None)
    assert stage_total == staged
    others = {dict(lb)["name"] for n, lb in got if n == "oms_counter_total"}
    assert others == {"ledger_shipped"}


def test_queue_gauges_absent_when_redis_did_not_answer() -> None:
    got = samples(render(worker_snapshot(queues=None), with_process=False))
    queues = {"oms_held_orders", "oms_orders_late", "oms_orders_due_soon", "oms_backorders"}
    assert not any(name in queues for name, _ in got)


def test_sink_metrics_show_backlog_and_failures() -> None:
    snapshot = Snapshot(
        component="sink",
        name="sink",
        ready=False,
        counters={"facts": 50, "bad_facts": 1, "sink_retries": 4, "sink_consecutive_failures": 2},
        lags=[PartitionLag("oms.dlq", 0, 3)],
        partitions=5,
        backlog=3,
    )
    got = samples(render(snapshot, with_process=False))
    assert got[("oms_stage_messages_total", (("outcome", "landed"), ("stage", "sink")))] == 50
    assert got[("oms_sink_failed_flushes_total", ())] == 4
    assert got[("oms_sink_consecutive_failures", ())] == 2
    assert got[("oms_sink_backlog_facts", ())] == 3
    assert got[("oms_sink_info", (("sink", "sink"),))] == 1
    assert got[("oms_ready", ())] == 0
    assert not any(name == "oms_dlq_total" for name, _ in got)  # the worker's business


@pytest.mark.parametrize(
    ("highwater", "committed", "read", "lag"),
    [(None, 3, 2, None), (10, 4, 9, 6), (10, 10, 9, 0), (10, None, 4, 5), (10, None, None, 10)],
)
def test_lag_is_highwater_minus_committed(
    highwater: int | None, committed: int | None, read: int | None, lag: int | None
) -> None:
    assert lag_of(highwater, committed, read) == lag


def test_outputs_are_tallied_by_kind_from_real_messages() -> None:
    from datetime import UTC, datetime

    from streams.messages import EventKind, OrderEvent

    event = OrderEvent(
        event_id="e1",
        order_id="O1",
        seq=1,
        kind=EventKind.HELD,
        at=datetime.now(UTC),
        channel="jd",
        shop_id="s",
        external_id="x",
        reason="unpaid",
    )
    command = '{"schema_version":1,"command_id":"c1","kind":"outbound","order_id":"O1"}'
    counts: Counter[str] = Counter()
    outputs = [("ev", "O1", event.model_dump_json()), ("cmd", "O1", command), ("dlq", "k", "{}")]
    count_outputs(outputs, counts, events_topic="ev", commands_topic="cmd")
    assert counts == {"event_held": 1, "command_outbound": 1}
    assert message_kind(b'{"x":1}') == "unknown"
    # New messages are counted from the objects, to the same names as re-emitted JSON.
    from_objects: Counter[str] = Counter()
    count_kinds([event, "not a message"], from_objects)
    assert from_objects == {"event_held": 1}


def test_worker_readiness_reasons() -> None:
    ok = dict(
        member=True,
        partitions=3,
        rebalancing=False,
        consumer_state="running",
        crashed_agents=[],
        redis_error=None,
    )
    assert worker_readiness(**ok).ready
    idle = worker_readiness(**{**ok, "partitions": 0})
    assert idle.ready and idle.checks["idle_member"]
    for change, words in [
        ({"member": False}, "no partitions"),
        ({"rebalancing": True}, "rebalancing"),
        ({"consumer_state": "crashed"}, "consumer is crashed"),
        ({"crashed_agents": ["intake"]}, "intake"),
        ({"redis_error": "unreachable (ConnectionError)"}, "redis: unreachable"),
    ]:
        verdict = worker_readiness(**{**ok, **change})
        assert not verdict.ready and words in verdict.body("w0")["reason"], change


def test_sink_readiness_needs_partitions_and_clickhouse() -> None:
    assert sink_readiness(running=True, partitions=4, clickhouse_failures=0, redis_error="x").ready
    assert not sink_readiness(
        running=True, partitions=0, clickhouse_failures=0, redis_error=None
    ).ready
    down = sink_readiness(running=True, partitions=4, clickhouse_failures=3, redis_error=None)
    assert not down.ready and "clickhouse" in down.body("sink")["reason"]


class StubProbe:
    name = "w0"

    def __init__(self, ready: bool) -> None:
        self.verdict = Readiness(ready, {"redis": ready}, () if ready else ("redis: down",))

    async def readiness(self) -> Readiness:
        return self.verdict

    async def metrics(self) -> bytes:
        return render(worker_snapshot(ready=self.verdict.ready), with_process=False)


class NoReads:
    async def orders(self, ref: str) -> list[dict[str, Any]]:
        return []

    async def held(self, **kw: Any) -> list[dict[str, Any]]:
        return []

    async def rules(self) -> dict[str, Any]:
        return {}


class NoTokens:
    async def verify(self, token: str) -> None:
        return None


async def api_client(ready: bool, token: str | None = None) -> TestClient:
    app = create_api(
        NoReads(), worker="w0", verifier=NoTokens(), probe=StubProbe(ready), metrics_token=token
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_probe_routes_need_no_order_token() -> None:
    client = await api_client(ready=True)
    try:
        live = await client.get("/health/live")
        assert live.status == 200 and (await live.json())["ok"] is True
        ready = await client.get("/health/ready")
        assert ready.status == 200 and (await ready.json())["ready"] is True
        metrics = await client.get("/metrics")
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain; version=")
        assert b"oms_stage_messages_total" in await metrics.read()
        assert (await client.get("/health")).status == 200  # the old probe still answers
        assert (await client.get("/held")).status == 401  # the order routes still need a token
    finally:
        await client.close()


async def test_not_ready_is_503_with_a_reason() -> None:
    client = await api_client(ready=False)
    try:
        resp = await client.get("/health/ready")
        body = orjson.loads(await resp.read())
        assert resp.status == 503 and body["ready"] is False and "redis" in body["reason"]
        assert (await client.get("/health/live")).status == 200
    finally:
        await client.close()


async def test_metrics_token_when_set() -> None:
    client = await api_client(ready=True, token="s3cret-metrics-token")
    try:
        assert (await client.get("/metrics")).status == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status == 401
        right = {"Authorization": "Bearer s3cret-metrics-token"}
        assert (await client.get("/metrics", headers=right)).status == 200
        assert (await client.get("/health/ready")).status == 200  # probes stay open
    finally:
        await client.close()


def test_compose_checks_readiness_and_prometheus_scrapes_every_oms_process() -> None:
    """docker-compose.yml's OMS services are health-checked on /health/ready and each one is
    a target of docker/prometheus/prometheus.yml (text checks: no YAML parser in the deps)."""
    import re

    from core.settings import REPO_ROOT

    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    scrape = (REPO_ROOT / "docker" / "prometheus" / "prometheus.yml").read_text()
    services = re.findall(
        r'^  ([a-z0-9-]+):\n    <<: \*worker\n    command: \["python", "-m", '
        r'"ops", "(worker|sink)"',
        compose,
        flags=re.M,
    )
    assert {name for name, _ in services} == {"worker-w0", "worker-w1", "oms-sink"}
    for name, _ in services:
        assert f'"{name}:8080"' in scrape, name
    assert compose.count("/health/ready") >= 2  # the workers' anchor and the sink
    assert "./docker/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    datasource = REPO_ROOT / "docker/grafana/provisioning/datasources/prometheus.yaml"
    assert "url: http://prometheus:9090" in datasource.read_text()
