"""Current-ClickHouse side of the schema and report contract, proven in-process with chdb.

Applies every migration and runs every report query (``reports.QUERIES``) on the ClickHouse
engine that chdb embeds, through the same code paths as production (``migrate``, ``FactSink``,
``build_report``) via a small shim with clickhouse-driver's ``execute`` signature. The 18.16
side is covered by tests/integration/test_analytics.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import chdb.session as chdb_session  # a test dependency: its absence must fail, not skip
import pytest

from analytics import reports
from analytics.reports import QUERIES, build_report, processed_inputs
from analytics.schema import load_migrations, migrate
from analytics.sink import FactSink, SinkUnavailable
from core.settings import Settings
from streams.messages import OrderEvent
from tests.analytics_replays import inserts_before_0006
from tests.analytics_scenario import (
    EXPECTED,
    LIFE_EXPECTED,
    LIFE_STOCK,
    STOCK,
    T0,
    lifecycle_scenario,
    scenario,
)

# ---------------------------------------------------------------- chdb shim


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("'%Y-%m-%d %H:%M:%S'")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)  # int, Decimal: exact text, parsed as the column's type


def _split_type(args: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in args:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return [*parts, cur.strip()] if cur.strip() else parts


def _convert(value: Any, ch_type: str) -> Any:
    m = re.match(r"^(\w+)\((.*)\)$", ch_type)
    name, args = (m.group(1), m.group(2)) if m else (ch_type, "")
    if name == "Nullable":
        return None if value is None else _convert(value, args)
    if name == "Array":
        return [_convert(v, args) for v in value]
    if name == "Tuple":
        return tuple(_convert(v, t) for v, t in zip(value, _split_type(args), strict=True))
    if name.startswith("Decimal"):
        return Decimal(str(value))
    if re.match(r"^U?Int\d+$", name):
        return int(value)
    if name == "DateTime":
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return value


class ChdbClient:
    """clickhouse-driver's ``execute`` on top of a chdb session (results as lists of tuples)."""

    def __init__(self, session: Any, database: str) -> None:
        self.session = session
        self.database = database
        self.queries: list[str] = []

    def execute(self, query: str, params: Any = None, **_: Any) -> list[tuple[Any, ...]]:
        self.session.query(f"USE {self.database}")
        if query.rstrip().upper().endswith("VALUES"):
            rows = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in params)
            sql = f"{query} {rows}"
        elif isinstance(params, dict):
            sql = query % {k: _literal(v) for k, v in params.items()}
        else:
            sql = query
        self.queries.append(sql)
        raw = self.session.query(sql, "JSONCompact").bytes()
        if not raw.strip():
            return []
        doc = json.loads(raw)
        types = [c["type"] for c in doc["meta"]]
        return [
            tuple(_convert(v, t) for v, t in zip(row, types, strict=True)) for row in doc["data"]
        ]


@pytest.fixture(scope="module")
def session() -> Iterator[Any]:
    with tempfile.TemporaryDirectory() as path:
        sess = chdb_session.Session(path)
        sess.query("SET output_format_json_quote_decimals = 1")
        sess.query("SET output_format_json_quote_64bit_integers = 1")
        yield sess
        sess.close()


@pytest.fixture
def db(session: Any) -> Iterator[ChdbClient]:
    """A fresh, migrated database per test."""
    name = f"oms_chdb_{uuid.uuid4().hex[:8]}"
    session.query(f"CREATE DATABASE {name}")
    client = ChdbClient(session, name)
    migrate(client, name)
    yield client
    session.query(f"DROP DATABASE IF EXISTS {name}")


def sink_for(client: ChdbClient, **kwargs: Any) -> FactSink:
    settings = Settings(clickhouse_database=client.database)
    kwargs.setdefault("setup", None)
    return FactSink(settings, lambda _s: client, **kwargs)


# ---------------------------------------------------------------- schema


def test_every_migration_applies_once(session: Any) -> None:
    name = f"oms_chdb_{uuid.uuid4().hex[:8]}"
    session.query(f"CREATE DATABASE {name}")
    client = ChdbClient(session, name)
    assert migrate(client, name) == [m.name for m in load_migrations()]
    assert migrate(client, name) == []
    tables = {
        r[0] for r in client.execute(f"SELECT name FROM system.tables WHERE database = '{name}'")
    }
    assert {
        "schema_migrations",
        "order_events",
        "orders",
        "order_lines",
        "dlq",
        "stock_movements",
        "order_status",
        "order_latest",
        "order_lines_latest",
        "sales_per_minute",
        "fulfilment_commands",
        "wms_events",
        "aftersales_requests",
        "sales_by_minute",
        "sales_by_minute_mv",
    } <= tables
    session.query(f"DROP DATABASE {name}")


