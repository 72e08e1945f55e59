"""The fact sink: every fact topic into ClickHouse.

Order events, DLQ records, fulfilment commands, WMS events and after-sales requests are read
together so each batch is one INSERT per table. A batch's offsets are committed only after
ClickHouse has its rows (FactSink.write retries until it does), and fact ids are
deterministic, so a redelivered batch is harmless.

It is a consumer of its own (group ``<app_id>-facts``), not a Faust agent: while ClickHouse is
down the sink stops fetching, and with a Faust agent its full stream buffer would hold up the
worker's one shared consumer, and with it intake, operator actions and the WMS loop (found by
tests/integration/test_sink_outage.py). Its own consumer only stalls itself; its offsets wait.

By default it runs as a process of its own (analytics/sink_process.py, `./oms sink`): its parsing
and row building would otherwise hold the worker's event loop and GIL while intake batches wait
(docs/decisions/0009-fact-sink-process.md). With OMS_SINK_IN_WORKER=true every worker runs it
as a task instead (``agents/sink.py``), for single-process deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from analytics.fact_decode import decode_or_none, decoder_for
from analytics.facts import Fact
from analytics.sink import FactSink
from core.kafka import FetchPacing, client_kwargs, consumer_kwargs
from core.settings import Settings
from streams import topics
from streams.parse import parse_or_none
from streams.signing import Keyring, Refused, claimed, keyring

# Topics whose messages land as facts; each names its message model (TopicSpec.model).
FACT_TOPICS: tuple[topics.TopicSpec, ...] = (
    topics.ORDER_EVENTS,
    topics.DLQ,
    topics.FULFILMENT_COMMANDS,
    topics.WMS_EVENTS,
    topics.AFTERSALES,
)


def fact_group(settings: Settings) -> str:
    """The fact sink's consumer group, the same whether it runs as a process or in workers."""
    return f"{settings.app_id}-facts"


Offsets = dict[TopicPartition, int]


