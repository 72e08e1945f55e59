"""The fact sink as a process of its own (`./oms sink`; `./oms up` runs one with the workers).

In a worker the sink's parsing blocked the event loop (5,000 records about 135 ms at a time)
and its row building held the GIL, so intake batches waited behind it; in its own process it
only competes for a core (docs/decisions/0009-fact-sink-process.md). The loop is the same
``run_fact_sink`` a worker runs with OMS_SINK_IN_WORKER=true.

The process adds a heartbeat in Redis (``ops.sink_heartbeat_key``: outside
``<prefix>:worker:``, so it is not listed as a worker) every 2 s with a 10 s TTL:
``{"pid", "ready", "partitions", "ts", "counters"}``, the counters being the sink's own
(``facts``, ``bad_facts``, ``sink_*``). Ready = the consumer has partitions.

It also serves its own probes and metrics on OMS_WORKER_WEB_HOST:OMS_SINK_WEB_PORT (default the
worker web port - 1): ``/health`` and ``/health/live`` (up), ``/health/ready`` (its consumer has
partitions and ClickHouse takes its writes), ``/metrics`` (core/metrics.py: facts landed,
failed flushes, outages, and the backlog: the fact group's lag, measured every few seconds by
a client of its own from the committed offsets, so it counts every fact not yet confirmed in
ClickHouse, the batch in hand included). A port clash costs the endpoint, never the sinking.

SIGTERM and SIGINT stop it cleanly: the batch in hand lands and is committed, then the
consumer leaves its group. A batch that cannot land within the grace (ClickHouse down) is
abandoned uncommitted and replayed by the next sink: offsets are committed only once
ClickHouse has the rows, so even a kill loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from analytics.fact_consumer import FACT_TOPICS, fact_offsets, offset_clients, run_fact_sink
from core.collector import tune_collector
from core.health import (
    Readiness,
    add_probe_routes,
    metrics_token,
    redis_error,
    sink_readiness,
)
from core.heartbeat import sink_heartbeat_key
from core.kafka import ensure_topics
from core.logs import setup_logging
from core.loop import use_event_loop
from core.metrics import PartitionLag, Snapshot, render
from core.retry import Backoff
from core.settings import Settings
from state.redis import connect_async
from streams.messages import DlqReason

log = logging.getLogger("oms.sink")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 10
# On SIGTERM the batch in hand may take this long to land and commit; the stack waits
# ops.stack.SINK_STOP_TIMEOUT_S before it kills.
STOP_GRACE_S = 5.0
LAG_EVERY_S = 2.0  # how often the backlog is measured (two small broker requests)
LAG_TIMEOUT_S = 5.0
LAG_RETRY = Backoff(LAG_EVERY_S, 30.0)  # new clients after a failure: a broker down stays quiet
NAME = "sink"


class SinkStartError(RuntimeError):
    """The sink cannot start (the broker refuses its topics); the message says what to do."""


def heartbeat_value(pid: int, counters: Mapping[str, int], now: float) -> dict[str, Any]:
    """What the sink announces: ready once its consumer has partitions (``sink_partitions``,
    set by run_fact_sink at every batch), and its counters."""
    partitions = int(counters.get("sink_partitions", 0))
    return {
        "pid": pid,
        "ready": partitions > 0,
        "partitions": partitions,
        "ts": now,
        "counters": dict(counters),
    }


async def beat(client: Redis, key: str, counters: Mapping[str, int]) -> None:
    """One heartbeat; Redis down only costs a log line (status will say the sink is down)."""
    value = orjson.dumps(heartbeat_value(os.getpid(), counters, time.time()))
    try:
        await client.set(key, value, ex=HEARTBEAT_TTL_S)
    except Exception as exc:  # keep sinking: ClickHouse is what matters here
        log.warning("heartbeat not written: %s", type(exc).__name__)


async def heartbeat_forever(client: Redis, key: str, counters: Mapping[str, int]) -> None:
    while True:
        await beat(client, key, counters)
        await asyncio.sleep(HEARTBEAT_S)


async def finish(task: asyncio.Task[None], grace_s: float) -> None:
    """Let ``task`` end by itself within ``grace_s``, else cancel it; re-raises its crash."""
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        log.warning("sink: batch not landed within %.0f s of the stop; left uncommitted", grace_s)
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled():
        task.result()


async def serve(settings: Settings, stop: asyncio.Event) -> Counter[str]:
    """Run the sink and its heartbeat until ``stop`` is set or the sink fails (then its
    exception propagates, so a supervisor restarts the process); the heartbeat is removed."""
    counters: Counter[str] = Counter()
    client = connect_async(settings)
    key = sink_heartbeat_key(settings)
    sink = asyncio.create_task(run_fact_sink(settings, counters, stop=stop), name="fact-sink")
    beats = asyncio.create_task(heartbeat_forever(client, key, counters), name="sink-heartbeat")
    lags = FactLag(settings, counters)
    sampling = asyncio.create_task(lags.run(), name="sink-lag")
    stopping = asyncio.create_task(stop.wait())
    web_runner = await serve_probes(settings, SinkProbe(settings, counters, client, sink, lags))
    try:
        await asyncio.wait({sink, stopping}, return_when=asyncio.FIRST_COMPLETED)
        await finish(sink, STOP_GRACE_S)
    finally:
        if web_runner is not None:
            await web_runner.cleanup()
        for task in (beats, sampling, stopping):
            task.cancel()
        await asyncio.wait({beats, sampling, stopping})
        with contextlib.suppress(Exception):
            await client.delete(key)
        await client.aclose()
    return counters


class FactLag:
    """The fact group's lag per partition (end offset - committed offset), measured by an
    admin client and a group-less consumer of its own: the sink's consumer is busy in its
    loop, and the committed offsets are the truth about what is safely in ClickHouse."""

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self.settings, self.counters = settings, counters
        self.lags: list[PartitionLag] = []
        self.measured = False

    @property
    def backlog(self) -> int | None:
        return sum(lag.lag for lag in self.lags) if self.measured else None

    async def run(self) -> None:
        """Measure until cancelled; clients that fail (the broker not up yet, gone for a while)
        are made again after a jittered backoff (LAG_RETRY), and the gauge says "not measured"
        meanwhile."""
        failures = 0
        while True:
            try:
                await self._measure_with_new_clients()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the backlog is for people; the sinking goes on without it
                log.warning("sink backlog not measured, retrying: %s", type(exc).__name__)
            failures = 1 if self.measured else failures + 1  # measured: a new run of failures
            self.measured = False
            await asyncio.sleep(LAG_RETRY.delay(failures))

    async def _measure_with_new_clients(self) -> None:
        async with offset_clients(self.settings, LAG_TIMEOUT_S) as (admin, consumer):
            while True:
                await self.sample(admin, consumer)
                await asyncio.sleep(LAG_EVERY_S)

    async def sample(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
        try:
            self.lags = await asyncio.wait_for(self.measure(admin, consumer), LAG_TIMEOUT_S)
        except (TimeoutError, OSError, ConnectionError, KafkaError) as exc:
            log.warning("sink backlog not measured: %s", type(exc).__name__)
            self.measured = False  # a stale figure would read as a real one
            return
        self.measured = True
        self.counters["sink_backlog"] = sum(lag.lag for lag in self.lags)  # heartbeat too

    async def measure(
        self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer
    ) -> list[PartitionLag]:
        ends, committed = await fact_offsets(admin, consumer, self.settings)
        return [
            PartitionLag(tp.topic, tp.partition, max(0, end - committed[tp]))
            for tp, end in ends.items()
        ]


class SinkProbe:
    """Readiness and metrics of the sink process."""

    name = NAME

    def __init__(
        self,
        settings: Settings,
        counters: Counter[str],
        client: Redis,
        sink: asyncio.Task[None],
        lags: FactLag,
    ) -> None:
        self.settings, self.counters, self.client = settings, counters, client
        self.sink, self.lags = sink, lags

    async def readiness(self) -> Readiness:
        return sink_readiness(
            running=not self.sink.done(),
            partitions=int(self.counters.get("sink_partitions", 0)),
            clickhouse_failures=int(self.counters.get("sink_consecutive_failures", 0)),
            redis_error=await redis_error(self.client, self.settings.health_timeout_s),
        )

    async def metrics(self) -> bytes:
        readiness = await self.readiness()
        snapshot = Snapshot(
            component="sink",
            dlq_reasons=tuple(DlqReason),
            name=NAME,
            ready=readiness.ready,
            counters=dict(self.counters),
            lags=self.lags.lags,
            partitions=int(self.counters.get("sink_partitions", 0)),
            backlog=self.lags.backlog,
        )
        return render(snapshot)


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "name": NAME})


async def serve_probes(settings: Settings, probe: SinkProbe) -> web.AppRunner | None:
    """/health, /health/live, /health/ready and /metrics on the sink's port; None when the port
    cannot be bound (logged: the sink goes on, only its endpoint is missing)."""
    app = web.Application()
    app.router.add_get("/health", get_health)
    token = metrics_token(settings)
    add_probe_routes(app, probe, token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = settings.worker_web_host, settings.sink_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("sink metrics and health not served on %s:%s: %s", host, port, exc)
        await runner.cleanup()
        return None
    log.info("sink metrics and health on http://%s:%s", host, port)
    return runner


async def run_until_signalled(settings: Settings) -> Counter[str]:
    """SIGTERM (``./oms down``) and SIGINT (Ctrl-C) end the sink cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await serve(settings, stop)


def ensure_fact_topics(settings: Settings) -> None:
    """The fact topics exist before the consumer subscribes (the local broker forgets topics
    on a restart, and the sink may start before any worker has declared them)."""
    specs = [(spec.name(settings.topic_prefix), settings.partitions) for spec in FACT_TOPICS]
    try:
        ensure_topics(settings, specs)
    except Exception as exc:  # broker down or refusing: one line, not a traceback
        raise SinkStartError(
            f"Kafka at {settings.kafka_bootstrap} not usable ({type(exc).__name__}: {exc}); "
            "is the stack up? ./oms status"
        ) from exc


def run_sink(settings: Settings, loglevel: str = "info") -> Counter[str]:
    """The process: logging, topics, the configured event loop, then the sink until a signal."""
    setup_logging(settings.log_format, loglevel, component=NAME)  # quiets aiokafka's chatter
    ensure_fact_topics(settings)
    use_event_loop(settings.event_loop)
    tune_collector()
    log.info("sink starting: group %s-facts, loop %s", settings.app_id, settings.event_loop)
    counters = asyncio.run(run_until_signalled(settings))
    log.info("sink stopped: %d facts, %d not facts", counters["facts"], counters["bad_facts"])
    return counters
