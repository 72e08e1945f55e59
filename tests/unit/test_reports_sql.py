"""Static checks on every migration and report query, plus report assembly with a fake client.

Both ClickHouse versions run the real SQL elsewhere (chdb: current; integration: 18.16); these
checks keep features out that only one of them has, and the replay-safety rules in place.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from analytics.facts import COLUMNS
from analytics.reports import (
    Q_DLQ_BY_REASON,
    Q_DUPLICATES,
    Q_GMV_BY_CHANNEL,
    Q_LIFECYCLE,
    Q_ORDER_IDS_BY_STATE,
    Q_ORDER_STATES,
    Q_OVERSOLD,
    Q_PROCESSED_INPUTS,
    Q_SPLITS_AND_MERGES,
    Q_STOCK_MOVEMENT_ROWS,
    Q_TOP_SKUS,
    QUERIES,
    build_report,
    format_report,
    money,
    orders_in_state,
    processed_inputs,
)
from analytics.schema import load_migrations, migrate, split_statements

MIGRATION_SQL = [s for m in load_migrations() for s in m.render("oms")]


def code(sql: str) -> str:
    """SQL without ``--`` comments (they quote the very constructs checked for)."""
    return re.sub(r"--[^\n]*", "", sql)


ALL_SQL = {
    **{f"migration{i}": code(s) for i, s in enumerate(MIGRATION_SQL)},
    **{k: code(v) for k, v in QUERIES.items()},
}

# Present in only one of ClickHouse 18.16 / current, or not replay-safe by construction.
FORBIDDEN = {
    "DateTime64": r"\bDateTime64\b",
    "TTL": r"\bTTL\b",
    "LowCardinality": r"\bLowCardinality\b",
    "Bool type": r"\bBool\b",
    "JSON/Object type": r"\b(JSON|Object)\s*\(",
    "window function": r"\bOVER\s*\(",
    "CTE": r"\bWITH\s+\w+\s+AS\s*\(",
    "materialized view": r"MATERIALIZED\s+VIEW",
    "FINAL modifier (replays can differ in partition)": r"\bFINAL\b",
    "Map type": r"\bMap\s*\(",
    "ILIKE": r"\bILIKE\b",
    "QUALIFY": r"\bQUALIFY\b",
    "settings clause": r"\bSETTINGS\b",
}


@pytest.mark.parametrize("name", sorted(ALL_SQL))
def test_no_forbidden_features(name: str) -> None:
    sql = ALL_SQL[name]
    for feature, pattern in FORBIDDEN.items():
        assert not re.search(pattern, sql, re.IGNORECASE), f"{name} uses {feature}"


@pytest.mark.parametrize("name", sorted(ALL_SQL))
def test_no_alias_shadows_its_own_argument(name: str) -> None:
    """``argMax(sku, version) AS sku`` makes ClickHouse nest the aggregate in itself."""
    for func, args, alias in re.findall(r"(\w+)\(([^()]*)\)\s+AS\s+(\w+)", ALL_SQL[name]):
        assert alias not in re.findall(r"\w+", args), f"{name}: {func}({args}) AS {alias}"


@pytest.mark.parametrize("name", sorted(ALL_SQL))
def test_no_group_array_over_a_sum(name: str) -> None:
    """groupArray over a Decimal128 (any sum of money) segfaults ClickHouse 18.16."""
    sql = ALL_SQL[name]
    sums = set(re.findall(r"\bsum\([^()]*\)\s+AS\s+(\w+)", sql))
    for arg in re.findall(r"groupArray\(([^()]*)\)", sql):
        assert arg.strip() not in sums, f"{name}: groupArray({arg})"


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_parameters(name: str) -> None:
    sql = QUERIES[name]
    assert "%" not in re.sub(r"%\(since\)s", "", sql), "stray % breaks parameter substitution"
    assert sql % {"since": 0}


# Raw fact tables may only be read through a dedupe by the fact's id (or as an existence test).
RAW_READS = {
    "order_events": r"uniqExact\(event_id\)",
    "dlq": r"GROUP BY dlq_id|uniqExact\(dlq_id\)",
    "stock_movements": r"GROUP BY movement_id",
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_raw_tables_are_deduplicated(name: str) -> None:
    sql = QUERIES[name]
    for table in ("orders", "order_lines"):
        assert not re.search(rf"\bFROM\s+{table}\b", sql), f"{name} must use the *_latest views"
    for table, dedupe in RAW_READS.items():
        if re.search(rf"\bFROM\s+{table}\b", sql) and sql is not Q_STOCK_MOVEMENT_ROWS:
            assert re.search(dedupe, sql), f"{name} reads {table} without deduplicating"


def test_every_query_is_listed() -> None:
    assert set(QUERIES.values()) == {
        Q_ORDER_STATES,
        Q_DUPLICATES,
        Q_DLQ_BY_REASON,
        Q_GMV_BY_CHANNEL,
        Q_TOP_SKUS,
        Q_STOCK_MOVEMENT_ROWS,
        Q_OVERSOLD,
        Q_PROCESSED_INPUTS,
        Q_LIFECYCLE,
        Q_SPLITS_AND_MERGES,
        Q_ORDER_IDS_BY_STATE,
    }


# ---------------------------------------------------------------- migrations


def test_migrations_are_ordered_rerunnable_and_monthly() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for m in migrations:
        for stmt in m.statements:
            if re.match(r"ALTER TABLE \{db\}\.\w+\s+ADD COLUMN", code(stmt).strip()):
                # 18.16 has no ADD COLUMN IF NOT EXISTS: schema_migrations runs it once; a
                # column added later needs a DEFAULT so rows written before it stay valid
                for clause in re.split(r",\s*ADD COLUMN", code(stmt)):
                    assert "DEFAULT" in clause, clause
                continue
            assert "IF NOT EXISTS {db}." in stmt, stmt[:80]
            if "MergeTree" in stmt:
                assert "ReplacingMergeTree" in stmt and "PARTITION BY toYYYYMM(" in stmt
                assert "DateTime('UTC')" in stmt


def test_fact_columns_exist_in_ddl() -> None:
    ddl = code("\n".join(MIGRATION_SQL))
    for table, cols in COLUMNS.items():
        m = re.search(rf"CREATE TABLE IF NOT EXISTS `oms`\.{table}\s*\((.*?)\n\)", ddl, re.S)
        assert m, table
        declared = re.findall(r"^\s*(\w+)\s+\w", m.group(1), re.M)
        for stmt in MIGRATION_SQL:  # columns added later, in migration order
            if re.match(rf"ALTER TABLE `oms`\.{table}\s", code(stmt).strip()):
                declared += re.findall(r"ADD COLUMN (\w+)", code(stmt))
        assert list(cols) == [c for c in declared if c != "ingested_at"], table


def test_split_statements() -> None:
    sql = "-- header\nCREATE TABLE a (x String)\n;\n\n-- only a comment\n;\nSELECT ';'\n ; \n"
    assert split_statements(sql) == ["-- header\nCREATE TABLE a (x String)", "SELECT ';'"]


class FakeClient:
    """Records statements; answers the bookkeeping queries from what was inserted."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.applied: list[tuple[Any, ...]] = []

    def execute(self, query: str, params: Any = None, **_: Any) -> list[tuple[Any, ...]]:
        self.statements.append(query)
        if query.startswith("INSERT INTO `oms`.schema_migrations"):
            self.applied.extend(params)
        if query.startswith("SELECT version"):
            return [(v, c) for v, _n, c, _at in self.applied]
        return []


