"""The fact sink as a process of its own (`./oms sink`; `./oms up` runs one with the workers).

In a worker the sink's parsing blocked the event loop (5,000 records about 135 ms at a time)
and its row building held the GIL, so intake batches waited behind it; in its own process it
only competes for a core (docs/decisions/0009-fact-sink-process.md). The loop is the same
``run_fact_sink`` a worker runs with OMS_SINK_IN_WORKER=true.

The process adds a heartbeat in Redis (``ops.stack.sink_heartbeat_key``: outside
``<prefix>:worker:``, so it is not listed as a worker) every 2 s with a 10 s TTL:
``{"pid", "ready", "partitions", "ts", "counters"}``, the counters being the sink's own
(``facts``, ``bad_facts``, ``sink_*``). Ready = the consumer has partitions.

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
from redis.asyncio import Redis

from agents.sink import FACT_TOPICS, run_fact_sink
from agents.worker import use_event_loop
from ops import stack
from ops.settings import Settings
from state.redis import connect_async

log = logging.getLogger("oms.sink")

HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 10
# On SIGTERM the batch in hand may take this long to land and commit; the stack waits
# ops.stack.SINK_STOP_TIMEOUT_S before it kills.
STOP_GRACE_S = 5.0


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
    key = stack.sink_heartbeat_key(settings)
    sink = asyncio.create_task(run_fact_sink(settings, counters, stop=stop), name="fact-sink")
    beats = asyncio.create_task(heartbeat_forever(client, key, counters), name="sink-heartbeat")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({sink, stopping}, return_when=asyncio.FIRST_COMPLETED)
        await finish(sink, STOP_GRACE_S)
    finally:
        for task in (beats, stopping):
            task.cancel()
        await asyncio.wait({beats, stopping})
        with contextlib.suppress(Exception):
            await client.delete(key)
        await client.aclose()
    return counters


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
    specs = [(spec.name(settings), settings.partitions) for spec in FACT_TOPICS]
    try:
        stack.ensure_topics(settings, specs)
    except Exception as exc:  # broker down or refusing: one line, not a traceback
        raise SinkStartError(
            f"Kafka at {settings.kafka_bootstrap} not usable ({type(exc).__name__}: {exc}); "
            "is the stack up? ./oms status"
        ) from exc


def run_sink(settings: Settings, loglevel: str = "info") -> Counter[str]:
    """The process: logging, topics, the configured event loop, then the sink until a signal."""
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for noisy in ("aiokafka", "kafka"):  # connection chatter at INFO would bury the sink's lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ensure_fact_topics(settings)
    use_event_loop(settings.event_loop)
    log.info("sink starting: group %s-facts, loop %s", settings.app_id, settings.event_loop)
    counters = asyncio.run(run_until_signalled(settings))
    log.info("sink stopped: %d facts, %d not facts", counters["facts"], counters["bad_facts"])
    return counters
