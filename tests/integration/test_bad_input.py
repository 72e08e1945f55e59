"""Bad input through the order path: the nasty-payload corpus (tests/fuzz/corpus) and
hypothesis-generated broken payloads through ``OrderPipeline.process`` on the test Redis, and
the corpus through live workers. Every input is accounted for (an order or a DLQ record with
its specific reason, counted per reason), nothing raises, and the workers stay up."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.pipeline import OrderPipeline
from agents.worker import HEARTBEAT_SECONDS
from core.kafka import client_kwargs
from core.settings import REPO_ROOT, Settings
from ops import stack
from order.plan import BatchResult
from order.route import RoutingTable
from state.keys import Keys
from state.redis import connect
from state.stock import load_stock, parse_stock_file
from streams.channels import adapt
from streams.channels.base import AdapterContext, AdapterError
from streams.messages import DlqReason, DlqRecord, EventKind
from streams.normalise import SHOP_HEADER, RawInput
from streams.topics import raw_topic
from tests.fuzz.payloads import (
    CHANNELS,
    ORDER,
    TALLY,
    Case,
    corpus,
    mutated_payload,
    random_payload,
    register_tally,
)
from tests.integration.test_end_to_end import wait_for
from tests.integration.test_pipeline import events

pytestmark = pytest.mark.integration

CASES = corpus()
BATCH = 25
INTAKE_KINDS = ("new", "duplicate", "update", "stale", "redelivery")


@pytest.fixture(scope="module", autouse=True)
def tally(request: pytest.FixtureRequest) -> None:
    register_tally(request.config)


def sample_stock(settings: Settings) -> None:
    """samples/stock.csv: every sku of the sample payloads, in every warehouse."""
    warehouses = RoutingTable.load(settings.config_dir / "warehouses.toml").warehouses
    rows = parse_stock_file(REPO_ROOT / "samples" / "stock.csv", warehouses)
    load_stock(connect(settings), Keys(settings.redis_prefix), rows)


def make_pipeline(settings: Settings) -> tuple[OrderPipeline, aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
    return OrderPipeline(settings, client, routing, AdapterContext()), client


def raw_of(case: Case, offset: int) -> RawInput:
    headers = {SHOP_HEADER: case.shop} if case.shop else {}
    return RawInput(
        case.channel, case.data, f"oms.raw.{case.channel}", 0, offset, case.name, headers
    )


def expected_reason(raw: RawInput) -> str:
    """What the adapter alone says about these bytes: the pipeline must say the same."""
    shop = raw.headers.get(SHOP_HEADER, "").strip()
    try:
        adapt(raw.channel, raw.value, AdapterContext(shop_id=shop))
    except AdapterError as exc:
        return exc.reason.value
    return ORDER


def dlq_records(result: BatchResult) -> dict[str, DlqRecord]:
    """DLQ outputs by their Kafka key (the input's key)."""
    return {
        key: DlqRecord.model_validate_json(value)
        for topic, key, value in result.outputs
        if topic.endswith(".dlq")
    }


async def run_batches(pipeline: OrderPipeline, raws: Sequence[RawInput]) -> BatchResult:
    combined = BatchResult()
    for start in range(0, len(raws), BATCH):
        result = await pipeline.process(raws[start : start + BATCH])
        combined.outputs.extend(result.outputs)
        combined.counts.update(result.counts)
    return combined


def assert_accounted(result: BatchResult, raws: Sequence[RawInput]) -> Counter[str]:
    """Every input is an order (of some intake kind) or a DLQ record carrying the reason the
    adapter gives, counted under dlq_<reason>; returns the outcomes by reason."""
    counts = result.counts
    assert counts["inputs"] == len(raws)
    assert counts["dlq"] + sum(counts[k] for k in INTAKE_KINDS) == len(raws), counts
    wanted = Counter(expected_reason(raw) for raw in raws)
    records = dlq_records(result)
    assert len(records) == counts["dlq"] == len(raws) - wanted[ORDER]
    for raw in raws:
        reason = expected_reason(raw)
        if reason != ORDER:
            record = records[raw.key]
            assert record.reason is DlqReason(reason) and record.detail.strip()
            assert (record.source_topic, record.offset) == (raw.topic, raw.offset)
    for reason in DlqReason:
        assert counts[f"dlq_{reason.value}"] == wanted[reason.value], reason
    assert sum(counts[f"dlq_{r.value}"] for r in DlqReason) == counts["dlq"]
    return wanted


async def test_the_whole_corpus_through_the_pipeline(redis_settings: Settings) -> None:
    sample_stock(redis_settings)
    pipeline, client = make_pipeline(redis_settings)
    raws = [raw_of(case, offset) for offset, case in enumerate(CASES)]
    try:
        result = await run_batches(pipeline, raws)
    finally:
        await client.aclose()
    outcomes = assert_accounted(result, raws)
    assert outcomes == Counter(case.expected for case in CASES)  # what the manifest says
    for case in CASES:
        TALLY.add("pipeline", case.channel, case.expected)
    # Valid cases share the samples' order ids: the first of each is new, the others re-pushes
    # or updates of it, none lost.
    valid = {
        adapt(c.channel, c.data, AdapterContext(shop_id=c.shop.strip())).order_id
        for c in CASES
        if c.expected == ORDER
    }
    assert result.counts["new"] == len(valid)


VALID = [c for c in CASES if c.expected == ORDER]


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
async def test_each_valid_corpus_order_on_a_record_of_its_own(
    case: Case, redis_settings: Settings
) -> None:
    """Alone (a fresh key prefix), each valid case is a new order that the audit decides;
    unknown skus are held for a person, lines of one sku are reserved as one quantity."""
    sample_stock(redis_settings)
    pipeline, client = make_pipeline(redis_settings)
    try:
        result = await pipeline.process([raw_of(case, 1)])
        trail = events(result)
        assert result.counts["new"] == 1 and result.counts["dlq"] == 0
        assert trail[0].kind is EventKind.RECEIVED and trail[0].order is not None
        order = trail[0].order
        record = await pipeline.orders.load(order.order_id)
    finally:
        await client.aclose()
    TALLY.add("pipeline", case.channel, ORDER)
    assert record is not None and record.order.model_dump() == order.model_dump()
    held = [e.reason for e in trail if e.kind is EventKind.HELD]
    if case.hold:
        assert held == [case.hold]
    if case.name.endswith("/duplicate_sku_lines"):  # the sample's stock covers both lines
        sku = order.lines[0].sku
        assert order.quantity_by_sku[sku] == 2 * order.lines[0].quantity and not held
        [reserved] = [e for e in trail if e.kind is EventKind.RESERVED]
        units = sum(a.quantity for a in reserved.allocations if a.sku == sku)
        assert units == order.quantity_by_sku[sku]


# --- hypothesis-generated bad payloads ------------------------------------------------------

# x BATCH inputs; OMS_FUZZ_EXAMPLES scales it like the fuzz suite (tests/fuzz).
GENERATED_BATCHES = max(1, round(12 * float(os.environ.get("OMS_FUZZ_EXAMPLES", "1.0"))))


@st.composite
def bad_batch(draw: st.DrawFn) -> list[RawInput]:
    raws = []
    for offset in range(BATCH):
        channel = draw(st.sampled_from(CHANNELS))
        data = draw(
            st.one_of(mutated_payload(channel), mutated_payload(channel), random_payload(channel))
        )
        raws.append(RawInput(channel, data, f"oms.raw.{channel}", 0, offset, f"gen-{offset}"))
    return raws


@settings(
    max_examples=GENERATED_BATCHES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(bad_batch())
def test_generated_bad_payloads_through_the_pipeline(
    redis_settings: Settings, raws: list[RawInput]
) -> None:
    async def run() -> BatchResult:
        pipeline, client = make_pipeline(redis_settings)
        try:
            return await pipeline.process(raws)
        finally:
            await client.aclose()

    result = asyncio.run(run())  # a loop of its own: hypothesis drives a plain function
    outcomes = assert_accounted(result, raws)
    for raw in raws:
        TALLY.add("pipeline", raw.channel, expected_reason(raw))
    assert sum(outcomes.values()) == BATCH


# --- the corpus through live workers --------------------------------------------------------

# A topic no worker reads is no input of the OMS (and `./oms ingest` refuses the channel).
LIVE = [c for c in CASES if c.channel in CHANNELS]


def heartbeats(settings: Settings) -> dict[str, dict[str, Any]]:
    client, keys = connect(settings), Keys(settings.redis_prefix)
    beats = {}
    for index in range(settings.workers):
        value = client.get(keys.worker(f"w{index}"))
        if value:
            beats[f"w{index}"] = orjson.loads(value)
    return beats


def total(beats: dict[str, dict[str, Any]], counter: str) -> int:
    return sum(beat["counters"].get(counter, 0) for beat in beats.values())


async def produce(settings: Settings, cases: Sequence[Case]) -> list[tuple[str, int, int]]:
    """The cases onto their raw topics as a platform would send them; (topic, partition,
    offset) of each. The client takes the 10 MB case: the worker must cope if a broker does."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings), acks="all", max_request_size=16 * 1024 * 1024
    )
    await producer.start()
    try:
        sent = []
        for case in cases:
            headers = [(SHOP_HEADER, case.shop.encode())] if case.shop else []
            topic = raw_topic(case.channel).name(settings.topic_prefix)
            ack = await (
                await producer.send(topic, case.data, key=case.name.encode(), headers=headers)
            )
            sent.append((ack.topic, ack.partition, ack.offset))
        return sent
    finally:
        await producer.stop()


def settled(settings: Settings) -> dict[str, dict[str, Any]] | None:
    """Heartbeats of every worker, ready and counting no more inputs (two beats apart): the
    counts after this test's inputs are then this test's alone."""
    first = heartbeats(settings)
    if len(first) < settings.workers or not all(beat["ready"] for beat in first.values()):
        return None
    time.sleep(2 * HEARTBEAT_SECONDS)
    again = heartbeats(settings)
    return again if total(again, "inputs") == total(first, "inputs") else None


def log_sizes(settings: Settings) -> dict[Path, int]:
    return {path: path.stat().st_size for path in settings.log_dir.glob("worker-*.log")}


@pytest.fixture
def own_namespace(running_stack: Settings) -> Iterator[Settings]:
    """Workers of their own on the test stack, with their own topics, Redis keys and database
    (ops/bench.py's namespaces): the corpus reuses the samples' channel order numbers, and the
    orders other tests make from those samples must never meet these."""
    from ops.bench import drop_namespace, namespaced_settings, prepare_namespace

    own = namespaced_settings(running_stack, f"bad{uuid.uuid4().hex[:8]}")
    prepare_namespace(own)
    try:
        stack.start_workers(own, own.workers)
        if not own.sink_in_worker:
            stack.start_sink(own)
        yield own
    finally:
        stack.stop_workers(own)  # and the sink
        drop_namespace(own)


def test_the_corpus_through_live_workers(own_namespace: Settings) -> None:
    settings = own_namespace
    sample_stock(settings)
    before = wait_for(lambda: settled(settings))
    assert before, "workers not ready, or still busy with another test's inputs"
    logs = log_sizes(settings)
    after_bad = Case(
        "own/after_the_corpus",
        "own",
        ORDER,
        orjson.dumps(
            {
                **orjson.loads((REPO_ROOT / "samples" / "payloads" / "own.json").read_bytes()),
                "external_id": "W-AFTER-BAD-INPUT",
            }
        ),
    )
    cases = [*LIVE, after_bad]
    sent = asyncio.run(produce(settings, cases))

    # The workers count every input, by reason, and keep beating from the same processes.
    after = wait_for(
        lambda: (
            (b := heartbeats(settings))
            and total(b, "inputs") - total(before, "inputs") >= len(cases)
            and b
        ),
        timeout=120,
    )
    assert after, f"counted {total(heartbeats(settings), 'inputs') - total(before, 'inputs')}"
    assert total(after, "inputs") - total(before, "inputs") == len(cases)
    assert {n: b["pid"] for n, b in after.items()} == {n: b["pid"] for n, b in before.items()}
    assert all(after[n]["ts"] > before[n]["ts"] for n in before)
    wanted = Counter(c.expected for c in cases)
    for reason in DlqReason:
        delta = total(after, f"dlq_{reason.value}") - total(before, f"dlq_{reason.value}")
        assert delta == wanted[reason.value], reason
    assert total(after, "dlq") - total(before, "dlq") == len(cases) - wanted[ORDER]
    for case in cases:
        TALLY.add("live workers", case.channel, case.expected)
    for path, size in logs.items():  # no agent crashed and was restarted on the way
        with path.open("rb") as fh:
            fh.seek(size)
            assert b"Crashed" not in fh.read(), path

    # ClickHouse: one DLQ fact per bad input, with its reason; the good order after them lands.
    from analytics.client import connect as clickhouse

    client = clickhouse(settings)
    bad = {where: case for where, case in zip(sent, cases, strict=True) if case.expected != ORDER}

    def dlq_facts() -> list[tuple[Any, ...]] | None:
        rows = client.execute(
            "SELECT source_topic, source_partition, source_offset, any(reason), count() "
            "FROM (SELECT dlq_id, any(source_topic) AS source_topic, "
            "any(source_partition) AS source_partition, any(source_offset) AS source_offset, "
            "any(reason) AS reason FROM dlq GROUP BY dlq_id) "
            "WHERE (source_topic, source_partition, source_offset) IN %(keys)s "
            "GROUP BY source_topic, source_partition, source_offset",
            {"keys": tuple(bad)},
        )
        return rows if len(rows) >= len(bad) else None

    rows = wait_for(dlq_facts, timeout=120)
    assert rows, "not every bad input is a DLQ fact"
    for topic, partition, offset, reason, facts in rows:
        case = bad[(topic, partition, offset)]
        assert (reason, facts) == (case.expected, 1), case.name

    def landed(order_id: str) -> list[tuple[Any, ...]]:
        return client.execute(
            "SELECT shop_id, external_id, city FROM order_latest WHERE order_id = %(id)s",
            {"id": order_id},
        )

    good = adapt("own", after_bad.data)
    assert wait_for(lambda: landed(good.order_id)), "good input after the corpus did not land"
    # Injection strings reach ClickHouse as data, byte for byte (parameters, not SQL text).
    for case in (c for c in LIVE if c.name.endswith("/injection_everywhere")):
        order = adapt(case.channel, case.data)
        row = wait_for(lambda o=order: landed(o.order_id))
        assert row == [(order.shop_id, order.external_id, order.address.city)], case.name
        lines = client.execute(
            "SELECT DISTINCT line_id, sku, channel_sku FROM order_lines "
            "WHERE order_id = %(id)s AND version = "
            "(SELECT max(version) FROM order_lines WHERE order_id = %(id)s)",
            {"id": order.order_id},
        )
        assert sorted(lines) == sorted((li.line_id, li.sku, li.channel_sku) for li in order.lines)