def test_migrate_is_idempotent() -> None:
    client = FakeClient()
    names = migrate(client, "oms")
    assert names == [m.name for m in load_migrations()] and len(names) >= 2
    executed = len(client.statements)
    assert migrate(client, "oms") == []
    assert not any(s.startswith("CREATE VIEW") for s in client.statements[executed:])


def test_migrate_rejects_odd_database_names() -> None:
    with pytest.raises(ValueError):
        migrate(FakeClient(), "oms; DROP TABLE x")


# ---------------------------------------------------------------- report assembly


class CannedClient:
    def __init__(self, answers: dict[str, list[tuple[Any, ...]]]) -> None:
        self.answers = answers
        self.params: list[Any] = []

    def execute(self, query: str, params: Any = None, **_: Any) -> list[tuple[Any, ...]]:
        self.params.append(params)
        return self.answers[query]


CANNED = {
    Q_ORDER_STATES: [
        ("jd", "held", "address_incomplete", 2),
        ("jd", "reserved", "", 5),
        ("jd", "shipped", "", 1),
        ("own", "rejected", "blacklisted_buyer", 1),
        ("own", "received", "", 1),
        ("own", "cancelled", "", 1),
    ],
    Q_DUPLICATES: [(4,)],
    Q_DLQ_BY_REASON: [("malformed_json", 2)],
    Q_GMV_BY_CHANNEL: [("jd", "CNY", 6, Decimal("1234.5000"))],
    Q_TOP_SKUS: [("SKU1", 9, ["CNY", "USD"], ["100.1000", "0.0050"])],
    Q_STOCK_MOVEMENT_ROWS: [(0,)],
    Q_OVERSOLD: [],
    Q_PROCESSED_INPUTS: [(12,)],
    Q_LIFECYCLE: [("merged", 4, 4), ("shipped", 3, 3), ("short_pick", 1, 1)],
    Q_SPLITS_AND_MERGES: [(2, 2, 9)],
    Q_ORDER_IDS_BY_STATE: [("held", ["O1", "O2"]), ("delivered", ["O3"])],
}


