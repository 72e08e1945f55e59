"""The fact sink as a task of every worker (OMS_SINK_IN_WORKER=true), for single-process
deployments; by default it runs as a process of its own (analytics/sink_process.py)."""

from __future__ import annotations

from collections import Counter

import faust

from analytics.fact_consumer import run_fact_sink
from core.settings import Settings


def register_sink(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    @app.task
    async def facts() -> None:
        await run_fact_sink(settings, counters)
