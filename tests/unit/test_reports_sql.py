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
    Q_AFTERSALES_REQUESTS,
    Q_BACKORDERS,
    Q_COMMANDS_BY_KIND,
    Q_DLQ_BY_REASON,
    Q_DUPLICATES,
    Q_FULFILMENT_LATENCY,
    Q_GMV_BY_CHANNEL,
    Q_GMV_BY_SHOP,
    Q_GMV_BY_WAREHOUSE,
    Q_LIFECYCLE,
    Q_ORDER_IDS_BY_STATE,
    Q_ORDER_STATES,
    Q_OVERSOLD,
    Q_PROCESSED_INPUTS,
    Q_RESERVED_BY_SKU,
    Q_SALES_BY_DAY,
    Q_SALES_BY_HOUR,
    Q_SALES_BY_MINUTE,
    Q_SELL_THROUGH,
    Q_SPLITS_AND_MERGES,
    Q_STOCK_MOVEMENT_ROWS,
    Q_TOP_SKUS,
    Q_WAITING_BY_REASON,
    Q_WMS_EVENTS_BY_KIND,
    QUERIES,
    build_report,
    format_report,
    money,
    orders_in_state,
    parse_since,
    processed_inputs,
)
from analytics.schema import load_migrations, migrate, skip_guard, split_statements

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
    # allowed only as checked by test_materialized_views_only_feed_replacing_targets
    "materialized view": r"MATERIALIZED\s+VIEW(?!\s+IF\s+NOT\s+EXISTS\s+`oms`\.\w+\s+TO\s)",
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


# The identity of each fact table's rows: its sorting key, all of it (migration 0006). Nothing
# that may differ between two emissions of one fact (a time, a reason) is in the key, or the
# two rows would never collapse. order_id is in the key only where the id is made from it.
FACT_IDS = {
    "order_events": ("order_id", "event_id"),
    "orders": ("order_id",),
    "order_lines": ("order_id", "line_id"),
    "dlq": ("dlq_id",),
    "fulfilment_commands": ("command_id",),
    "wms_events": ("event_id",),
    "aftersales_requests": ("request_id",),
    "sales_by_minute": ("order_id", "line_id"),
}
# stock_movements is the exception: sku, warehouse and time all come from its id (the ledger
# stream entry), so they cannot differ between two shipments of one movement.
LEDGER_KEY = ["sku", "warehouse", "movement_id"]

_MV = re.compile(
    r"CREATE MATERIALIZED VIEW IF NOT EXISTS `oms`\.\w+\s+TO\s+`oms`\.(\w+)\s+AS\s+"
    r"(SELECT.*)",
    re.S,
)


def _creates(table: str, stmt: str) -> bool:
    """``stmt`` defines ``table``: its first CREATE, or a rebuild's ``<table>__NNNN``."""
    pattern = rf"CREATE TABLE IF NOT EXISTS `oms`\.{table}(__\d{{4}})?\s*\("
    return bool(re.match(pattern, code(stmt).strip()))


def latest_index(table: str) -> int:
    """Index in MIGRATION_SQL of the definition of ``table`` that holds now."""
    found = [i for i, stmt in enumerate(MIGRATION_SQL) if _creates(table, stmt)]
    assert found, f"no CREATE TABLE for {table}"
    return found[-1]


def table_ddl(table: str) -> str:
    """The CREATE TABLE statement of ``table`` as it holds now (code only)."""
    return code(MIGRATION_SQL[latest_index(table)])


def sorting_key(ddl: str) -> list[str]:
    m = re.search(r"ORDER BY \(([^)]*(?:\([^)]*\)[^)]*)*)\)\s*$", ddl.strip())
    if m is None:  # a single column, unparenthesised
        m = re.search(r"ORDER BY (\w+)\s*$", ddl.strip())
    assert m, ddl[-200:]
    return [k.strip() for k in _split_top(m.group(1))]


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return [*parts, cur]


