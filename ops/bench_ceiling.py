"""The ceiling of `./oms bench`: a Faust agent that consumes the raw channel topics and does
nothing else.

Why a ceiling: a rate alone says little on a shared, noisy 2-core machine. What the OMS adds on
top of "Faust reads a message" is the real cost of the design, so the bench measures, in the
same run and on the same broker, a Faust app that reads exactly the same messages the workers
read: the same raw topics (``agents.app.raw_topic``), the same Faust settings
(``agents.app.create_app``: linger, commit interval, start-up tuning) and the same batching
(``stream.take_events(batch_size, within=batch_within_s)``, as agents/intake.py). The only
difference left is the work.

Its consumer group is always ``<app_id>-ceiling`` (derived here, never taken from the caller),
so a ceiling started by mistake against a live stack reads its own copy of the topics and never
takes partitions away from the workers' group.

The messages are already on the topics when the ceiling starts, so the first process to join
its group would read everything before the others are even up, and a rebalance would pause the
rest: the ceiling would measure one process and a rebalance, not W processes. So each process
reports how many raw-topic partitions it was assigned, and its agent starts reading only once
the bench has seen every partition assigned and set the go key (:func:`go_key`). Partitions the
agent does not read yet are paused by Faust once its stream buffer is full.

Each process counts what it receives and keeps the wall-clock receive time of its first and last
batch. A timer, not the agent loop, writes ``{count, first, last, assigned, pid}`` to the Redis
hash :func:`ceiling_key` every 0.2 s, so the agent does nothing but count; the bench sums the
counts of all processes and computes messages / (last - first) over them.

Run by the bench as ``python -m ops.bench_ceiling --name c0`` with the OMS_* environment of
``ops.stack.child_env`` (the bench's own settings).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import faust
from faust.types import TP

from agents.app import create_app, raw_topic
from core.logs import setup_logging
from core.settings import Settings, get_settings
from state.redis import connect_async

FLUSH_EVERY_S = 0.2
GO_POLL_S = 0.02


def ceiling_app_id(settings: Settings) -> str:
    """The ceiling's app id and so its consumer group: never the workers' group."""
    return f"{settings.app_id}-ceiling"


def ceiling_key(settings: Settings, name: str) -> str:
    """Redis hash one ceiling process reports to: count, first, last (unix seconds), pid."""
    return f"{settings.redis_prefix}:bench-ceiling:{name}"


def go_key(settings: Settings) -> str:
    """Set by the bench once every ceiling process has its partitions: start reading."""
    return f"{settings.redis_prefix}:bench-ceiling-go"


class Tally:
    """Messages received and when the first and last batch arrived (wall clock)."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.assigned = 0  # raw-topic partitions of the latest assignment
        self.flushed: tuple[int, int] | None = None

    def add(self, n: int, now: float) -> None:
        if not self.count:
            self.first = now
        self.count += n
        self.last = now

    def snapshot(self) -> dict[str, str] | None:
        """What to write, or None when nothing changed since the last write."""
        if (self.count, self.assigned) == self.flushed:
            return None
        self.flushed = (self.count, self.assigned)
        return {
            "count": str(self.count),
            "first": repr(self.first),
            "last": repr(self.last),
            "assigned": str(self.assigned),
            "pid": str(os.getpid()),
        }


def build_ceiling_app(settings: Settings, name: str) -> faust.App:
    own = settings.model_copy(update={"app_id": ceiling_app_id(settings)})
    app = create_app(own)
    tally = Tally()
    redis_client = connect_async(own)
    key = ceiling_key(own, name)
    raw = raw_topic(app, own)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[TP], **kwargs: object) -> None:
        tally.assigned = sum(tp.topic in raw.topics for tp in assigned)

    @app.agent(raw, name="ceiling")
    async def ceiling(stream: faust.StreamT) -> None:
        while not await redis_client.exists(go_key(own)):
            await asyncio.sleep(GO_POLL_S)
        async for events in stream.take_events(own.batch_size, within=own.batch_within_s):
            tally.add(len(events), time.time())

    @app.timer(FLUSH_EVERY_S)
    async def report() -> None:
        fields = tally.snapshot()
        if fields is not None:
            await redis_client.hset(key, mapping=fields)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench_ceiling")
    parser.add_argument("--name", default="c0", help="reports under <prefix>:bench-ceiling:NAME")
    parser.add_argument("--loglevel", default="warning")
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_format, args.loglevel, component="bench-ceiling", worker=args.name)
    app = build_ceiling_app(settings, args.name)
    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker parses argv; keep ours out of it
    worker = faust.Worker(
        app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False, override_logging=False
    )
    worker.spinner = None  # Faust drops it only when it sets up logging; it writes to stdout
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
