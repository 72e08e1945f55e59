"""The operator agent: decisions people make about single orders (release a hold, cancel),
applied by the same pipeline code and CAS-saved like channel inputs."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import faust
from pydantic import ValidationError

from agents.intake import send_all
from agents.pipeline import OrderPipeline
from ops.settings import Settings
from streams import topics
from streams.messages import OperatorAction

log = logging.getLogger(__name__)


def parse_action(value: bytes) -> OperatorAction | None:
    """None for a record that is not an action: logged and counted, never a crash."""
    try:
        return OperatorAction.model_validate_json(value)
    except ValidationError as exc:
        log.error("unparseable operator action: %s", exc.errors(include_input=False)[:1])
        return None


def register_operator(
    app: faust.App,
    settings: Settings,
    make_pipeline: Callable[[], Awaitable[OrderPipeline]],
    counters: Counter[str],
) -> None:
    source = app.topic(
        topics.OPERATOR.name(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, name="operator")
    async def operator(stream: faust.StreamT) -> None:
        pipeline = await make_pipeline()
        async for events in stream.take_events(100, within=settings.batch_within_s):
            parsed = [parse_action(e.value) for e in events]
            actions = [a for a in parsed if a is not None]
            counters["bad_actions"] += len(parsed) - len(actions)
            result = await pipeline.apply_actions(actions)
            await send_all(app, result.outputs)
            counters.update(result.counts)