# The materialized views as they are now (a later migration may drop and make one again).
MATERIALIZED = list(
    {
        m.group(1): code(s)
        for s in MIGRATION_SQL
        if (m := re.search(r"MATERIALIZED\s+VIEW IF NOT EXISTS `oms`\.(\w+)", code(s)))
    }.values()
)


def test_materialized_views_only_feed_replacing_targets() -> None:
    """An MV sees each INSERT, replays included: it may only copy rows, by fact id, into a
    ReplacingMergeTree keyed by that id (and by version for snapshots), never aggregate."""
    assert MATERIALIZED, "the per-minute sales MV (0004) is expected"
    for stmt in MATERIALIZED:
        m = _MV.match(stmt.strip())
        assert m, f"an MV must be CREATE ... IF NOT EXISTS ... TO a target: {stmt[:120]}"
        target, select = m.group(1), m.group(2)
        (source,) = re.findall(r"\bFROM\s+`oms`\.(\w+)", select)
        assert not re.search(r"\b(GROUP BY|JOIN|sum|count|uniq\w*|any)\b", select, re.I), stmt
        ddl = table_ddl(target)
        assert sorting_key(ddl) == list(FACT_IDS[source]), (target, sorting_key(ddl))
        engine = re.search(r"ENGINE\s*=\s*(\w+)\(([^)]*)\)", ddl)
        assert engine and engine.group(1) == "ReplacingMergeTree", target
        assert engine.group(2).strip() == "rev", target
        assert re.search(r"\brev\b", select), "the MV must copy the revision"


def test_every_fact_table_is_keyed_by_its_identity_and_replaced_by_rev() -> None:
    """Two emissions of one fact land in one partition under one sorting key, and the later
    revision replaces the earlier: no time partition, no content in the key."""
    for table, ids in FACT_IDS.items():
        ddl = table_ddl(table)
        assert sorting_key(ddl) == list(ids), (table, sorting_key(ddl))
        assert "PARTITION BY" not in ddl, table
        assert re.search(r"ENGINE\s*=\s*ReplacingMergeTree\(rev\)", ddl), table
        assert re.search(r"^\s*rev\s+UInt64 DEFAULT ", ddl, re.M), table
    ledger = table_ddl("stock_movements")
    assert sorting_key(ledger) == LEDGER_KEY


def test_the_mv_rule_still_rejects_other_materialized_views() -> None:
    pattern = FORBIDDEN["materialized view"]
    assert re.search(pattern, "CREATE MATERIALIZED VIEW `oms`.x ENGINE = SummingMergeTree()")
    assert re.search(pattern, "CREATE MATERIALIZED VIEW IF NOT EXISTS `oms`.x ENGINE = Memory")
    assert not re.search(pattern, "CREATE MATERIALIZED VIEW IF NOT EXISTS `oms`.x TO `oms`.y AS")


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


# Raw fact tables may only be read through a collapse to one row per id, taking the latest
# revision (argMax by rev), before any filter or sum; or, for the DLQ, its first time per id.
_LATEST = r"argMax\(\w+, rev\)[\s\S]*"
RAW_READS = {
    "order_events": _LATEST + r"GROUP BY (order_id, )?event_id",
    "dlq": r"(argMax\(\w+, rev\)|min\(received_at\))[\s\S]*GROUP BY dlq_id",
    "stock_movements": r"GROUP BY movement_id",
    "fulfilment_commands": _LATEST + r"GROUP BY command_id",
    "wms_events": _LATEST + r"GROUP BY event_id",
    "aftersales_requests": _LATEST + r"GROUP BY request_id",
    # the MV target holds copies of line revisions: latest revision per line, then per order
    "sales_by_minute": _LATEST + r"GROUP BY order_id, line_id",
}
# Views that read raw fact tables (migrations): the same rule holds for them.
VIEWS = {
    m.group(1): stmt
    for stmt in MIGRATION_SQL
    if (m := re.match(r"CREATE VIEW IF NOT EXISTS `oms`\.(\w+) AS", code(stmt).strip()))
}


