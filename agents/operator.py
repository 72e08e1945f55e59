"""The operator agent: decisions people make about single orders (release a hold, cancel),
applied by the same pipeline code and CAS-saved like channel inputs. Each action is screened
first (``agents/control.py``): only a signed one, from a principal that may send it, applies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import faust
from faust.types import EventT

from agents.control import screen
from agents.intake import batch_runner
from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.plan import BatchResult
from streams import topics
from streams.messages import OperatorAction
from streams.signing import keyring


def register_operator(
    app: faust.App,
    settings: Settings,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
) -> None:
    operator_topic = topics.OPERATOR.name(settings.topic_prefix)
    keys = keyring(settings)  # at start-up: a missing or bad key stops the worker, named
    source = app.topic(
        operator_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, name="operator")
    async def operator(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        runner = batch_runner(app, settings, "operator", counters, pipeline)

        async def work(events: Sequence[EventT]) -> BatchResult:
            screened = await screen(events, OperatorAction, keys, settings, pipeline)
            result = await pipeline.apply_actions(screened.items)
            return screened.into(result, "bad_actions")

        async for events in stream.take_events(100, within=settings.batch_within_s):
            await runner.run(events, work)
