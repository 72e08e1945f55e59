"""The fact sink agent: order events and DLQ records into ClickHouse.

A batch's Kafka offsets are acked only after ClickHouse has its rows (FactSink.write retries
until it does), and fact ids are deterministic, so a redelivered batch is harmless.
"""

from __future__ import annotations

from collections import Counter

import faust

from agents.guard import parse_or_none
from analytics.sink import FactSink
from ops.settings import Settings
from streams import topics
from streams.messages import DlqRecord, OrderEvent


def parse_fact(topic: str, value: bytes, dlq_topic: str) -> OrderEvent | DlqRecord | None:
    return parse_or_none(DlqRecord if topic == dlq_topic else OrderEvent, value, topic)


def register_sink(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    dlq_topic = topics.DLQ.name(settings)
    source = app.topic(
        topics.ORDER_EVENTS.name(settings),
        dlq_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    sink = FactSink(settings, counters=counters)  # sink_* metrics in the heartbeat

    @app.agent(source, name="facts")
    async def facts(stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            settings.sink_batch_size, within=settings.sink_flush_s
        ):
            parsed = [parse_fact(e.message.topic, e.value, dlq_topic) for e in events]
            batch = [fact for fact in parsed if fact is not None]
            counters["bad_facts"] += len(parsed) - len(batch)
            await sink.write(batch)
            counters["facts"] += len(batch)