def test_every_report_query_runs_on_empty_tables(db: ChdbClient) -> None:
    for sql in QUERIES.values():
        db.execute(sql, {"since": 0})
    report = build_report(db)
    assert report.orders_in == 0 and report.gmv_by_channel_currency == []
    assert report.gmv_by_channel == {} and not report.stock_checked


# ---------------------------------------------------------------- report on current ClickHouse


async def test_report_exact_and_replay_safe(db: ChdbClient) -> None:
    sink = sink_for(db)
    await sink.write(scenario())
    await sink.write_stock_movements(STOCK)
    first = build_report(db).to_dict()
    assert first == EXPECTED

    # replay: the whole batch again, then in two halves (separate, unmerged parts)
    items = scenario()
    await sink.write(items)
    await sink.write(items[:7])
    await sink.write(items[7:])
    await sink.write_stock_movements(STOCK)
    assert build_report(db).to_dict() == EXPECTED
    assert sink.rows_written["order_events"] == 13 * 3

    for table in ("order_events", "orders", "order_lines", "dlq", "stock_movements"):
        db.execute(f"OPTIMIZE TABLE {table} FINAL")
    assert build_report(db).to_dict() == EXPECTED
    assert db.execute("SELECT count() FROM order_events")[0][0] == 13
    # 5 received + 1 updated + 1 duplicate + 3 DLQ, however often replayed
    assert processed_inputs(db) == 10
    assert processed_inputs(db, T0 + timedelta(minutes=30)) == 2


async def test_since_window(db: ChdbClient) -> None:
    await sink_for(db).write(scenario())
    late = build_report(db, since=T0 + timedelta(minutes=30)).to_dict()
    assert late["orders_in"] == 1
    assert late["orders_by_channel"] == {"shopify": 1}
    assert late["gmv_by_channel_currency"] == [
        {"channel": "shopify", "currency": "USD", "orders": 1, "gmv": "10.9999"}
    ]
    assert late["duplicates"] == 1  # the duplicate event is at T0+1h+3s
    assert late["dlq_total"] == 0
    naive = build_report(db, since=(T0 + timedelta(minutes=30)).replace(tzinfo=None))
    assert naive.orders_in == 1


async def test_oversold_comes_from_the_ledger(db: ChdbClient) -> None:
    await sink_for(db).write(scenario())
    report = build_report(db)
    assert report.stock_checked is False and report.oversold_units == 0
    await sink_for(db).write_stock_movements(STOCK)
    assert build_report(db).oversold_units == 2
    await sink_for(db).write_stock_movements(
        [
            *STOCK,  # replayed: changes nothing
            {
                "movement_id": "M8",
                "sku": "B",
                "warehouse": "W1",
                "kind": "receive",
                "on_hand_delta": 1,
                "reserved_delta": 0,
                "inbound_delta": -1,
                "at": T0,
            },
        ]
    )
    report = build_report(db)
    assert report.stock_checked and report.oversold_units == 1
    assert [(r.sku, r.excess) for r in report.oversold] == [("A", 1)]
    deduped = (
        "SELECT sum(i), sum(s) FROM (SELECT movement_id, any(inbound_delta) AS i, "
        "any(sit_delta) AS s FROM stock_movements GROUP BY movement_id)"
    )
    assert db.execute(deduped) == [(4 - 1, 0)]  # M7 (inbound 4), M8 (received 1)


async def test_views(db: ChdbClient) -> None:
    await sink_for(db).write(scenario())
    rows = db.execute(
        "SELECT channel, sku, state, orders, units, gmv FROM sales_per_minute "
        "ORDER BY channel, sku, state"
    )
    assert rows == [
        ("shopify", "C", "held", 1, 1, Decimal("9.99")),
        ("shopify", "C", "rejected", 1, 1, Decimal("9.99")),
        ("shopify", "C", "reserved", 1, 3, Decimal("0.9999")),
        ("taobao", "A", "released", 1, 2, Decimal("39.98")),
        ("taobao", "A", "reserved", 1, 1, Decimal("19.99")),
        ("taobao", "B", "released", 1, 1, Decimal("5.01")),
    ]
    latest = db.execute(
        "SELECT external_id, version, total, line_count FROM order_latest ORDER BY external_id"
    )
    assert ("T2", 2, Decimal("25.99"), 1) in latest


