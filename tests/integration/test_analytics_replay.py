"""ClickHouse 18.16 side of tests/unit/test_replay_facts.py: facts emitted again under their ids
with other content, through the real sink and migrations, count once, as their latest
emission, before and after merges. Two databases of the module's own, dropped before and
after: one gets every emission, the other only the latest ones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from clickhouse_driver import Client

from analytics.client import connect, ensure_database
from analytics.reports import build_report, processed_inputs
from analytics.schema import ensure_schema, load_migrations, migrate
from analytics.sink import FactSink
from core.settings import Settings
from tests.analytics_replays import (
    IDS,
    REDECIDED,
    TABLES,
    every_emission,
    inserts_before_0006,
    latest_emissions,
    redecided,
    replace_first,
)
from tests.analytics_scenario import EXPECTED, LIFE_STOCK, STOCK, lifecycle_scenario, scenario
from tests.clickhouse_db import drop_database, own_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def everything(clickhouse_settings: Settings) -> Iterator[Settings]:
    yield from own_database(clickhouse_settings, "oms_test_replay_all")


@pytest.fixture(scope="module")
def latest_only(clickhouse_settings: Settings) -> Iterator[Settings]:
    yield from own_database(clickhouse_settings, "oms_test_replay_latest")


def fresh(settings: Settings) -> Client:
    """The database emptied and migrated again, and a client of it."""
    drop_database(settings)
    ensure_schema(settings)
    return connect(settings)


async def write_all(settings: Settings, batches: list[list[Any]], stock: list[Any]) -> None:
    sink = FactSink(settings)
    for batch in batches:
        await sink.write(batch)
    await sink.write_stock_movements(stock)
    await sink.close()


def optimize(client: Client) -> None:
    for table in TABLES:
        client.execute(f"OPTIMIZE TABLE {table} FINAL")


async def test_re_emissions_with_other_content_count_once(everything: Settings) -> None:
    client = fresh(everything)
    await write_all(everything, every_emission(scenario()), STOCK)
    assert build_report(client).to_dict() == EXPECTED
    assert processed_inputs(client) == 10
    ((rows, ids),) = client.execute(
        "SELECT (SELECT count() FROM order_events FINAL), uniqExact(event_id) FROM order_events"
    )
    assert rows == ids == 13  # one sorting key and partition per fact: FINAL collapses them
    optimize(client)
    assert build_report(client).to_dict() == EXPECTED
    assert client.execute("SELECT count() FROM order_events")[0][0] == 13


async def test_lifecycle_re_emissions_read_as_their_latest(
    everything: Settings, latest_only: Settings
) -> None:
    items = lifecycle_scenario()
    all_client, latest_client = fresh(everything), fresh(latest_only)
    await write_all(everything, every_emission(items), LIFE_STOCK)
    await write_all(latest_only, [latest_emissions(items)], LIFE_STOCK)
    expected = build_report(latest_client, by="minute").to_dict()
    assert build_report(all_client, by="minute").to_dict() == expected
    optimize(all_client)
    assert build_report(all_client, by="minute").to_dict() == expected


async def test_a_redecided_event_replaces_its_first_emission(
    everything: Settings, latest_only: Settings
) -> None:
    first, again = redecided()
    all_client, latest_client = fresh(everything), fresh(latest_only)
    await write_all(everything, [first, again, first], STOCK)
    await write_all(latest_only, [replace_first(first, again)], STOCK)
    expected = build_report(latest_client).to_dict()
    got = build_report(all_client).to_dict()
    assert got == expected
    assert {k: got[k] for k in REDECIDED} == REDECIDED
    optimize(all_client)
    assert build_report(all_client).to_dict() == expected


def final_rows_and_ids(client: Client) -> dict[str, tuple[int, int]]:
    """Per table: rows under FINAL, and distinct identities."""
    return {
        t: client.execute(f"SELECT (SELECT count() FROM {t} FINAL), {IDS[t]} FROM {t}")[0]
        for t in TABLES
    }


async def test_0006_keys_an_existing_database_by_id(everything: Settings) -> None:
    """A database written before 0006 is rebuilt in place on 18.16: same report, one row per
    fact under FINAL, a second run of 0006 (a crash before its bookkeeping row) a no-op."""
    drop_database(everything)
    ensure_database(everything)
    client = connect(everything)
    migrations = load_migrations()
    migrate(client, everything.clickhouse_database, [m for m in migrations if m.version < 6])
    for batch in every_emission(scenario()):
        for insert, rows in inserts_before_0006(batch):
            client.execute(insert, rows, types_check=False)
    sink = FactSink(everything, setup=None)
    await sink.write_stock_movements(STOCK)
    assert final_rows_and_ids(client)["order_events"] == (13 * 3, 13)

    later = [m.name for m in migrations if m.version > 6]  # and what came after it
    assert migrate(client, everything.clickhouse_database) == ["0006_facts_keyed_by_id", *later]
    assert build_report(client).to_dict() == EXPECTED
    assert all(rows == ids for rows, ids in final_rows_and_ids(client).values())
    (m6,) = [m for m in migrations if m.version == 6]
    migrate(client, everything.clickhouse_database, [replace(m6, version=99)])
    assert build_report(client).to_dict() == EXPECTED
    assert all(rows == ids for rows, ids in final_rows_and_ids(client).values())
    await sink.write(scenario())  # the sink of today, on top
    await sink.close()
    assert build_report(client).to_dict() == EXPECTED
