"""The intake agent: raw channel topics in, order events and fulfilment commands out.

One agent runs the whole order path for a batch (see agents/pipeline.py), because every stage
keys on the same order: hopping through Kafka between stages would cost a produce and a consume
per stage and buy no ordering we do not already have. Every batch runs through a
``BatchRunner`` (agents/batches.py): a failure is retried, never acked away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import faust
from faust.types import EventT

from agents.app import raw_topic
from agents.batches import BatchRunner, describe
from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.plan import BatchResult
from order.record import Output
from streams import topics
from streams.envelope import pack_events
from streams.messages import DlqReason
from streams.normalise import RawInput, to_dlq

log = logging.getLogger(__name__)


def to_raw(event: EventT, prefix: str) -> RawInput:
    """The event as pipeline input; ``channel`` is '' for a topic that is not a raw one."""
    message = event.message
    raw_prefix = f"{prefix}.raw."
    channel = message.topic.removeprefix(raw_prefix) if message.topic.startswith(raw_prefix) else ""
    key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else ""
    headers = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for k, v in (message.headers or [])
    }
    value = event.value if isinstance(event.value, bytes) else b""
    return RawInput(channel, value, message.topic, message.partition, message.offset, key, headers)


async def send_all(app: faust.App, outputs: Sequence[Output], events_topic: str = "") -> None:
    """Send a batch's outputs, each order's events packed into one message
    (streams/envelope.py), and wait for the broker's acks before the inputs are acked, so an
    input's offset is never committed ahead of what it produced."""
    producer = app.producer
    futures = [
        await producer.send(topic, key, value, None, None, None)
        for topic, key, value in pack_events(outputs, events_topic)
    ]
    if futures:
        await asyncio.gather(*futures)


def batch_runner(
    app: faust.App,
    settings: Settings,
    name: str,
    counters: Counter[str],
    pipeline: OrderPipeline,
) -> BatchRunner:
    """One agent's runner: sends through the app's producer, dead-letters a poison input to the
    DLQ with its source topic, partition and offset (so `./oms dlq replay` can send it back),
    stamped with its first emission time like every DLQ record (a redelivery collapses)."""
    dlq_topic = topics.DLQ.name(settings.topic_prefix)
    events_topic = topics.ORDER_EVENTS.name(settings.topic_prefix)

    async def dead_letter(event: EventT, exc: BaseException) -> Output:
        raw = to_raw(event, settings.topic_prefix)
        record = to_dlq(raw, DlqReason.PROCESSING_ERROR, f"{name}: {describe(exc)}")
        (first,) = await pipeline.as_first_seen([record])
        return dlq_topic, raw.key or raw.input_id, first.model_dump_json()

    async def send(outputs: Sequence[Output]) -> None:
        await send_all(app, outputs, events_topic)

    return BatchRunner(name, send, counters, dead_letter)


def register_intake(
    app: faust.App,
    settings: Settings,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
) -> None:
    @app.agent(raw_topic(app, settings), name="intake")
    async def intake(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        runner = batch_runner(app, settings, "intake", counters, pipeline)

        async def work(events: Sequence[EventT]) -> BatchResult:
            started = time.perf_counter()
            try:
                return await pipeline.process([to_raw(e, settings.topic_prefix) for e in events])
            finally:  # busy time: each attempt's work, not the backoff between attempts
                counters["intake_busy_ms"] += round((time.perf_counter() - started) * 1000)

        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await runner.run(events, work)
            counters["intake_batches"] += 1  # with the busy time: mean batch size and cost
