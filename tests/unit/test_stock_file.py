"""Stock files (state/stock.py parse_stock_file / validate_rows): CSV and JSON, every bad row
reported at once, nothing half-accepted. Pure parsing only: no Redis."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.stock import MAX_QTY, StockError, StockRow, parse_stock_file, validate_rows

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "stock.csv"
WAREHOUSES = ("WH-SH", "WH-BJ", "WH-GZ", "WH-CD", "WH-US-LA", "WH-DE-FRA", "WH-JP-TYO")


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def bad_rows(exc: pytest.ExceptionInfo[StockError]) -> list[int]:
    return [int(n) for n in re.findall(r"row (\d+):", str(exc.value))]


# --- good files ---------------------------------------------------------------------------


def test_sample_stock_file_parses() -> None:
    rows = parse_stock_file(SAMPLE, WAREHOUSES)
    assert rows
    assert StockRow("SKU-PHONE-X1", "WH-SH", 120) in rows
    assert {r.warehouse for r in rows} <= set(WAREHOUSES)
    assert len({(r.sku, r.warehouse) for r in rows}) == len(rows)


def test_good_csv(tmp_path: Path) -> None:
    text = "sku,warehouse,qty\nA,WH-SH,5\n B , WH-BJ , 0 \nC,WH-GZ,1000000000\n"
    rows = parse_stock_file(write(tmp_path, "s.csv", text), WAREHOUSES)
    assert rows == [
        StockRow("A", "WH-SH", 5),
        StockRow("B", "WH-BJ", 0),
        StockRow("C", "WH-GZ", MAX_QTY),
    ]


def test_csv_with_bom_crlf_reordered_and_padded_header(tmp_path: Path) -> None:
    text = "\ufeff qty , sku ,warehouse\r\n7,A,WH-SH\r\n"
    rows = parse_stock_file(write(tmp_path, "s.csv", text.encode("utf-8")), WAREHOUSES)
    assert rows == [StockRow("A", "WH-SH", 7)]


def test_good_json_list(tmp_path: Path) -> None:
    data = [
        {"sku": "A", "warehouse": "WH-SH", "qty": 5},
        {"sku": "B", "warehouse": "WH-CD", "qty": "6"},
    ]
    rows = parse_stock_file(write(tmp_path, "s.json", json.dumps(data)), WAREHOUSES)
    assert rows == [StockRow("A", "WH-SH", 5), StockRow("B", "WH-CD", 6)]


def test_json_object_with_rows_and_single_object(tmp_path: Path) -> None:
    wrapped = {"rows": [{"sku": "A", "warehouse": "WH-SH", "qty": 1}]}
    assert parse_stock_file(write(tmp_path, "w.json", json.dumps(wrapped)), WAREHOUSES) == [
        StockRow("A", "WH-SH", 1)
    ]
    single = {"sku": "A", "warehouse": "WH-BJ", "qty": 2}
    assert parse_stock_file(write(tmp_path, "o.json", json.dumps(single)), WAREHOUSES) == [
        StockRow("A", "WH-BJ", 2)
    ]


def test_json_detected_by_content_whatever_the_suffix(tmp_path: Path) -> None:
    data = [{"sku": "A", "warehouse": "WH-SH", "qty": 3}]
    path = write(tmp_path, "stock.txt", "  " + json.dumps(data))
    assert parse_stock_file(path, WAREHOUSES) == [StockRow("A", "WH-SH", 3)]


def test_jsonl(tmp_path: Path) -> None:
    text = (
        '{"sku": "A", "warehouse": "WH-SH", "qty": 1}\n\n'
        '{"sku": "B", "warehouse": "WH-SH", "qty": 2}\n'
    )
    rows = parse_stock_file(write(tmp_path, "s.jsonl", text), WAREHOUSES)
    assert rows == [StockRow("A", "WH-SH", 1), StockRow("B", "WH-SH", 2)]


def test_same_sku_in_several_warehouses_is_not_a_duplicate() -> None:
    records: list[dict[str, object]] = [
        {"sku": "A", "warehouse": wh, "qty": 1} for wh in WAREHOUSES
    ]
    assert len(validate_rows(records, set(WAREHOUSES))) == len(WAREHOUSES)


# --- bad rows -----------------------------------------------------------------------------

BAD_CSV = """sku,warehouse,qty
GOOD-1,WH-SH,5
A,WH-XX,5
B,WH-SH,-1
C,WH-SH,1.5
D,WH-SH,lots
,WH-SH,3
GOOD-1,WH-SH,7
E,WH-SH,
F,WH-SH,1000000001
G|H,WH-SH,1
GOOD-2,WH-BJ,2
"""


def test_every_bad_csv_row_is_reported_and_nothing_applied(tmp_path: Path) -> None:
    with pytest.raises(StockError) as exc:
        parse_stock_file(write(tmp_path, "s.csv", BAD_CSV), WAREHOUSES)
    message = str(exc.value)
    assert "nothing applied" in message
    assert message.startswith("9 bad row(s)")
    assert bad_rows(exc) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # numbered among data rows
    for fragment in [
        "row 2: unknown warehouse 'WH-XX'",
        "row 3: qty -1 is negative",
        "row 4: qty '1.5' is not a whole number",
        "row 5: qty 'lots' is not a whole number",
        "row 6: sku is empty",
        "row 7: duplicate row for GOOD-1 at WH-SH",
        "row 8: qty '' is not a whole number",
        "row 9: qty 1000000001 is implausibly large",
        "row 10: sku 'G|H' has forbidden characters",
    ]:
        assert fragment in message, fragment
    assert "row 1:" not in message and "row 11:" not in message


def test_every_bad_json_row_is_reported(tmp_path: Path) -> None:
    data = [
        {"sku": "A", "warehouse": "WH-SH", "qty": 1},
        {"sku": "B", "warehouse": "WH-NOPE", "qty": 1},
        {"sku": "C", "warehouse": "WH-SH", "qty": -4},
        {"sku": "D", "warehouse": "WH-SH", "qty": 2.5},
        {"sku": "E", "warehouse": "WH-SH", "qty": "x"},
        {"sku": "", "warehouse": "WH-SH", "qty": 1},
        {"sku": "A", "warehouse": "WH-SH", "qty": 9},
        {"sku": "F", "warehouse": "WH-SH", "qty": True},
        {"sku": "G", "warehouse": "WH-SH", "qty": None},
        {"sku": "H", "warehouse": "WH-SH"},
        {"warehouse": "WH-SH", "qty": 1},
    ]
    with pytest.raises(StockError) as exc:
        parse_stock_file(write(tmp_path, "s.json", json.dumps(data)), WAREHOUSES)
    assert "nothing applied" in str(exc.value)
    assert bad_rows(exc) == list(range(2, 12))
    assert "duplicate row for A at WH-SH" in str(exc.value)


def test_only_the_first_twenty_problems_are_listed_but_all_counted() -> None:
    records: list[dict[str, object]] = [
        {"sku": f"S{i}", "warehouse": "WH-SH", "qty": -1} for i in range(25)
    ]
    with pytest.raises(StockError) as exc:
        validate_rows(records, set(WAREHOUSES))
    assert str(exc.value).startswith("25 bad row(s), nothing applied")
    assert bad_rows(exc) == list(range(1, 21))
    assert "... and 5 more" in str(exc.value)


@pytest.mark.parametrize(
    "header", ["sku,qty", "sku,warehouse", "warehouse,qty", "SKU,Warehouse,Qty", "a,b,c", ""]
)
def test_missing_header_columns(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, "s.csv", f"{header}\nA,WH-SH,1\n")
    with pytest.raises(StockError, match="header must have sku,warehouse,qty"):
        parse_stock_file(path, WAREHOUSES)


def test_header_only_has_no_rows(tmp_path: Path) -> None:
    with pytest.raises(StockError, match="no stock rows"):
        parse_stock_file(write(tmp_path, "s.csv", "sku,warehouse,qty\n"), WAREHOUSES)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("s.json", "[{", "not valid JSON"),
        ("s.json", "[1, 2]", "expected a list of objects"),
        ("s.json", '"text"', "expected a list of objects"),
        ("s.jsonl", '{"sku": "A"}\n{oops', "not valid JSON"),
        ("s.csv", b"sku,warehouse,qty\nA,WH-SH,\xff\n", "not UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str | bytes, match: str) -> None:
    with pytest.raises(StockError, match=match):
        parse_stock_file(write(tmp_path, name, content), WAREHOUSES)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StockError, match="cannot read"):
        parse_stock_file(tmp_path / "absent.csv", WAREHOUSES)


@pytest.mark.parametrize("qty", ["--1", "²", "1²"])
def test_odd_digit_strings_are_reported_as_bad_rows(qty: str) -> None:
    records: list[dict[str, object]] = [
        {"sku": "A", "warehouse": "WH-SH", "qty": qty},
        {"sku": "B", "warehouse": "WH-XX", "qty": 1},
    ]
    with pytest.raises(StockError) as exc:
        validate_rows(records, set(WAREHOUSES))
    assert bad_rows(exc) == [1, 2]


# --- hypothesis: valid rows round-trip through CSV -----------------------------------------

SKU_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="|{}\n\r\t")
SKUS = st.text(SKU_CHARS, min_size=1, max_size=40).filter(lambda s: s == s.strip() and s)
ROWS = st.lists(
    st.tuples(SKUS, st.sampled_from(WAREHOUSES), st.integers(0, MAX_QTY)),
    min_size=1,
    max_size=30,
    unique_by=lambda r: (r[0], r[1]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ROWS)
def test_valid_rows_round_trip_through_csv(
    tmp_path: Path, rows: list[tuple[str, str, int]]
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["sku", "warehouse", "qty"])
    writer.writerows(rows)
    path = write(tmp_path, "gen.csv", buf.getvalue())
    assert parse_stock_file(path, WAREHOUSES) == [StockRow(*r) for r in rows]


@settings(max_examples=100, deadline=None)
@given(ROWS)
def test_valid_rows_round_trip_through_validate(rows: list[tuple[str, str, int]]) -> None:
    records: list[dict[str, object]] = [{"sku": s, "warehouse": w, "qty": q} for s, w, q in rows]
    assert validate_rows(records, set(WAREHOUSES)) == [StockRow(*r) for r in rows]
