"""The WMS agents: warehouse answers (``oms.wms.events``) and after-sales requests
(``oms.aftersales``), both keyed by order id and applied by the same pipeline code as every
other input (CAS on the order record, outbox for redeliveries)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT

from agents.guard import parse_or_none
from agents.intake import batch_runner
from agents.pipeline import BatchResult, OrderPipeline
from ops.settings import Settings
from streams import topics
from streams.messages import AfterSalesRequest, WmsEvent
from streams.topics import TopicSpec


def register_order_inputs(
    app: faust.App,
    settings: Settings,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
) -> None:
    _register(
        app,
        settings,
        topics.WMS_EVENTS,
        WmsEvent,
        "wms",
        make_pipeline,
        counters,
        lambda p, items: p.apply_wms_events(items),
    )
    _register(
        app,
        settings,
        topics.AFTERSALES,
        AfterSalesRequest,
        "aftersales",
        make_pipeline,
        counters,
        lambda p, items: p.apply_aftersales(items),
    )


def _register(
    app: faust.App,
    settings: Settings,
    spec: TopicSpec,
    model: Any,
    name: str,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
    apply: Callable[[OrderPipeline, Sequence[Any]], Awaitable[BatchResult]],
) -> None:
    topic_name = spec.name(settings)
    source = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(source, name=name)
    async def agent(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        runner = batch_runner(app, settings, name, counters, pipeline)

        async def work(events: Sequence[EventT]) -> BatchResult:
            parsed = [parse_or_none(model, e.value, topic_name) for e in events]
            items = [item for item in parsed if item is not None]
            result = await apply(pipeline, items)
            result.counts[f"bad_{name}"] += len(parsed) - len(items)
            return result

        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await runner.run(events, work)
