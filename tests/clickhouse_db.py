"""A ClickHouse database of a test module's own on the test stack, dropped before and after,
so analytics tests never see each other's (or the pipeline's) facts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from analytics.client import drop_database
from analytics.facts import Fact
from analytics.reports import Report
from core.settings import Settings


def own_database(settings: Settings, name: str) -> Iterator[Settings]:
    """For a module fixture: ``yield from own_database(clickhouse_settings, "oms_test_x")``."""
    mine = settings.model_copy(update={"clickhouse_database": name})
    drop_database(mine)
    yield mine
    drop_database(mine)


async def report_after(settings: Settings, facts: Sequence[Fact]) -> Report:
    """``facts`` written through the real sink into ``settings``' database (schema made
    first), then the report over it."""
    from analytics.client import connect
    from analytics.reports import build_report
    from analytics.schema import ensure_schema
    from analytics.sink import FactSink

    ensure_schema(settings)
    sink = FactSink(settings)
    await sink.write(facts)
    await sink.close()
    return build_report(connect(settings))
