"""A ClickHouse database of a test module's own on the test stack, dropped before and after,
so analytics tests never see each other's (or the pipeline's) facts."""

from __future__ import annotations

from collections.abc import Iterator

from analytics.client import drop_database
from core.settings import Settings


def own_database(settings: Settings, name: str) -> Iterator[Settings]:
    """For a module fixture: ``yield from own_database(clickhouse_settings, "oms_test_x")``."""
    mine = settings.model_copy(update={"clickhouse_database": name})
    drop_database(mine)
    yield mine
    drop_database(mine)