def _reads_raw_without_collapse(sql: str) -> list[str]:
    """Raw fact tables ``sql`` reads without collapsing them per id, or with ``any``."""
    bad = []
    for table in ("orders", "order_lines"):
        if re.search(rf"\bFROM\s+(`oms`\.)?{table}\b", sql) and "argMax" not in sql:
            bad.append(table)
    for table, dedupe in RAW_READS.items():
        if re.search(rf"\bFROM\s+(`oms`\.)?{table}\b", sql):
            if not re.search(dedupe, sql):
                bad.append(table)
            if table != "stock_movements" and re.search(r"\bany\(", sql):
                bad.append(f"{table} (any() picks one emission at random)")
    return bad


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_raw_tables_are_deduplicated(name: str) -> None:
    sql = QUERIES[name]
    for table in ("orders", "order_lines"):
        assert not re.search(rf"\bFROM\s+{table}\b", sql), f"{name} must use the *_latest views"
    if sql is not Q_STOCK_MOVEMENT_ROWS:
        assert _reads_raw_without_collapse(sql) == [], name


def test_the_current_views_collapse_per_id() -> None:
    latest_views = {"order_events_latest", "order_latest", "order_lines_latest"}
    assert latest_views <= set(VIEWS)
    for name in latest_views:
        assert _reads_raw_without_collapse(code(VIEWS[name])) == [], name
    for name, stmt in VIEWS.items():  # the rest read those views, never a raw table
        if name not in latest_views:
            assert _reads_raw_without_collapse(code(stmt)) == [], name
            assert not re.search(r"\bFROM\s+`oms`\.order_events\b", code(stmt)), name


def test_every_query_is_listed() -> None:
    assert set(QUERIES.values()) == {
        Q_ORDER_STATES,
        Q_WAITING_BY_REASON,
        Q_BACKORDERS,
        Q_DUPLICATES,
        Q_DLQ_BY_REASON,
        Q_GMV_BY_CHANNEL,
        Q_TOP_SKUS,
        Q_RESERVED_BY_SKU,
        Q_STOCK_MOVEMENT_ROWS,
        Q_OVERSOLD,
        Q_PROCESSED_INPUTS,
        Q_LIFECYCLE,
        Q_SPLITS_AND_MERGES,
        Q_ORDER_IDS_BY_STATE,
        Q_GMV_BY_SHOP,
        Q_GMV_BY_WAREHOUSE,
        Q_SALES_BY_MINUTE,
        Q_SALES_BY_HOUR,
        Q_SALES_BY_DAY,
        Q_SELL_THROUGH,
        Q_FULFILMENT_LATENCY,
        Q_COMMANDS_BY_KIND,
        Q_WMS_EVENTS_BY_KIND,
        Q_AFTERSALES_REQUESTS,
    }


def test_sales_series_read_the_latest_line_versions_only() -> None:
    for sql in (Q_SALES_BY_MINUTE, Q_SALES_BY_HOUR, Q_SALES_BY_DAY):
        assert "FROM sales_by_minute" in sql
        assert re.search(r"\(order_id, s_rev\) IN\s*\(\s*SELECT order_id, max\(rev\)", sql)


# ---------------------------------------------------------------- migrations