async def test_no_personal_data_stored(db: ChdbClient) -> None:
    await sink_for(db).write(scenario())
    for table in ("order_events", "orders", "order_lines", "dlq"):
        dump = repr(db.execute(f"SELECT * FROM {table}"))
        for secret in ("Zhang San", "13800000000", "West Lake", "buyer-T1"):
            assert secret not in dump, (table, secret)


# ---------------------------------------------------------------- fulfilment and after-sales


def life_subset(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in LIFE_EXPECTED}


async def test_lifecycle_report_exact_and_replay_safe(db: ChdbClient) -> None:
    sink = sink_for(db)
    items = lifecycle_scenario()
    await sink.write(items)
    await sink.write_stock_movements(LIFE_STOCK)
    assert life_subset(build_report(db, by="minute").to_dict()) == LIFE_EXPECTED
    await sink.write(items)  # replay, then in two halves (unmerged parts, MV copies)
    await sink.write(items[:20])
    await sink.write(items[20:])
    await sink.write_stock_movements(LIFE_STOCK)
    assert db.execute("SELECT count() FROM sales_by_minute")[0][0] > 7  # copies, not merged
    assert life_subset(build_report(db, by="minute").to_dict()) == LIFE_EXPECTED
    for table in ("order_events", "orders", "order_lines", "sales_by_minute", "wms_events"):
        db.execute(f"OPTIMIZE TABLE {table} FINAL")
    assert life_subset(build_report(db, by="minute").to_dict()) == LIFE_EXPECTED
    hourly = build_report(db, by="hour").to_dict()["sales_series"]
    assert [(r["bucket"], r["channel"], r["orders"], r["gmv"]) for r in hourly] == [
        ("2024-11-12T10:00:00Z", "douyin", 2, "89.96"),
        ("2024-11-12T10:00:00Z", "jd", 2, "133.3333"),
    ]
    daily = build_report(db, by="day").to_dict()["sales_series"]
    assert [r["bucket"] for r in daily] == ["2024-11-12T00:00:00Z"] * 2


async def test_sales_by_minute_is_filled_by_the_view(db: ChdbClient) -> None:
    await sink_for(db).write(lifecycle_scenario())
    rows = db.execute(
        "SELECT minute, order_id, line_id, version, quantity, paid_amount FROM sales_by_minute "
        "ORDER BY minute, order_id, line_id, version"
    )
    # L2 has two versions (the update removed line 2); current ClickHouse may collapse the
    # older copy of its line 1 on insert (optimize_on_insert), 18.16 does not: either is right
    lines = {(r[1], r[2]) for r in rows}
    assert len(lines) == 7 and len(rows) in (7, 8)
    assert {r[0] for r in rows} == {
        datetime(2024, 11, 12, 10, 0, tzinfo=UTC),
        datetime(2024, 11, 12, 10, 1, tzinfo=UTC),
        datetime(2024, 11, 12, 10, 2, tzinfo=UTC),
    }
    assert max(r[3] for r in rows) == 2


async def test_backfill_covers_lines_written_before_the_view(session: Any) -> None:
    """0004 on a database that already has order lines: the per-minute table starts full."""
    name = f"oms_chdb_{uuid.uuid4().hex[:8]}"
    session.query(f"CREATE DATABASE {name}")
    client = ChdbClient(session, name)
    before = [m for m in load_migrations() if m.version < 4]
    migrate(client, name, before)
    events = [i for i in lifecycle_scenario() if isinstance(i, OrderEvent)]
    for insert, rows in inserts_before_0006(events):  # as a sink before 0006 wrote them
        client.execute(insert, rows)
    migrate(client, name)
    got = build_report(client, by="minute").to_dict()
    assert got["sales_series"] == LIFE_EXPECTED["sales_series"]
    session.query(f"DROP DATABASE {name}")


async def test_no_personal_data_in_fulfilment_facts(db: ChdbClient) -> None:
    await sink_for(db).write(lifecycle_scenario())
    for table in ("fulfilment_commands", "wms_events", "aftersales_requests", "sales_by_minute"):
        dump = repr(db.execute(f"SELECT * FROM {table}"))
        for secret in ("Zhang San", "13800000000", "West Lake", "buyer-L"):
            assert secret not in dump, (table, secret)
    region = db.execute(
        "SELECT new_province_code, new_city FROM aftersales_requests WHERE kind = 'address_change'"
    )
    assert region == [("ZJ", "Hangzhou")]


# ---------------------------------------------------------------- sink retry logic


