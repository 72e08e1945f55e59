"""The intake agent: raw channel topics in, order events and fulfilment commands out.

One agent runs the whole order path for a batch (see agents/pipeline.py), because every stage
keys on the same order: hopping through Kafka between stages would cost a produce and a consume
per stage and buy no ordering we do not already have.
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
from agents.normalise import RawInput
from agents.pipeline import OrderPipeline, Output
from ops.settings import Settings

log = logging.getLogger(__name__)


def to_raw(event: EventT, prefix: str) -> RawInput:
    message = event.message
    channel = message.topic.removeprefix(f"{prefix}.raw.")
    key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else ""
    headers = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        for k, v in (message.headers or [])
    }
    value = event.value if isinstance(event.value, bytes) else b""
    return RawInput(channel, value, message.topic, message.partition, message.offset, key, headers)


async def send_all(app: faust.App, outputs: Sequence[Output]) -> None:
    """Send a batch's outputs and wait for the broker's acks before the inputs are acked, so an
    input's offset is never committed ahead of what it produced."""
    producer = app.producer
    futures = [
        await producer.send(topic, key.encode(), value.encode(), None, None, None)
        for topic, key, value in outputs
    ]
    if futures:
        await asyncio.gather(*futures)


def register_intake(
    app: faust.App,
    settings: Settings,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
) -> None:
    @app.agent(raw_topic(app, settings), name="intake")
    async def intake(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            started = time.perf_counter()
            raws = [to_raw(e, settings.topic_prefix) for e in events]
            result = await pipeline.process(raws)
            await send_all(app, result.outputs)
            counters.update(result.counts)
            # Batch count and busy time: mean batch size and cost for `./oms bench` and status.
            counters["intake_batches"] += 1
            counters["intake_busy_ms"] += round((time.perf_counter() - started) * 1000)
