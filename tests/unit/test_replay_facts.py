"""Facts emitted again under the same ids with other content, through the real sink, on current
ClickHouse (chdb): the report counts each fact once, as its latest emission, before and after
merges. tests/integration/test_analytics_replay.py runs the same on 18.16.

This is the failure of issue 13 item 10 at its root: with a time in the sorting key (and a
monthly partition), two emissions of one event id stayed two rows for good, and a query that
took argMax by seq over raw rows, or any() per id, picked one of them at random.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from analytics.reports import build_report, processed_inputs
from analytics.schema import load_migrations, migrate
from analytics.sink import FactSink
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
from tests.analytics_scenario import (
    EXPECTED,
    LIFE_STOCK,
    STOCK,
    lifecycle_scenario,
    scenario,
)
from tests.unit import test_chdb_compat
from tests.unit.test_chdb_compat import ChdbClient, sink_for

session = test_chdb_compat.session  # its chdb session fixture, shared


@pytest.fixture
def new_db(session: Any) -> Iterator[Any]:
    """A factory of fresh, migrated databases, dropped after the test."""
    names: list[str] = []

    def make() -> ChdbClient:
        name = f"oms_replay_{uuid.uuid4().hex[:8]}"
        session.query(f"CREATE DATABASE {name}")
        names.append(name)
        client = ChdbClient(session, name)
        migrate(client, name)
        return client

    yield make
    for name in names:
        session.query(f"DROP DATABASE IF EXISTS {name}")


async def write_all(client: ChdbClient, batches: list[list[Any]], stock: list[Any]) -> FactSink:
    sink = sink_for(client)
    for batch in batches:
        await sink.write(batch)
    await sink.write_stock_movements(stock)
    return sink


def rows_and_ids(client: ChdbClient, final: bool = False) -> dict[str, tuple[int, int]]:
    """Per table: rows (under FINAL when asked) and distinct identities."""
    out = {}
    for table in TABLES:
        source = f"{table} FINAL" if final else table
        ((rows,),) = client.execute(f"SELECT count() FROM {source}")
        ((ids,),) = client.execute(f"SELECT {IDS[table]} FROM {table}")
        out[table] = (int(rows), int(ids))
    return out


def optimize(client: ChdbClient) -> None:
    for table in TABLES:
        client.execute(f"OPTIMIZE TABLE {table} FINAL")


async def test_re_emissions_with_other_content_count_once(new_db: Any) -> None:
    """Three emissions of every fact of the scenario (times weeks and milliseconds apart,
    decimals re-serialised, other detail and actor), in six batches, the oldest last."""
    db = new_db()
    sink = await write_all(db, every_emission(scenario()), STOCK)
    # 13 events, 6 times over (the first emission three times, the batch holding the first
    # and the latest keeps both): every emission reached ClickHouse
    assert sink.rows_written["order_events"] == 13 * 6
    assert build_report(db).to_dict() == EXPECTED  # whatever was merged by now
    assert processed_inputs(db) == 10

    # every row of one fact sorts under one key in one partition: FINAL and merges collapse
    # each fact to one row (a time in the key kept the emissions apart for good)
    final = rows_and_ids(db, final=True)
    assert all(rows == ids for rows, ids in final.values()), final
    optimize(db)
    assert all(rows == ids for rows, ids in rows_and_ids(db).values())
    assert build_report(db).to_dict() == EXPECTED


async def test_lifecycle_re_emissions_read_as_their_latest(new_db: Any) -> None:
    """Commands, WMS answers and after-sales requests too; times moved, so the figures are
    those of a database that only ever saw the latest emissions."""
    everything, latest_only = new_db(), new_db()
    items = lifecycle_scenario()
    await write_all(everything, every_emission(items), LIFE_STOCK)
    await write_all(latest_only, [latest_emissions(items)], LIFE_STOCK)
    expected = build_report(latest_only, by="minute").to_dict()
    assert build_report(everything, by="minute").to_dict() == expected
    optimize(everything)
    assert build_report(everything, by="minute").to_dict() == expected
    assert expected["commands_by_kind"] == {"intercept": 1, "outbound": 5, "return_inbound": 1}


async def test_a_redecided_event_replaces_its_first_emission(new_db: Any) -> None:
    """Same event ids, other allocations, reason and snapshot, emitted later: the report
    follows the later emission, also when the first one is redelivered after it."""
    everything, latest_only = new_db(), new_db()
    first, again = redecided()
    await write_all(everything, [first, again, first], STOCK)
    await write_all(latest_only, [replace_first(first, again)], STOCK)
    expected = build_report(latest_only).to_dict()
    got = build_report(everything).to_dict()
    assert got == expected
    assert {k: got[k] for k in REDECIDED} == REDECIDED
    assert got["orders_in"] == EXPECTED["orders_in"] and got["accepted"] == EXPECTED["accepted"]
    optimize(everything)
    assert build_report(everything).to_dict() == expected


async def test_0006_keys_an_existing_database_by_id(session: Any) -> None:
    """A database written before 0006 (replays kept apart by their times, rows without rev)
    is rebuilt in place: the same report, one row per fact under FINAL, the old tables kept as
    __pre0006; running 0006 again (a crash before its bookkeeping row) changes nothing."""
    name = f"oms_replay_{uuid.uuid4().hex[:8]}"
    session.query(f"CREATE DATABASE {name}")
    client = ChdbClient(session, name)
    migrations = load_migrations()
    migrate(client, name, [m for m in migrations if m.version < 6])
    for batch in every_emission(scenario()):
        for insert, rows in inserts_before_0006(batch):
            client.execute(insert, rows)
    await sink_for(client).write_stock_movements(STOCK)
    ((rows,),) = client.execute("SELECT count() FROM order_events FINAL")
    assert rows == 13 * 3  # before: each emission a row of its own for good

    assert migrate(client, name, [m for m in migrations if m.version <= 6]) == [
        "0006_facts_keyed_by_id"
    ]
    assert build_report(client).to_dict() == EXPECTED
    assert all(rows == ids for rows, ids in rows_and_ids(client, final=True).values())
    tables = {
        r[0] for r in client.execute(f"SELECT name FROM system.tables WHERE database = '{name}'")
    }
    assert {f"{t}__pre0006" for t in TABLES} <= tables
    assert not {t for t in tables if t.endswith("__0006")}

    (m6,) = [m for m in migrations if m.version == 6]
    migrate(client, name, [replace(m6, version=99)])
    assert build_report(client).to_dict() == EXPECTED
    assert all(rows == ids for rows, ids in rows_and_ids(client, final=True).values())
    assert migrate(client, name) == ["0007_order_search_keys"]  # what came after
    await write_all(client, [scenario()], STOCK)  # the sink of today, on top
    assert build_report(client).to_dict() == EXPECTED
    session.query(f"DROP DATABASE {name}")
