"""One OMS worker process: the Faust app with its agents, the order query API (web/api.py)
and a heartbeat that the launcher and `./oms status` read from Redis. The API also serves the
worker's probes and metrics (core/health.py, core/metrics.py), read from the same counters
the heartbeat carries.

The fact sink runs in a process of its own (analytics/sink_process.py) unless OMS_SINK_IN_WORKER
is true; then every worker runs it as a task instead (docs/decisions/0009-fact-sink-process.md)."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import faust
import orjson
import redis.asyncio as aioredis
from faust.types import TP

from agents.app import create_app
from agents.channel_stock import register_channel_stock
from agents.intake import register_intake
from agents.ledger import register_ledger
from agents.operator import register_operator
from agents.pipeline import OrderPipeline
from agents.sink import register_sink
from agents.timers import register_timers
from agents.wms_events import register_order_inputs
from core.collector import tune_collector
from core.health import Readiness, redis_error, worker_readiness
from core.logs import setup_logging
from core.loop import use_event_loop
from core.metrics import PartitionLag, Snapshot, lag_of, render
from core.settings import Settings
from order.route import RoutingTable
from state.keys import Keys
from state.orders import OrderStore
from state.redis import connect_async, connect_batched
from streams import topics
from streams.channels.base import AdapterContext, SkuMap
from streams.messages import DlqReason

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
HEARTBEAT_TTL = 10


class WorkerProbe:
    """Readiness and metrics of one worker, from its Faust app, counters and Redis client."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        name: str,
        counters: Counter[str],
        client: aioredis.Redis,
        state: dict[str, Any],
    ) -> None:
        self.app, self.settings, self.name = app, settings, name
        self.counters, self.client, self.state = counters, client, state
        self.keys = Keys(settings.redis_prefix)

    async def readiness(self) -> Readiness:
        return worker_readiness(
            member=bool(self.state["ready"]),
            partitions=int(self.state["partitions"]),
            rebalancing=bool(getattr(self.app, "rebalancing", False)),
            consumer_state=consumer_state(self.app),
            crashed_agents=crashed_agents(self.app),
            redis_error=await redis_error(self.client, self.settings.health_timeout_s),
        )

    async def metrics(self) -> bytes:
        readiness = await self.readiness()
        queues = await self._queues() if readiness.checks["redis"] else None
        snapshot = Snapshot(
            component="worker",
            dlq_reasons=tuple(DlqReason),
            name=self.name,
            ready=readiness.ready,
            counters=dict(self.counters),
            lags=consumer_lags(self.app),
            partitions=int(self.state["partitions"]),
            queues=queues,
        )
        return render(snapshot)

    async def _queues(self) -> dict[str, int] | None:
        try:
            return await OrderStore(self.client, self.keys).queue_figures(time.time())
        except Exception:  # Redis went away between the ping and now: leave the gauges out
            return None


def consumer_state(app: faust.App) -> str:
    """``running`` once the Kafka consumer service runs; ``init``/``crashed``/``stopping``..."""
    consumer = getattr(app, "_consumer", None)
    return "init" if consumer is None else str(consumer.state)


def crashed_agents(app: faust.App) -> list[str]:
    """Agents whose service or an actor of it crashed (their input then stops moving)."""
    crashed = []
    for name, agent in app.agents.items():
        actors = list(getattr(agent, "_actors", ()))
        if agent.crashed or any(getattr(a, "crashed", False) for a in actors):
            crashed.append(name.rsplit(".", 1)[-1])
    return sorted(crashed)


def consumer_lags(app: faust.App) -> list[PartitionLag]:
    """Per assigned partition: highwater minus the committed offset (Faust's own bookkeeping,
    no broker round trip); partitions whose highwater is not known yet are left out."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return []
    try:
        assigned = consumer.assignment()
    except Exception:  # not started, or between assignments
        return []
    lags = []
    for tp in assigned:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # revoked between assignment() and now
            continue
        lag = lag_of(highwater, consumer._committed_offset.get(tp), consumer._read_offset.get(tp))
        if lag is not None:
            lags.append(PartitionLag(tp.topic, tp.partition, lag))
    return lags


class HttpFace(Protocol):
    """What the heartbeat reads of the worker's HTTP server."""

    @property
    def port(self) -> int: ...

    @property
    def serving(self) -> bool: ...


ServeHttp = Callable[[faust.App, Settings, aioredis.Redis, str, WorkerProbe], HttpFace]


def build_worker_app(settings: Settings, name: str, serve_http: ServeHttp) -> faust.App:
    app = create_app(settings)
    counters: Counter[str] = Counter()
    redis_client = connect_async(settings)
    keys = Keys(settings.redis_prefix)
    state = {"ready": False, "partitions": 0}

    async def make_pipeline() -> OrderPipeline:
        routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
        sku_map = SkuMap.load(settings.config_dir / "sku_map.csv", routing.weights.grams)
        ctx = AdapterContext(sku_map=sku_map)
        return OrderPipeline(settings, connect_batched(settings), routing, ctx)

    register_intake(app, settings, make_pipeline, counters)
    register_operator(app, settings, make_pipeline, counters)
    if settings.sink_in_worker:
        register_sink(app, settings, counters)
    register_ledger(app, settings, counters)
    register_channel_stock(app, settings, counters)
    register_timers(app, settings, counters)
    register_order_inputs(app, settings, make_pipeline, counters)
    probe = WorkerProbe(app, settings, name, counters, redis_client, state)
    api = serve_http(app, settings, redis_client, name, probe)

    @app.task
    async def declare_topics() -> None:
        """Output topics exist before the first batch is sent (the agents' inputs Faust does)."""
        for spec in topics.ALL_TOPICS:
            await app.topic(
                spec.name(settings.topic_prefix), partitions=settings.partitions
            ).maybe_declare()

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
        try:
            await redis_client.set(keys.worker(name), orjson.dumps(value), ex=HEARTBEAT_TTL)
        except Exception as exc:  # Redis down: /health/ready says so; the timer must live on
            log.warning("heartbeat not written: %s", type(exc).__name__)

    return app


def run_worker(
    settings: Settings, name: str, serve_http: ServeHttp, loglevel: str = "info"
) -> None:
    """The process: logging (core/logs.py; Faust is told not to replace it, or its own colour
    handler would bypass the format and the masking), the event loop, then the worker."""
    setup_logging(settings.log_format, loglevel, component="worker", worker=name, quiet=())
    use_event_loop(settings.event_loop)
    app = build_worker_app(settings, name, serve_http)
    worker = faust.Worker(
        app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False
    )
    worker.spinner = None  # Faust drops it only when it sets up logging; it writes to stdout
    tune_collector()
    worker.execute_from_commandline()
