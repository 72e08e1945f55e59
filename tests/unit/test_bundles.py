"""Bundles (组合商品/套装): the sku map's rows and their checks, a bundle line's expansion into
component lines (ids, amounts split exactly), one warehouse for a bundle's order, after-sales
naming a bundle or one component (docs/decisions/0026-bundles.md)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from order.aftersales import with_bundle_lines, with_sku_lines
from order.allocation import ShortagePolicy, plan_allocation
from order.record import OrderRecord
from order.wms import refund_value
from streams.channels import adapt
from streams.channels.base import AdapterContext, LineDraft, expand_bundle
from streams.messages import AfterSalesKind, AfterSalesRequest, CommandLine, OrderState
from streams.models import Order
from streams.sku_map import (
    Component,
    SkuMap,
    SkuMapError,
    build_map,
    read_rows,
    split_amount,
    write_rows,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
CONFIG = Path(__file__).resolve().parents[2] / "config"
KNOWN = {"SKU-CASE-C3", "SKU-CHARGER-65W", "SKU-PHONE-X1"}
KIT = (Component("SKU-CASE-C3", 1, Decimal("0.3")), Component("SKU-CHARGER-65W", 2, Decimal("0.7")))


def write_map(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sku_map.csv"
    path.write_text("channel,shop_id,channel_sku,sku,qty,share\n" + body, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, body: str) -> str:
    with pytest.raises(SkuMapError) as info:
        SkuMap.load(write_map(tmp_path, body), KNOWN)
    assert str(info.value).startswith(str(tmp_path / "sku_map.csv"))
    return str(info.value)


# --- the map -------------------------------------------------------------------------------


def test_the_shipped_map_loads_with_its_kit() -> None:
    skus = {line.split(",")[0] for line in (CONFIG / "skus.csv").read_text().splitlines()[1:]}
    sku_map = SkuMap.load(CONFIG / "sku_map.csv", skus)
    kit = sku_map.components("taobao", "any-shop", "KIT-CASE-CHARGER")
    assert kit is not None and [c.sku for c in kit] == ["SKU-CASE-C3", "SKU-CHARGER-65W"]
    assert sum(c.share for c in kit) == 1
    assert sku_map.resolve("taobao", "any-shop", "TB-PHONE-X1-BLK") == "SKU-PHONE-X1"


def test_a_four_column_file_loads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("channel,shop_id,channel_sku,sku\njd,,A,SKU-PHONE-X1\njd,*,B,SKU-PHONE-X1\n")
    sku_map = SkuMap.load(path)
    assert sku_map.resolve("jd", "s", "A") == sku_map.resolve("jd", "s", "B") == "SKU-PHONE-X1"
    assert sku_map.components("jd", "s", "A") is None and not sku_map.bundles


def test_the_shops_own_row_wins_over_the_wildcard(tmp_path: Path) -> None:
    sku_map = SkuMap.load(
        write_map(
            tmp_path,
            (
                "taobao,*,KIT,SKU-CASE-C3,1,0.5\ntaobao,*,KIT,SKU-CHARGER-65W,1,0.5\n"
                "taobao,shop-a,KIT,SKU-PHONE-X1,,\njd,shop-b,KIT,SKU-PHONE-X1,2,\n"
            ),
        ),
        KNOWN,
    )
    assert sku_map.components("taobao", "shop-a", "KIT") is None
    assert sku_map.resolve("taobao", "shop-a", "KIT") == "SKU-PHONE-X1"
    assert sku_map.components("taobao", "shop-z", "KIT") is not None
    assert sku_map.components("jd", "shop-b", "KIT") == (Component("SKU-PHONE-X1", 2),)
    assert sku_map.components("jd", "shop-c", "KIT") is None  # no wildcard row on jd


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("tmall,*,A,SKU-CASE-C3,,\n", "line 2: channel: 'tmall' is not one of"),
        ("jd,*,,SKU-CASE-C3,,\n", "line 2: channel_sku: empty"),
        ("jd,*,A,,,\n", "line 2: sku: empty"),
        ("jd,*,A,SKU-CASE-C3,0,\n", "line 2: qty: '0' is not a whole number 1-1000"),
        ("jd,*,A,SKU-CASE-C3,1001,\n", "qty: '1001'"),
        ("jd,*,A,SKU-CASE-C3,1.5,\n", "qty: '1.5'"),
        (
            "jd,*,A,SKU-CASE-C3,1,0.5\njd,*,A,SKU-CHARGER-65W,1,0.4\n",
            "line 2: jd/*/A: share: the components' shares add up to 0.9, not 1",
        ),
        (
            "jd,*,A,SKU-CASE-C3,1,0.5\njd,*,A,SKU-CHARGER-65W,1,\n",
            "share: every component of a bundle needs one (missing on line 3)",
        ),
        ("jd,*,A,SKU-CASE-C3,1,-0.5\n", "line 2: share: '-0.5' is not a number above 0"),
        ("jd,*,A,SKU-CASE-C3,1,NaN\n", "share: 'NaN'"),
        ("jd,*,A,SKU-CASE-C3,1,0.5\n", "line 2: share: a code of one sku takes no share"),
        ("jd,*,A,SKU-CASE-C3,2,0.5\n", "a bundle of one sku takes its whole price (1)"),
        (
            "jd,*,A,SKU-NOPE,1,0.5\njd,*,A,SKU-CASE-C3,1,0.5\n",
            "line 2: sku: 'SKU-NOPE' is not in skus.csv",
        ),
        (
            "jd,*,A,SKU-CASE-C3,1,0.5\njd,*,A,SKU-CASE-C3,1,0.5\n",
            "line 3: sku: 'SKU-CASE-C3' listed twice for jd/*/A",
        ),
        (
            "jd,*,A,B,1,0.5\njd,*,A,SKU-CASE-C3,1,0.5\njd,*,B,SKU-CASE-C3,2,\n",
            "component 'B' is itself a bundle (bundles do not nest)",
        ),
        ("jd,*,A,SKU-CASE-C3,1,0.5\njd,*,A,SKU-CASE-C3X,1,0.5\njd,*,A,X,1,\n", "3 problems"),
    ],
)
def test_a_bad_row_is_named_by_line_and_field(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in problems_of(tmp_path, body)


def test_a_bad_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("channel,code,sku\njd,A,B\n")
    with pytest.raises(SkuMapError, match="header must be channel,shop_id,channel_sku,sku"):
        SkuMap.load(path)


def test_rows_written_read_back_the_same(tmp_path: Path) -> None:
    path = write_map(tmp_path, "jd,*,A,SKU-CASE-C3,1,0.25\njd,*,A,SKU-CHARGER-65W,3,0.75\n")
    rows = read_rows(path)
    write_rows(path, rows)
    assert read_rows(path) == rows
    assert build_map(rows, path, KNOWN).bundles[("jd", "*", "A")][1] == Component(
        "SKU-CHARGER-65W", 3, Decimal("0.75")
    )
    assert [p.name for p in tmp_path.iterdir()] == ["sku_map.csv"]  # no temporary file left


# --- splitting and expanding ---------------------------------------------------------------

money = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2)
shares = st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=20)


def components_of(weights: list[int]) -> tuple[Component, ...]:
    """Shares from weights, each a whole number of millionths, adding up to exactly 1."""
    total = sum(weights)
    parts = [Decimal(w * 1_000_000 // total) / 1_000_000 for w in weights[:-1]]
    parts.append(1 - sum(parts, Decimal(0)))
    return tuple(Component(f"S{i}", 1, s) for i, s in enumerate(parts) if s > 0)


@given(amount=money, weights=shares)
def test_parts_add_up_exactly_and_are_never_negative(amount: Decimal, weights: list[int]) -> None:
    components = components_of(weights)
    parts = split_amount(amount, components)
    assert sum(parts, Decimal(0)) == amount
    assert all(isinstance(p, Decimal) and p >= 0 for p in parts)
    assert len(parts) == len(components)


@given(
    paid=money,
    quantity=st.integers(min_value=1, max_value=999),
    unit_price=money,
    weights=shares,
)
def test_a_bundle_line_becomes_its_components(
    paid: Decimal, quantity: int, unit_price: Decimal, weights: list[int]
) -> None:
    components = components_of(weights)
    draft = LineDraft("L7", "KIT", quantity, unit_price, paid, title="kit")
    lines = expand_bundle(draft, components)
    assert [ln.line_id for ln in lines] == [f"L7/{n}" for n in range(1, len(components) + 1)]
    assert sum((ln.paid_amount for ln in lines), Decimal(0)) == paid
    assert all(ln.paid_amount >= 0 and ln.discount >= 0 for ln in lines)
    assert [ln.quantity for ln in lines] == [quantity * c.qty for c in components]
    assert {
        (ln.bundle.code, ln.bundle.line_id, ln.bundle.quantity) for ln in lines if ln.bundle
    } == {("KIT", "L7", quantity)}
    assert expand_bundle(draft, components) == lines  # deterministic: a re-push is the same


def test_the_remainder_cent_goes_to_the_last_component() -> None:
    thirds = (
        Component("A", 1, Decimal("0.333333")),
        Component("B", 1, Decimal("0.333333")),
        Component("C", 1, Decimal("0.333334")),
    )
    assert split_amount(Decimal("100.00"), thirds) == [
        Decimal("33.33"),
        Decimal("33.33"),
        Decimal("33.34"),
    ]


def taobao_with_kit() -> Order:
    """The Taobao sample with its phone case line sold as the kit (2 kits for 117.40)."""
    trade: dict[str, Any] = json.loads((SAMPLES / "taobao.json").read_text(encoding="utf-8"))
    trade["orders"]["order"][1]["outer_iid"] = "KIT"
    ctx = AdapterContext(sku_map=SkuMap(bundles={("taobao", "*", "KIT"): KIT}))
    return adapt("taobao", json.dumps(trade, ensure_ascii=False).encode(), ctx)


def test_an_order_with_a_bundle_carries_its_components() -> None:
    order = taobao_with_kit()
    phone, case, charger = order.lines
    assert phone.bundle is None and phone.sku == "SKU-PHONE-X1"
    assert (case.sku, case.quantity, case.paid_amount) == ("SKU-CASE-C3", 2, Decimal("35.22"))
    assert (charger.sku, charger.quantity, charger.paid_amount) == (
        "SKU-CHARGER-65W",
        4,
        Decimal("82.18"),
    )
    assert case.line_id.endswith("/1") and charger.line_id.endswith("/2")
    assert case.paid_amount + charger.paid_amount == Decimal("117.40")
    assert order.quantity_by_sku == {"SKU-PHONE-X1": 1, "SKU-CASE-C3": 2, "SKU-CHARGER-65W": 4}
    assert order.has_bundles and order.fingerprint() != order.v1_fingerprint()


def test_an_order_without_bundles_keeps_its_json_and_fingerprint() -> None:
    trade = json.loads((SAMPLES / "taobao.json").read_text(encoding="utf-8"))
    order = adapt("taobao", json.dumps(trade).encode())
    assert not order.has_bundles
    assert order.fingerprint() == order.v1_fingerprint()
    assert all('"bundle"' not in ln.model_dump_json() or ln.bundle is None for ln in order.lines)


# --- one warehouse, after-sales ------------------------------------------------------------


def test_a_bundle_order_is_never_split_even_when_the_shop_splits() -> None:
    quantities = {"SKU-CASE-C3": 2, "SKU-CHARGER-65W": 4}
    available = {"SKU-CASE-C3": {"WH-A": 2}, "SKU-CHARGER-65W": {"WH-B": 4}}
    split = plan_allocation(quantities, ["WH-A", "WH-B"], available, ShortagePolicy.SPLIT)
    assert split == {"SKU-CASE-C3": [("WH-A", 2)], "SKU-CHARGER-65W": [("WH-B", 4)]}
    stocked = {"SKU-CASE-C3": ["WH-A"], "SKU-CHARGER-65W": ["WH-B"]}
    for policy in ShortagePolicy:
        assert (
            plan_allocation(quantities, ["WH-A", "WH-B"], available, policy, stocked, together=True)
            is None
        )
    available["SKU-CHARGER-65W"]["WH-A"] = 4
    assert plan_allocation(
        quantities, ["WH-A", "WH-B"], available, ShortagePolicy.SPLIT, together=True
    ) == {"SKU-CASE-C3": [("WH-A", 2)], "SKU-CHARGER-65W": [("WH-A", 4)]}


def record_of(order: Order) -> OrderRecord:
    return OrderRecord(
        order_id=order.order_id,
        state=OrderState.SHIPPED,
        order=order,
        fingerprint=order.fingerprint(),
    )


def request(order: Order, *line_ids: str, skus: tuple[str, ...] = ()) -> AfterSalesRequest:
    return AfterSalesRequest(
        request_id="R1",
        order_id=order.order_id,
        kind=AfterSalesKind.RETURN,
        line_ids=list(line_ids),
        channel_skus=list(skus),
        at=order.created_at,
    )


def test_naming_the_bundle_line_names_every_component() -> None:
    order = taobao_with_kit()
    record = record_of(order)
    phone, case, charger = order.lines
    assert case.bundle is not None
    bundle_id = case.bundle.line_id
    got = with_bundle_lines(record, request(order, bundle_id))
    assert got.line_ids == [case.line_id, charger.line_id]
    assert with_bundle_lines(record, request(order, charger.line_id)).line_ids == [charger.line_id]
    both = with_bundle_lines(record, request(order, phone.line_id, bundle_id, case.line_id))
    assert both.line_ids == [phone.line_id, case.line_id, charger.line_id]
    by_sku, unknown = with_sku_lines(record, request(order, skus=("KIT",)))
    assert not unknown and with_bundle_lines(record, by_sku).line_ids == got.line_ids


def test_a_component_refunds_its_share_and_the_bundle_its_whole() -> None:
    order = taobao_with_kit()
    record = record_of(order)
    _, case, charger = order.lines

    def value(*lines: Any) -> Decimal:
        return refund_value(
            record,
            [CommandLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity) for ln in lines],
        )

    assert value(charger) == Decimal("82.18")
    assert value(case, charger) == Decimal("117.40")


# --- ./oms skumap --------------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from core.settings import reset_settings

    for name in ("sku_map.csv", "skus.csv"):
        (tmp_path / name).write_bytes((CONFIG / name).read_bytes())
    monkeypatch.setenv("OMS_CONFIG_DIR", str(tmp_path))
    reset_settings()
    yield tmp_path
    reset_settings()


def skumap_cli(*args: str) -> Any:
    from click.testing import CliRunner

    from ops.skumap_cli import skumap

    return CliRunner().invoke(skumap, list(args))


def test_skumap_add_checks_before_writing_and_remove_takes_it_out(config_dir: Path) -> None:
    path = config_dir / "sku_map.csv"
    before = path.read_text()
    bad = skumap_cli(
        "add",
        "--channel",
        "jd",
        "--code",
        "K2",
        "--sku",
        "SKU-CASE-C3:1:0.5",
        "--sku",
        "SKU-NOPE:1:0.5",
    )
    assert bad.exit_code == 2 and "'SKU-NOPE' is not in skus.csv" in bad.output
    assert path.read_text() == before
    good = skumap_cli(
        "add",
        "--channel",
        "jd",
        "--shop",
        "s1",
        "--code",
        "K2",
        "--sku",
        "SKU-CASE-C3:2:0.4",
        "--sku",
        "SKU-CHARGER-65W:1:0.6",
        "--json",
    )
    assert good.exit_code == 0 and json.loads(good.output)["added"] == "jd/s1/K2"
    listed = json.loads(skumap_cli("list", "--json").output)["entries"]
    kit = next(e for e in listed if e["channel_sku"] == "K2")
    assert kit["components"] == [
        {"sku": "SKU-CASE-C3", "qty": 2, "share": "0.4"},
        {"sku": "SKU-CHARGER-65W", "qty": 1, "share": "0.6"},
    ]
    assert skumap_cli("remove", "--channel", "jd", "--shop", "s1", "--code", "K2").exit_code == 0
    assert path.read_text().splitlines()[1:] == before.splitlines()[1:]
    assert skumap_cli("remove", "--channel", "jd", "--code", "K2").exit_code == 1
    assert json.loads(skumap_cli("check", "--json").output)["bundles"] == 2