def test_report_assembly_and_json() -> None:
    client = CannedClient(CANNED)
    since = datetime(2024, 11, 11, tzinfo=UTC)
    report = build_report(client, since=since)
    assert client.params[0] == {"since": int(since.timestamp())}
    d = report.to_dict()
    assert (d["orders_in"], d["accepted"], d["held"], d["rejected"]) == (11, 6, 2, 1)
    assert d["orders_by_state"]["cancelled"] == 1 and d["orders_by_state"]["received"] == 1
    assert d["orders_by_channel"] == {"jd": 8, "own": 3}
    assert d["held_by_reason"] == {"address_incomplete": 2}
    assert d["rejected_by_reason"] == {"blacklisted_buyer": 1}
    assert d["gmv_by_channel_currency"][0]["gmv"] == "1234.50"  # a string, never a float
    assert d["top_skus"][0]["gmv"] == {"CNY": "100.10", "USD": "0.005"}
    assert (d["stock_checked"], d["oversold_units"]) == (False, 0)
    assert d["dlq_total"] == 2 and d["duplicates"] == 4
    assert d["lifecycle"] == {"merged": 4, "shipped": 3, "short_pick": 1}
    assert (d["split_orders"], d["merged_parcels"]) == (2, 2)
    json.dumps(d)
    text = format_report(report)
    assert "GMV by channel" in text and "1234.50" in text and "n/a" in text
    assert "merged into one parcel" in text and "short pick" in text
    assert processed_inputs(client) == 12
    assert orders_in_state(client, "held") == ["O1", "O2"]
    assert orders_in_state(client, "shipped") == []


def test_empty_report_formats() -> None:
    empty = {q: [] for q in CANNED} | {
        Q_DUPLICATES: [(0,)],
        Q_STOCK_MOVEMENT_ROWS: [(0,)],
        Q_PROCESSED_INPUTS: [(0,)],
        Q_SPLITS_AND_MERGES: [(0, 0, 0)],
    }
    text = format_report(build_report(CannedClient(empty)))
    assert "(none)" in text


def test_money_display() -> None:
    assert str(money(Decimal("10.5000"))) == "10.50"
    assert str(money(Decimal("0.3333"))) == "0.3333"
    assert str(money(Decimal("0"))) == "0.00"
