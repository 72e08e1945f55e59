"""ClickHouse 18.16 side of the fulfilment and after-sales report (issue 5): the lifecycle
scenario (events, commands, WMS answers, after-sales requests, ledger) written twice through
the real sink must give exactly the numbers current ClickHouse gives in
tests/unit/test_chdb_compat.py (tests.analytics_scenario.LIFE_EXPECTED)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_driver import Client

from analytics.client import connect
from analytics.reports import QUERIES, build_report
from analytics.schema import ensure_schema
from analytics.sink import FactSink
from core.settings import Settings
from tests.analytics_scenario import LIFE_EXPECTED, LIFE_STOCK, TL, lifecycle_scenario
from tests.clickhouse_db import own_database

pytestmark = pytest.mark.integration

DATABASE = "oms_test_analytics_life"
TABLES = (
    "order_events",
    "orders",
    "order_lines",
    "stock_movements",
    "fulfilment_commands",
    "wms_events",
    "aftersales_requests",
    "sales_by_minute",
)


@pytest.fixture(scope="module")
def settings(clickhouse_settings: Settings) -> Iterator[Settings]:
    yield from own_database(clickhouse_settings, DATABASE)


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[Client]:
    """The scenario written twice (a replay), the second time in two inserts."""
    ensure_schema(settings)
    sink = FactSink(settings)
    items = lifecycle_scenario()
    await sink.write(items)
    await sink.write_stock_movements(LIFE_STOCK)
    await sink.write(items[:20])
    await sink.write(items[20:])
    await sink.write_stock_movements(LIFE_STOCK)
    await sink.close()
    assert sink.retries == 0
    c = connect(settings)
    yield c
    c.disconnect()


def subset(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in LIFE_EXPECTED}


def test_report_exact_after_a_replay(client: Client) -> None:
    assert client.execute("SELECT count() FROM fulfilment_commands")[0][0] == 14  # two copies
    assert subset(build_report(client, by="minute").to_dict()) == LIFE_EXPECTED
    for table in TABLES:
        client.execute(f"OPTIMIZE TABLE {table} FINAL")
    assert subset(build_report(client, by="minute").to_dict()) == LIFE_EXPECTED
    assert client.execute("SELECT count() FROM fulfilment_commands")[0][0] == 7


def test_per_minute_sums(client: Client) -> None:
    """The MV target, read the replay-safe way, gives the lines' sums per minute exactly."""
    rows = client.execute(QUERIES["sales_by_minute"], {"since": 0})
    assert [(r[0].replace(tzinfo=None), r[1], r[3], r[4]) for r in rows] == [
        ((TL + timedelta(minutes=0)).replace(tzinfo=None), "jd", 2, Decimal("133.3333")),
        ((TL + timedelta(minutes=1)).replace(tzinfo=None), "douyin", 2, Decimal("89.96")),
    ]
    hourly = build_report(client, by="hour").to_dict()["sales_series"]
    assert [(r["channel"], r["orders"], r["gmv"]) for r in hourly] == [
        ("douyin", 2, "89.96"),
        ("jd", 2, "133.3333"),
    ]


def test_since_window(client: Client) -> None:
    """Only L5 (placed at 10:02) is first seen after 10:01:55: held, nothing shipped."""
    late = build_report(client, since=TL + timedelta(seconds=115), by="minute").to_dict()
    assert late["orders_in"] == 1 and late["held"] == 1
    assert late["sales_series"] == [] and late["gmv_by_shop"] == []
    assert late["fulfilment_latency"] == {"shipped_orders": 0, "p50_s": None, "p95_s": None}
    assert late["aftersales_requests"] == {
        "address_change": {"requests": 1, "orders": 1, "amount": None}
    }


def test_no_personal_data(client: Client) -> None:
    for table in ("fulfilment_commands", "wms_events", "aftersales_requests"):
        dump = repr(client.execute(f"SELECT * FROM {table}"))
        for secret in ("Zhang San", "13800000000", "West Lake"):
            assert secret not in dump, (table, secret)
