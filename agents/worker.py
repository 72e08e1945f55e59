"""One OMS worker process: the Faust app with its agents, the order query API (agents/api.py)
and a heartbeat that the launcher and `./oms status` read from Redis.

The fact sink runs in a process of its own (agents/sink_process.py) unless OMS_SINK_IN_WORKER
is true; then every worker runs it as a task instead (docs/decisions/0009-fact-sink-process.md)."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import faust
import orjson
from faust.types import TP

from agents.api import register_api
from agents.app import create_app
from agents.channel_stock import register_channel_stock
from agents.intake import register_intake
from agents.ledger import register_ledger
from agents.operator import register_operator
from agents.pipeline import OrderPipeline
from agents.route import RoutingTable
from agents.sink import register_sink
from agents.timers import register_timers
from agents.wms_events import register_order_inputs
from ops.settings import Settings
from state.keys import Keys
from state.redis import connect_async, connect_batched
from streams import topics
from streams.adapters.base import AdapterContext, SkuMap

HEARTBEAT_SECONDS = 2.0
HEARTBEAT_TTL = 10


def build_worker_app(settings: Settings, name: str) -> faust.App:
    app = create_app(settings)
    counters: Counter[str] = Counter()
    redis_client = connect_async(settings)
    keys = Keys(settings.redis_prefix)
    state = {"ready": False, "partitions": 0}

    async def make_pipeline() -> OrderPipeline:
        routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
        ctx = AdapterContext(sku_map=SkuMap.load(settings.config_dir / "sku_map.csv"))
        return OrderPipeline(settings, connect_batched(settings), routing, ctx)

    register_intake(app, settings, make_pipeline, counters)
    register_operator(app, settings, make_pipeline, counters)
    if settings.sink_in_worker:
        register_sink(app, settings, counters)
    register_ledger(app, settings, counters)
    register_channel_stock(app, settings, counters)
    register_timers(app, settings, counters)
    register_order_inputs(app, settings, make_pipeline, counters)
    api = register_api(app, settings, redis_client, name)

    @app.task
    async def declare_topics() -> None:
        """Output topics exist before the first batch is sent (the agents' inputs Faust does)."""
        for spec in topics.ALL_TOPICS:
            await app.topic(spec.name(settings), partitions=settings.partitions).maybe_declare()

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: object) -> None:
        state["ready"] = True
        state["partitions"] = len(assigned)

    @app.timer(HEARTBEAT_SECONDS)
    async def heartbeat() -> None:
        value = {
            "pid": os.getpid(),
            "ready": state["ready"],
            "partitions": state["partitions"],
            "ts": time.time(),
            "counters": dict(counters),
            "api_port": api.port if api.serving else None,  # None: not (yet) serving
        }
        await redis_client.set(keys.worker(name), orjson.dumps(value), ex=HEARTBEAT_TTL)

    return app


def run_worker(settings: Settings, name: str, loglevel: str = "info") -> None:
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    use_event_loop(settings.event_loop)
    app = build_worker_app(settings, name)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def use_event_loop(name: str) -> None:
    """uvloop by default: its event loop runs the worker's socket and callback work in C (a
    part of each batch's time in the profile); ``aio`` is the standard library's loop."""
    if name != "aio":
        import mode.loop

        mode.loop.use(name)
