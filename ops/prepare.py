"""Bring the stack to a state workers can run in: servers up, topics declared, ClickHouse
migrated, then the workers and the fact sink process (unless OMS_SINK_IN_WORKER=true; see
ops/stack.py ``wanted_aux``). Shared by `./oms up`, `./oms demo` and the test fixtures."""

from __future__ import annotations

from collections.abc import Callable

from analytics.client import connect as ch_connect
from analytics.client import ensure_database
from analytics.schema import migrate
from core.kafka import ensure_topics
from core.settings import Settings
from ops import stack
from streams.topics import topic_partitions


def prepare_infra(settings: Settings, progress: Callable[[str], None] | None = None) -> None:
    stack.up(settings, with_workers=False, progress=progress)
    ensure_topics(settings, topic_partitions(settings.topic_prefix, settings.partitions))
    ensure_database(settings)
    applied = migrate(ch_connect(settings), settings.clickhouse_database)
    if progress and applied:
        progress(f"ClickHouse migrations applied: {', '.join(applied)}")


def prepare_stack(
    settings: Settings,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[stack.ComponentStatus]:
    prepare_infra(settings, progress)
    return stack.up(settings, workers=workers, progress=progress)
