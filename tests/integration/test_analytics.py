"""ClickHouse 18.16 side (the local stack's server): migrations, FactSink and the report.

Needs the ``clickhouse_settings`` fixture from tests/conftest.py (the running test stack).
Uses its own database, dropped before and after. The scenario is the same as in
tests/unit/test_chdb_compat.py (current ClickHouse), so both versions must give the same,
exact numbers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from clickhouse_driver import Client

from analytics.client import connect
from analytics.reports import QUERIES, build_report, processed_inputs
from analytics.schema import ensure_schema, load_migrations
from analytics.sink import FactSink
from core.settings import Settings
from tests.analytics_scenario import EXPECTED, STOCK, T0, scenario
from tests.clickhouse_db import drop_database, own_database

pytestmark = pytest.mark.integration

DATABASE = "oms_test_analytics"
FACT_TABLES = ("order_events", "orders", "order_lines", "dlq", "stock_movements")


# The shared scenario: tests.analytics_scenario

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def settings(clickhouse_settings: Settings) -> Iterator[Settings]:
    yield from own_database(clickhouse_settings, DATABASE)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    ensure_schema(settings)
    c = connect(settings)
    yield c
    c.disconnect()


@pytest.fixture(scope="module")
async def loaded(settings: Settings, client: Client) -> None:
    """The scenario written once, through the real sink (which also runs the migrations)."""
    sink = FactSink(settings)
    await sink.write(scenario())
    await sink.write_stock_movements(STOCK)
    await sink.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- tests


def test_migrations_idempotent(settings: Settings) -> None:
    drop_database(settings)
    assert ensure_schema(settings) == [m.name for m in load_migrations()]
    assert ensure_schema(settings) == []


async def test_report_exact_on_replay(settings: Settings, client: Client, loaded: None) -> None:
    assert build_report(client).to_dict() == EXPECTED

    sink = FactSink(settings)
    items = scenario()
    await sink.write(items)  # full replay
    await sink.write(items[:7])  # and a replay split across two inserts
    await sink.write(items[7:])
    await sink.write_stock_movements(STOCK)
    assert sink.retries == 0 and sink.rows_written["order_events"] == 26
    assert build_report(client).to_dict() == EXPECTED  # before any merge
    assert processed_inputs(client) == 10

    for table in FACT_TABLES:
        client.execute(f"OPTIMIZE TABLE {table} FINAL")
    assert build_report(client).to_dict() == EXPECTED  # and after
    assert client.execute("SELECT count() FROM order_events")[0][0] == 13


async def test_every_query_and_view_runs(client: Client, loaded: None) -> None:
    for sql in QUERIES.values():
        client.execute(sql, {"since": 0})
    rows = client.execute(
        "SELECT channel, sku, state, orders, units, gmv FROM sales_per_minute "
        "ORDER BY channel, sku, state"
    )
    assert rows[-1] == ("taobao", "B", "released", 1, 1, Decimal("5.01"))
    late = build_report(client, since=T0 + timedelta(minutes=30))
    assert late.orders_in == 1 and late.dlq_total == 0


async def test_sink_retries_until_clickhouse_is_reachable(
    settings: Settings, client: Client, loaded: None
) -> None:
    """Starts against a closed port; the batch is retried with backoff, then lands once the
    address is fixed, and the write returns only then."""
    target = {"settings": settings.model_copy(update={"clickhouse_port": closed_port()})}

    sink = FactSink(
        settings,
        lambda _s: connect(target["settings"]),
        setup=lambda _s: ensure_schema(target["settings"]),
        base_delay_s=0.05,
        max_delay_s=0.2,
    )
    task = asyncio.create_task(sink.write(scenario()))
    async with asyncio.timeout(30):
        while sink.retries < 3:
            await asyncio.sleep(0.02)
    assert not task.done()
    assert sink.consecutive_failures >= 3 and sink.last_error
    target["settings"] = settings
    await asyncio.wait_for(task, timeout=30)
    assert sink.consecutive_failures == 0 and sink.batches_written == 1
    assert build_report(client).to_dict() == EXPECTED
