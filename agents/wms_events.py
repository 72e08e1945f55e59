"""The WMS agents: warehouse answers (``oms.wms.events``) and after-sales requests
(``oms.aftersales``), both keyed by order id and applied by the same pipeline code as every
other input (CAS on the order record, outbox for redeliveries). Each message is screened first
(``agents/control.py``): only one signed by a principal that may write its topic applies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT

from agents.control import screen
from agents.intake import batch_runner
from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.plan import BatchResult
from streams import topics
from streams.messages import AfterSalesRequest, WmsEvent
from streams.signing import keyring
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
    topic_name = spec.name(settings.topic_prefix)
    keys = keyring(settings)  # at start-up: a missing or bad key stops the worker, named
    source = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(source, name=name)
    async def agent(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        runner = batch_runner(app, settings, name, counters, pipeline)

        async def work(events: Sequence[EventT]) -> BatchResult:
            screened = await screen(events, model, keys, settings, pipeline)
            result = await apply(pipeline, screened.items)
            return screened.into(result, f"bad_{name}")

        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            await runner.run(events, work)