@contextlib.asynccontextmanager
async def offset_clients(
    settings: Settings, start_timeout_s: float | None = None
) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    """An admin client and a group-less consumer, started, for :func:`fact_offsets` (whoever
    watches the sink: its own backlog gauge, the bench); closed on the way out."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), start_timeout_s)
        yield admin, consumer
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()


async def fact_offsets(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, settings: Settings
) -> tuple[Offsets, Offsets]:
    """End offsets of every fact topic partition and the sink group's committed offsets (0
    where it committed nothing). Committed means in ClickHouse: the sink commits a batch only
    once its rows landed, so end == committed everywhere is "every fact produced so far is a
    row". ``consumer`` is a group-less client of the caller's own (metadata, end offsets)."""
    names = [spec.name(settings.topic_prefix) for spec in FACT_TOPICS]
    tps = [
        TopicPartition(topic, p)
        for topic in names
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not tps:
        await consumer.topics()  # refresh metadata: the topics may be new
        return {}, {}
    ends = await consumer.end_offsets(tps)
    done = await admin.list_consumer_group_offsets(fact_group(settings), partitions=tps)
    committed = {
        tp: meta.offset if (meta := done.get(tp)) is not None and meta.offset >= 0 else 0
        for tp in tps
    }
    return {tp: ends.get(tp, 0) for tp in tps}, committed


Decode = Callable[[bytes, str], Fact | None]


def fact_decoders(settings: Settings) -> dict[str, Decode]:
    """Topic name -> how its values become facts (None: not one, logged): the hot facts by
    their compiled decoders (analytics/fact_decode.py), the control topics' by their models."""
    out: dict[str, Decode] = {}
    for spec in FACT_TOPICS:
        model = spec.model
        if model is None:
            continue
        decoder = decoder_for(model)
        if decoder is not None:
            out[spec.name(settings.topic_prefix)] = functools.partial(decode_or_none, decoder)
        else:
            out[spec.name(settings.topic_prefix)] = functools.partial(parse_or_none, model)  # type: ignore[assignment]
    return out


def parse_fact(topic: str, value: bytes, decoders: Mapping[str, Decode]) -> Fact | None:
    """The fact a record carries, or None (logged by the decoder) when it is not one."""
    decode = decoders.get(topic)
    return decode(value, topic) if decode is not None else None


# Without a poll the client would leave the group after max_poll_interval; a ClickHouse outage
# may last longer than the default 5 minutes, and leaving would only cause a needless replay.
MAX_POLL_INTERVAL_MS = 3_600_000


async def run_fact_sink(
    settings: Settings, counters: Counter[str], *, stop: asyncio.Event | None = None
) -> None:
    """Consume the fact topics into ClickHouse until cancelled, or until ``stop`` is set (then
    the batch in hand lands and is committed first).

    ``counters`` get the sink's metrics: ``facts``, ``bad_facts``, ``unauthorized_facts``
    (control messages refused as the workers refuse them), FactSink's ``sink_*`` and
    ``sink_partitions`` (partitions assigned to this consumer at the last batch)."""
    decoders = fact_decoders(settings)
    screen = control_screen(settings)
    sink = FactSink(settings, counters=counters)  # sink_* metrics in the heartbeat
    consumer = AIOKafkaConsumer(
        *decoders,
        **consumer_kwargs(settings),
        group_id=fact_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    await consumer.start()
    pacing = FetchPacing.of(settings)
    try:
        while stop is None or not stop.is_set():
            records = await take_batch(consumer, settings)
            pacing.pace(consumer, bool(records))
            counters["sink_partitions"] = len(consumer.assignment())
            if records:
                await land(records, decoders, sink, counters, screen)
                await consumer.commit()  # only now: ClickHouse has every row
    finally:
        await consumer.stop()
        await sink.close()


async def take_batch(consumer: AIOKafkaConsumer, settings: Settings) -> list[ConsumerRecord]:
    """Up to sink_batch_size records, waiting at most sink_flush_s once the first arrived."""
    records: list[ConsumerRecord] = []
    deadline = None
    loop = asyncio.get_running_loop()
    while len(records) < settings.sink_batch_size:
        wait = settings.sink_flush_s if deadline is None else max(0.0, deadline - loop.time())
        got = await consumer.getmany(
            timeout_ms=int(wait * 1000), max_records=settings.sink_batch_size - len(records)
        )
        records += [r for batch in got.values() for r in batch]
        if records and deadline is None:
            deadline = loop.time() + settings.sink_flush_s
        if deadline is not None and loop.time() >= deadline:
            break
        if not records and not got:
            break  # nothing at all within a flush interval: let the caller loop
    return records


async def land(
    records: list[ConsumerRecord],
    decoders: Mapping[str, Decode],
    sink: FactSink,
    counters: Counter[str],
    screen: Screen | None = None,
) -> None:
    batch: list[Fact] = []
    for record in records:
        fact = parse_fact(record.topic, record.value or b"", decoders)
        if fact is None:
            counters["bad_facts"] += 1
        elif screen is not None and (fact := screen.admit(record, fact)) is None:
            counters["unauthorized_facts"] += 1
        else:
            batch.append(fact)
    await sink.write(batch)
    counters["facts"] += len(batch)


@dataclass(frozen=True)
class Screen:
    """The control topics' signatures, checked as the workers check them (agents/control.py):
    a WMS event or after-sales request nobody allowed to send it signed is no fact (the
    workers dead-letter it, and that DLQ record is the fact), and an admitted one carries the
    actor the workers record."""

    keyring: Keyring
    topics: frozenset[str]

    def admit(self, record: ConsumerRecord, fact: Fact) -> Fact | None:
        if record.topic not in self.topics:
            return fact
        try:
            principal = self.keyring.verify(
                record.topic, record.key, record.value or b"", record.headers or []
            )
            return claimed(principal, fact)  # type: ignore[no-any-return]
        except Refused:
            return None


def control_screen(settings: Settings) -> Screen:
    control = frozenset(
        spec.name(settings.topic_prefix) for spec in (topics.WMS_EVENTS, topics.AFTERSALES)
    )
    return Screen(keyring(settings), control)
