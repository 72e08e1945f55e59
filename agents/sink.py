"""The fact sink agent: every fact topic into ClickHouse.

Order events, DLQ records, fulfilment commands, WMS events and after-sales requests are read
by one agent so each batch is one INSERT per table. A batch's Kafka offsets are acked only
after ClickHouse has its rows (FactSink.write retries until it does), and fact ids are
deterministic, so a redelivered batch is harmless.
"""

from __future__ import annotations

from collections import Counter

import faust
from pydantic import BaseModel

from agents.guard import parse_or_none
from analytics.facts import Fact
from analytics.sink import FactSink
from ops.settings import Settings
from streams import topics

# Topics whose messages land as facts; each names its message model (TopicSpec.model).
FACT_TOPICS: tuple[topics.TopicSpec, ...] = (
    topics.ORDER_EVENTS,
    topics.DLQ,
    topics.FULFILMENT_COMMANDS,
    topics.WMS_EVENTS,
    topics.AFTERSALES,
)


def fact_models(settings: Settings) -> dict[str, type[BaseModel]]:
    """Topic name -> the model its values parse into."""
    return {spec.name(settings): spec.model for spec in FACT_TOPICS if spec.model is not None}


def parse_fact(topic: str, value: bytes, models: dict[str, type[BaseModel]]) -> Fact | None:
    """The fact a record carries, or None (logged by the guard) when it is not one."""
    model = models.get(topic)
    if model is None:
        return None
    return parse_or_none(model, value, topic)  # type: ignore[return-value]


def register_sink(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    models = fact_models(settings)
    source = app.topic(
        *models,
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
            parsed = [parse_fact(e.message.topic, e.value, models) for e in events]
            batch = [fact for fact in parsed if fact is not None]
            counters["bad_facts"] += len(parsed) - len(batch)
            await sink.write(batch)
            counters["facts"] += len(batch)