def test_migrations_are_ordered_and_rerunnable() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    views = {
        m.group(1) for s in MIGRATION_SQL if (m := re.search(r"VIEW IF NOT EXISTS `oms`\.(\w+)", s))
    }
    for m in migrations:
        for stmt in m.statements:
            sql = code(stmt).strip()
            guard = skip_guard(stmt)
            backfill = re.match(r"INSERT INTO \{db\}\.(\w+)\s*\([^)]*\)\s*SELECT", sql)
            backfill = backfill or re.match(r"INSERT INTO \{db\}\.(\w+)\s+SELECT", sql)
            if backfill:
                # into an MV target, or a rebuilt table from its old copy: both replay-safe (a
                # re-run adds copies that collapse and that every query dedupes)
                targets = re.findall(r"\bTO\s+`oms`\.(\w+)", "\n".join(MATERIALIZED))
                copy = re.search(rf"FROM \{{db\}}\.{backfill.group(1)}__pre\d{{4}}\s*$", sql)
                assert backfill.group(1) in targets or copy, stmt[:80]
                continue
            if re.match(r"ALTER TABLE \{db\}\.\w+\s+ADD COLUMN", sql):
                # 18.16 has no ADD COLUMN IF NOT EXISTS: schema_migrations runs it once; a
                # column added later needs a DEFAULT so rows written before it stay valid
                for clause in re.split(r",\s*ADD COLUMN", sql):
                    assert "DEFAULT" in clause, clause
                continue
            dropped = re.match(r"DROP TABLE IF EXISTS \{db\}\.(\w+)$", sql)
            if dropped:  # only views (made again) and a rebuild's unswapped leftovers
                name = dropped.group(1)
                assert name in views or re.fullmatch(r"\w+__\d{4}", name), sql
                continue
            rename = re.match(
                r"RENAME TABLE \{db\}\.(\w+) TO \{db\}\.(\1__pre(\d{4})),\s*"
                r"\{db\}\.\1__\3 TO \{db\}\.\1$",
                sql,
            )
            if rename:  # the swap, run once: skipped once the old copy exists
                assert guard == "{db}." + rename.group(2), stmt[:80]
                continue
            assert "IF NOT EXISTS {db}." in stmt, stmt[:80]
            rebuilt = re.match(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)__(\d{4})\s*\(", sql)
            if rebuilt:
                assert guard == f"{{db}}.{rebuilt.group(1)}__pre{rebuilt.group(2)}", stmt[:80]
            if "MergeTree" in stmt:
                assert "ReplacingMergeTree" in stmt and "DateTime('UTC')" in stmt


def test_fact_columns_exist_in_ddl() -> None:
    for table, cols in COLUMNS.items():
        start = latest_index(table)
        m = re.search(r"\((.*?)\n\)", code(MIGRATION_SQL[start]), re.S)
        assert m, table
        declared = re.findall(r"^\s*(\w+)\s+\w", m.group(1), re.M)
        for stmt in MIGRATION_SQL[start + 1 :]:  # columns added later, in migration order
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


class SwappedClient(FakeClient):
    """A database some tables of which a migrator swapped already (their __pre copies exist);
    ``swap_race``: a RENAME fails because another migrator swaps those tables meanwhile."""

    def __init__(self, existing: set[str], swap_race: set[str] = frozenset()) -> None:
        super().__init__()
        self.existing = set(existing)
        self.swap_race = set(swap_race)
        self.raced = 0

    def execute(self, query: str, params: Any = None, **kw: Any) -> list[tuple[Any, ...]]:
        if query.startswith("EXISTS TABLE"):
            return [(int(query.split(".")[-1].strip("`") in self.existing),)]
        for table in self.swap_race:
            if query.startswith(f"-- skip if exists: `oms`.{table}__pre") and "RENAME" in query:
                self.existing.add(f"{table}__pre0006")
                self.raced += 1
                raise RuntimeError("Code: 57. Table already exists")
        return super().execute(query, params, **kw)


def _ran(client: FakeClient, pattern: str) -> list[str]:
    return [q for q in client.statements if re.search(pattern, code(q))]


def test_rebuild_swaps_once_and_copies_again() -> None:
    """The CREATE of a rebuilt table and its RENAME are skipped once the old copy exists (a
    re-run after a crash, a second migrator); the copy always runs, since copies collapse."""
    fresh = FakeClient()
    migrate(fresh, "oms")
    assert len(_ran(fresh, r"^\s*RENAME TABLE `oms`\.order_events TO")) == 1
    assert len(_ran(fresh, r"INSERT INTO `oms`\.order_events \(")) == 1

    done = SwappedClient({"order_events__pre0006", "orders__pre0006"})
    migrate(done, "oms")
    assert _ran(done, r"RENAME TABLE `oms`\.order_events TO") == []
    assert _ran(done, r"CREATE TABLE IF NOT EXISTS `oms`\.order_events__0006") == []
    assert _ran(done, r"RENAME TABLE `oms`\.orders TO") == []
    assert len(_ran(done, r"RENAME TABLE `oms`\.dlq TO")) == 1  # not swapped yet: swapped now
    assert len(_ran(done, r"INSERT INTO `oms`\.order_events \(")) == 1


def test_a_swap_another_migrator_won_counts_as_done() -> None:
    racing = SwappedClient(set(), swap_race={"orders"})
    assert "0006_facts_keyed_by_id" in migrate(racing, "oms")
    assert racing.raced == 1

    class Broken(SwappedClient):
        def execute(self, query: str, params: Any = None, **kw: Any) -> list[tuple[Any, ...]]:
            if "RENAME TABLE `oms`.orders TO" in query:
                raise RuntimeError("Code: 60. Table doesn't exist")
            return super().execute(query, params, **kw)

    with pytest.raises(RuntimeError, match="doesn't exist"):
        migrate(Broken(set()), "oms")


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
    Q_WAITING_BY_REASON: [("awaiting_balance", 2), ("ship_date", 1)],
    Q_BACKORDERS: [(3, 2)],
    Q_DLQ_BY_REASON: [("malformed_json", 2)],
    Q_GMV_BY_CHANNEL: [("jd", "CNY", 6, Decimal("1234.5000"))],
    Q_TOP_SKUS: [("SKU1", 9, ["CNY", "USD"], ["100.1000", "0.0050"])],
    Q_RESERVED_BY_SKU: [("SKU1", 7, 5)],
    Q_STOCK_MOVEMENT_ROWS: [(0,)],
    Q_OVERSOLD: [],
    Q_PROCESSED_INPUTS: [(12,)],
    Q_LIFECYCLE: [("merged", 4, 4), ("shipped", 3, 3), ("short_pick", 1, 1)],
    Q_SPLITS_AND_MERGES: [(2, 2, 9)],
    Q_ORDER_IDS_BY_STATE: [("held", ["O1", "O2"]), ("delivered", ["O3"])],
    Q_GMV_BY_SHOP: [("jd", "s1", "CNY", 6, Decimal("1234.5000"))],
    Q_GMV_BY_WAREHOUSE: [
        ("", "CNY", 1, Decimal("9.0000")),
        ("WH-US-LA", "USD", 5, Decimal("99.5")),
    ],
    Q_SALES_BY_MINUTE: [],
    Q_SALES_BY_HOUR: [(datetime(2024, 11, 11, 1), "jd", "CNY", 6, Decimal("1200.0000"))],
    Q_SALES_BY_DAY: [],
    Q_SELL_THROUGH: [("SKU1", 9, 3, 1), ("SKU2", 2, 0, 0)],
    Q_FULFILMENT_LATENCY: [(3, [60, 3600])],
    Q_COMMANDS_BY_KIND: [("outbound", 4), ("intercept", 1)],
    Q_WMS_EVENTS_BY_KIND: [("shipped", 3)],
    Q_AFTERSALES_REQUESTS: [("refund", 2, 1, Decimal("5.5000")), ("return", 1, 1, None)],
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
    assert d["waiting_by_reason"] == {"awaiting_balance": 2, "ship_date": 1}
    assert (d["backorders_retried"], d["backorders_cleared"]) == (3, 2)
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


def test_fulfilment_sections_assembly() -> None:
    canned = CANNED | {
        Q_LIFECYCLE: [
            ("shipped", 4, 4),
            ("return_requested", 1, 1),
            ("refunded", 2, 2),
            ("intercept_requested", 1, 1),
        ]
    }
    report = build_report(CannedClient(canned))  # by hour by default
    d = report.to_dict()
    assert d["by"] == "hour"
    assert d["gmv_by_warehouse"] == [
        {"warehouse": "", "currency": "CNY", "orders": 1, "gmv": "9.00"},
        {"warehouse": "WH-US-LA", "currency": "USD", "orders": 5, "gmv": "99.50"},
    ]
    assert d["gmv_by_shop"] == [
        {"channel": "jd", "shop_id": "s1", "currency": "CNY", "orders": 6, "gmv": "1234.50"}
    ]
    assert d["sales_series"] == [
        {
            "bucket": "2024-11-11T01:00:00Z",  # a naive driver value is taken as UTC
            "channel": "jd",
            "currency": "CNY",
            "orders": 6,
            "gmv": "1200.00",
        }
    ]
    assert d["sell_through"] == [
        {
            "sku": "SKU1",
            "reserved_units": 9,
            "shipped_units": 3,
            "on_hand": 1,
            "sell_through": 0.75,
        },
        {
            "sku": "SKU2",
            "reserved_units": 2,
            "shipped_units": 0,
            "on_hand": 0,
            "sell_through": None,
        },
    ]
    assert d["fulfilment_latency"] == {"shipped_orders": 3, "p50_s": 60, "p95_s": 3600}
    assert d["aftersales_orders"] == {"returns": 1, "refunds": 2, "exchanges": 0, "cancels": 1}
    assert d["aftersales_rates"] == {
        "returns": 0.25,
        "refunds": 0.5,
        "exchanges": 0.0,
        "cancels": 0.25,
    }
    assert d["aftersales_requests"] == {
        "refund": {"requests": 2, "orders": 1, "amount": "5.50"},
        "return": {"requests": 1, "orders": 1, "amount": None},
    }
    assert d["commands_by_kind"] == {"outbound": 4, "intercept": 1}
    assert d["wms_events_by_kind"] == {"shipped": 3}
    text = format_report(report)
    assert "Sales by hour" in text and "2024-11-11 01:00" in text and "75.0%" in text
    assert "p95" in text and "3600" in text and "25.0%" in text
    by_day = build_report(CannedClient(canned), by="day")
    assert by_day.by == "day" and by_day.sales_series == []
    with pytest.raises(ValueError):
        build_report(CannedClient(canned), by="week")


def test_parse_since() -> None:
    now = datetime(2024, 11, 11, 12, tzinfo=UTC)
    assert parse_since("15m", now) == datetime(2024, 11, 11, 11, 45, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2024, 11, 11, 10, tzinfo=UTC)
    assert parse_since(" 1D ", now) == datetime(2024, 11, 10, 12, tzinfo=UTC)
    assert parse_since("2024-11-11T08:00:00+08:00") == datetime(2024, 11, 11, tzinfo=UTC)
    assert parse_since("2024-11-11T00:00:00Z") == datetime(2024, 11, 11, tzinfo=UTC)
    assert parse_since("2024-11-11") == datetime(2024, 11, 11, tzinfo=UTC)  # naive = UTC
    for bad in ("yesterday", "15x", "-2h", "", "2024-13-01"):
        with pytest.raises(ValueError, match="ISO-8601"):
            parse_since(bad, now)


def test_report_cli_rejects_a_bad_since() -> None:
    from click.testing import CliRunner

    from ops.cli import main

    result = CliRunner().invoke(main, ["report", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "--since 'last tuesday'" in result.output and "15m" in result.output
    bad_by = CliRunner().invoke(main, ["report", "--by", "week"])
    assert bad_by.exit_code == 2


def test_empty_report_formats() -> None:
    empty = {q: [] for q in CANNED} | {
        Q_DUPLICATES: [(0,)],
        Q_STOCK_MOVEMENT_ROWS: [(0,)],
        Q_PROCESSED_INPUTS: [(0,)],
        Q_SPLITS_AND_MERGES: [(0, 0, 0)],
        Q_FULFILMENT_LATENCY: [(0, [0, 0])],
    }
    report = build_report(CannedClient(empty))
    assert report.fulfilment_latency.p50_s is None
    assert report.aftersales_rates == {
        "returns": 0.0,
        "refunds": 0.0,
        "exchanges": 0.0,
        "cancels": 0.0,
    }
    text = format_report(report)
    assert "(none)" in text


def test_money_display() -> None:
    assert str(money(Decimal("10.5000"))) == "10.50"
    assert str(money(Decimal("0.3333"))) == "0.3333"
    assert str(money(Decimal("0"))) == "0.00"