class Flaky:
    """Client factory that fails ``failures`` times before handing out the real client."""

    def __init__(self, client: ChdbClient, failures: int, exc: Exception) -> None:
        self.client, self.failures, self.exc, self.calls = client, failures, exc, 0

    def __call__(self, _settings: Settings) -> ChdbClient:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.client


async def test_sink_backs_off_and_retries_same_batch(db: ChdbClient) -> None:
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    flaky = Flaky(db, 6, ConnectionRefusedError("closed port"))
    settings = Settings(clickhouse_database=db.database)
    sink = FactSink(
        settings, flaky, setup=None, base_delay_s=0.1, max_delay_s=0.5, sleep=fake_sleep
    )
    await sink.write(scenario())
    assert sink.retries == 6 and sink.consecutive_failures == 0 and sink.batches_written == 1
    assert "closed port" in (sink.last_error or "")
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(0.5, 0.1 * 2 ** (attempt - 1))
    assert build_report(db).to_dict()["orders_in"] == 5


async def test_sink_partial_failure_resends_only_unwritten_tables(db: ChdbClient) -> None:
    class FailOnce(ChdbClient):
        failed = False

        def execute(self, query: str, params: Any = None, **kw: Any) -> list[tuple[Any, ...]]:
            if "INSERT INTO" in query and ".orders " in query and not FailOnce.failed:
                FailOnce.failed = True
                raise EOFError("connection reset mid-batch")
            return super().execute(query, params, **kw)

    client = FailOnce(db.session, db.database)
    sink = sink_for(client, base_delay_s=0.001)
    await sink.write(scenario())
    assert sink.retries == 1
    assert sink.rows_written["order_events"] == 13  # not resent after the orders failure
    got = build_report(db).to_dict()
    assert got["gmv_by_channel_currency"] == EXPECTED["gmv_by_channel_currency"]


async def test_sink_gives_up_only_when_bounded(db: ChdbClient) -> None:
    settings = Settings(clickhouse_database=db.database)
    sink = FactSink(
        settings, Flaky(db, 99, OSError("down")), setup=None, base_delay_s=0.001, max_attempts=3
    )
    with pytest.raises(SinkUnavailable):
        await sink.write(scenario())
    assert sink.retries == 3 and sink.consecutive_failures == 3


async def test_sink_does_not_retry_bugs(db: ChdbClient) -> None:
    sink = sink_for(db)
    with pytest.raises(TypeError):
        await sink.write([object()])  # type: ignore[list-item]
    assert sink.retries == 0


async def test_concurrent_writes_are_serialised(db: ChdbClient) -> None:
    sink = sink_for(db)
    items = scenario()
    await asyncio.gather(*(sink.write(items) for _ in range(4)))
    assert sink.batches_written == 4
    assert build_report(db).to_dict()["orders_in"] == 5


def test_queries_listed() -> None:
    public = {n for n in dir(reports) if n.startswith("Q_")}
    assert public == {f"Q_{k.upper()}" for k in QUERIES}


# ---------------------------------------------------------------- stock ledger queries


async def test_ledger_shipped_totals(db: ChdbClient) -> None:
    """state/ledger.py's range query (verify and snapshot sum the shipped ledger with it)."""
    from analytics.facts import StockMovement
    from analytics.ledger import shipped_totals
    from state.ledger import movement_id

    def move(sku: str, eid: str, kind: str, on_hand: int, reserved: int = 0) -> StockMovement:
        return StockMovement(movement_id(sku, eid), sku, "W1", kind, on_hand, reserved, T0)

    moves = [
        move("a/b", "1700000000000-0", "load", 10),
        move("a/b", "1700000000000-1", "reserve", 0, 2),
        move("a/b", "1700000000001-0", "commit", -2, -2),
        move("c", "1700000000001-0", "load", 5),
    ]
    sink = sink_for(db)
    await sink.write_stock_movements(moves)
    await sink.write_stock_movements(moves[1:3])  # re-shipped: counted once
    ranges = {"a/b": ((0, 0), (1700000000000, 1)), "c": ((0, 0), (1700000000001, 0))}
    got = shipped_totals(db, ranges)
    assert got[("a/b", "W1")] == dict(entries=2, on_hand=10, reserved=2, inbound=0, sit=0)
    assert got[("c", "W1")]["on_hand"] == 5
    after = {"a/b": ((1700000000000, 0), (1700000000001, 0))}
    commits = shipped_totals(db, after, warehouse="W1", kinds=("commit",))
    assert commits == {("a/b", "W1"): dict(entries=1, on_hand=-2, reserved=-2, inbound=0, sit=0)}
