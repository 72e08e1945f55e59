"""Warehouse routing (order/route.py): the shipped config/warehouses.toml, candidate choice by
coverage, shipping cost and priority, and config files that must be refused."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from order.route import (
    ABROAD,
    DESTINATIONS,
    OTHER,
    RoutingConfigError,
    RoutingTable,
    destination_of,
)
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)
from streams.regions import PROVINCES

CONFIG = Path(__file__).resolve().parents[2] / "config" / "warehouses.toml"
MAINLAND = sorted(set(PROVINCES) - {"HK", "MO", "TW"})
T0 = datetime(2026, 11, 11, tzinfo=UTC)


def address(country: str = "CN", province_code: str = "") -> Address:
    return Address(country=country, province_code=province_code, city="c", street="s")


def order_to(country: str = "CN", province_code: str = "", lines: list[OrderLine] | None = None):
    lines = lines or [
        OrderLine(
            line_id="L1", sku="SKU-A", quantity=1, unit_price=Decimal("1"), paid_amount=Decimal("1")
        )
    ]
    paid = sum((line.paid_amount for line in lines), Decimal(0))
    return Order(
        order_id=make_order_id("own", "s", "E1"),
        channel=Channel.OWN,
        shop_id="s",
        external_id="E1",
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(),
        address=address(country, province_code),
        lines=lines,
        payment=Payment(status=PaymentStatus.PAID, paid_total=paid),
        total=paid,
    )


@pytest.fixture(scope="module")
def shipped() -> RoutingTable:
    return RoutingTable.load(CONFIG)


# A minimal valid set of files; tests replace one part to break it.
WAREHOUSES = """
[warehouses.A]
name = "Alpha"
province = "SH"
priority = 2
covers = ["all"]
shipping_cost = { default = "10", east = "6", SH = "4.50", mainland = "8" }

[warehouses.B]
province = "BJ"
priority = 1
covers = ["mainland"]
shipping_cost = { default = "10", BJ = "4.50" }
"""
CARRIERS = """
default_weight_g = 300
[carriers.EMS]
name = "China Post EMS"
[default]
carrier = "EMS"
first_kg = "20"
"""
SKUS = "sku,weight_g\nSKU-A,100\n"


def write_config(
    tmp_path: Path, warehouses: str = WAREHOUSES, carriers: str = CARRIERS, skus: str = SKUS
) -> Path:
    """warehouses.toml with carriers.toml and skus.csv beside it, as the loader expects."""
    (tmp_path / "carriers.toml").write_text(carriers, encoding="utf-8")
    (tmp_path / "skus.csv").write_text(skus, encoding="utf-8")
    path = tmp_path / "warehouses.toml"
    path.write_text(warehouses, encoding="utf-8")
    return path


# --- the shipped config -------------------------------------------------------------------


def test_there_are_31_mainland_provinces() -> None:
    assert len(MAINLAND) == 31


CHINA = ("WH-SH", "WH-BJ", "WH-GZ", "WH-CD")
OVERSEAS = ("WH-US-LA", "WH-DE-FRA", "WH-JP-TYO")


def test_shipped_warehouses(shipped: RoutingTable) -> None:
    assert set(shipped.warehouses) == {*CHINA, *OVERSEAS}
    gz = shipped.warehouses["WH-GZ"]
    assert (gz.code, gz.name, gz.province) == ("WH-GZ", "Guangzhou", "GD")
    for wh in shipped.warehouses.values():
        assert wh.province in PROVINCES or wh.country != "CN"
        assert set(wh.shipping_cost) == DESTINATIONS


@pytest.mark.parametrize(
    ("province", "first"), [("SH", "WH-SH"), ("GD", "WH-GZ"), ("SC", "WH-CD"), ("BJ", "WH-BJ")]
)
def test_a_warehouse_province_goes_to_its_own_warehouse(
    shipped: RoutingTable, province: str, first: str
) -> None:
    assert shipped.candidates(order_to("CN", province))[0] == first
    assert shipped.warehouses[first].province == province


@pytest.mark.parametrize("code", MAINLAND)
def test_every_mainland_province_ranks_all_four_warehouses(
    shipped: RoutingTable, code: str
) -> None:
    ranked = shipped.candidates(order_to("CN", code))
    assert sorted(ranked) == sorted(CHINA)  # never an overseas warehouse
    assert ranked == shipped.ranked[code]


@pytest.mark.parametrize("destination", sorted(DESTINATIONS))
def test_candidates_are_the_covering_warehouses_by_cost_then_priority(
    shipped: RoutingTable, destination: str
) -> None:
    ranked = shipped.ranked[destination]
    covering = {w.code for w in shipped.warehouses.values() if destination in w.covers}
    assert set(ranked) == covering and ranked
    keys = [
        (shipped.warehouses[c].ranking_cost(destination), shipped.warehouses[c].priority)
        for c in ranked
    ]
    assert keys == sorted(keys)


def test_remote_and_western_provinces_ship_from_chengdu(shipped: RoutingTable) -> None:
    for code in ("XZ", "XJ", "QH", "CQ", "YN", "GZ"):
        assert shipped.candidates(order_to("CN", code))[0] == "WH-CD", code


@pytest.mark.parametrize(("country", "code"), [("SG", ""), ("BR", "SP"), ("GB", "")])
def test_foreign_addresses_without_a_local_warehouse_get_the_cross_border_hubs(
    shipped: RoutingTable, country: str, code: str
) -> None:
    assert shipped.candidates(order_to(country, code)) == ("WH-SH", "WH-GZ")


@pytest.mark.parametrize(
    ("country", "code", "local"),
    [
        ("US", "", "WH-US-LA"),
        ("US", "CA", "WH-US-LA"),
        ("US", "NY", "WH-US-LA"),
        ("DE", "BJ", "WH-DE-FRA"),
        ("FR", "", "WH-DE-FRA"),
        ("JP", "GD", "WH-JP-TYO"),
    ],
)
def test_an_overseas_address_goes_first_to_its_local_warehouse_then_the_hubs(
    shipped: RoutingTable, country: str, code: str, local: str
) -> None:
    assert shipped.candidates(order_to(country, code)) == (local, "WH-SH", "WH-GZ")


def test_chinese_address_without_or_with_unknown_province_gets_the_hubs(
    shipped: RoutingTable,
) -> None:
    assert shipped.candidates(order_to("CN", "")) == ("WH-SH", "WH-GZ")
    assert shipped.candidates(order_to("CN", "XX")) == ("WH-SH", "WH-GZ")


@pytest.mark.parametrize("code", ["HK", "MO", "TW"])
def test_sars_and_taiwan_route_as_country_or_subdivision(shipped: RoutingTable, code: str) -> None:
    ranked = shipped.ranked[code]
    assert shipped.candidates(order_to(code, code)) == ranked
    assert shipped.candidates(order_to(code, "")) == ranked
    assert shipped.candidates(order_to("CN", code)) == ranked
    assert set(ranked) == {"WH-SH", "WH-GZ"}  # customs clearance: the bonded hubs only


def test_country_is_case_insensitive(shipped: RoutingTable) -> None:
    assert shipped.candidates(order_to("cn", "SC")) == shipped.ranked["SC"]


def test_an_address_override_wins_over_the_order_address(shipped: RoutingTable) -> None:
    order = order_to("CN", "SH")
    assert shipped.candidates(order, address("CN", "SC"))[0] == "WH-CD"
    assert shipped.candidates(order, address("US"))[0] == "WH-US-LA"
    assert shipped.candidates(order, address("BR"))[0] == "WH-SH"
    assert shipped.candidates(order, None) == shipped.ranked["SH"]


def test_shipping_cost_is_decimal_per_destination(shipped: RoutingTable) -> None:
    assert shipped.shipping_cost("WH-SH", address("CN", "SH")) == Decimal("5.00")
    assert shipped.shipping_cost("WH-CD", address("CN", "SH")) == Decimal("12.00")
    with pytest.raises(ValueError, match="WH-NOPE"):
        shipped.shipping_cost("WH-NOPE", address())


@pytest.mark.parametrize(
    ("country", "code", "expected"),
    [
        ("CN", "ZJ", "ZJ"),
        ("cn", "zj", "ZJ"),
        ("HK", "", "HK"),
        ("US", "CA", "US-CA"),
        ("us", "us-ca", "US-CA"),
        ("US", "", "country:US"),
        ("US", "XX", "country:US"),
        ("DE", "BY", "country:DE"),
        ("CN", "", "country:CN"),
        ("XK", "", OTHER),  # Kosovo: a user-assigned code, no ISO 3166-1 country
    ],
)
def test_destination_of(country: str, code: str, expected: str) -> None:
    assert destination_of(address(country, code)) == expected


# --- config files -------------------------------------------------------------------------


def test_minimal_config_loads(tmp_path: Path) -> None:
    table = RoutingTable.load(write_config(tmp_path))
    a, b = table.warehouses["A"], table.warehouses["B"]
    assert (a.name, a.province, a.priority) == ("Alpha", "SH", 2)
    assert b.name == "B"  # the name defaults to the code
    assert not ABROAD & b.covers and a.covers >= ABROAD


def test_the_most_specific_cost_wins(tmp_path: Path) -> None:
    a = RoutingTable.load(write_config(tmp_path)).warehouses["A"]
    assert a.shipping_cost["SH"] == Decimal("4.50")  # province
    assert a.shipping_cost["ZJ"] == Decimal("6")  # region east
    assert a.shipping_cost["BJ"] == Decimal("8")  # mainland
    assert a.shipping_cost["HK"] == a.shipping_cost[OTHER] == Decimal("10")  # default
    assert a.shipping_cost["country:US"] == a.shipping_cost["US-CA"] == Decimal("10")


def test_ranking_by_cost_then_priority_then_coverage(tmp_path: Path) -> None:
    table = RoutingTable.load(write_config(tmp_path))
    assert table.candidates(order_to("CN", "SH")) == ("A", "B")  # 4.50 < 10
    assert table.candidates(order_to("CN", "BJ")) == ("B", "A")  # 4.50 < 8
    assert table.candidates(order_to("CN", "GD")) == ("A", "B")  # 8 < 10
    assert table.candidates(order_to("CN", "HK")) == ("A",)  # B covers the mainland only
    assert table.candidates(order_to("US")) == ("A",)


def test_equal_costs_go_by_priority_then_code(tmp_path: Path) -> None:
    text = "".join(
        f'[warehouses.{code}]\nprovince = "SH"\npriority = {prio}\ncovers = ["all"]\n'
        'shipping_cost = { default = "9" }\n'
        for code, prio in [("C", 1), ("B", 2), ("A", 2)]
    )
    table = RoutingTable.load(write_config(tmp_path, warehouses=text))
    assert table.candidates(order_to("CN", "GD")) == ("C", "A", "B")


def test_a_config_with_another_carriers_and_skus_path(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "c.toml").write_text(CARRIERS.replace("300", "700"), encoding="utf-8")
    (other / "w.csv").write_text("sku,weight_g\nSKU-B,5\n", encoding="utf-8")
    table = RoutingTable.load(path, carriers=other / "c.toml", skus=other / "w.csv")
    assert table.weights.default_g == 700
    assert dict(table.weights.grams) == {"SKU-B": 5}


COVERS_B = 'covers = ["mainland"]'
COST_B = 'shipping_cost = { default = "10", BJ = "4.50" }'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('province = "BJ"', 'province = "XX"', r"warehouses\.B\.province: .*'XX'"),
        (COVERS_B, 'covers = ["mainland", "atlantis"]', r"warehouses\.B\.covers: .*atlantis"),
        (COVERS_B, "covers = []", r"warehouses\.B\.covers: is empty"),
        (COVERS_B, 'covers = ["BJ", "BJ"]', r"warehouses\.B\.covers: .*\['BJ'\] more than once"),
        (COVERS_B, 'covers = "mainland"', r"warehouses\.B\.covers: .*list"),
        (COST_B, 'shipping_cost = { default = "10", BJ = "-1" }', r"shipping_cost\.BJ: .*0"),
        (COST_B, 'shipping_cost = { default = "10", BJ = 4.5 }', r"shipping_cost\.BJ: .*string"),
        (COST_B, 'shipping_cost = { default = "x" }', r"shipping_cost\.default: .*not a number"),
        (COST_B, 'shipping_cost = { BJ = "4" }', r"shipping_cost: .*\"default\""),
        (COST_B, 'shipping_cost = { default = "4", all = "3" }', r"shipping_cost: .*all"),
        (COST_B, 'shipping_cost = { default = "4", XX = "3" }', r"shipping_cost: .*XX"),
        ("priority = 1", "priority = -1", r"warehouses\.B\.priority"),
        ("priority = 1", 'priority = "1"', r"warehouses\.B\.priority"),
        ("priority = 1\n", "", r"warehouses\.B\.priority: Field required"),
        ("[warehouses.B]", "[warehouses.'B,1']", r'warehouses\."B,1" \(key\): String should'),
        (
            "[warehouses.B]",
            "[warehouses.B]\nregion = 'north'",
            r"warehouses\.B\.region: unknown field \(known here: name, country, province, cur",
        ),
    ],
)
def test_bad_warehouse_is_refused_naming_file_and_field(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in WAREHOUSES
    path = write_config(tmp_path, warehouses=WAREHOUSES.replace(old, new))
    with pytest.raises(RoutingConfigError, match=message) as exc:
        RoutingTable.load(path)
    assert str(path) in str(exc.value)


def test_a_destination_no_warehouse_covers_is_refused(tmp_path: Path) -> None:
    text = WAREHOUSES.replace('covers = ["all"]', 'covers = ["east", "south"]')
    with pytest.raises(RoutingConfigError, match=r"no warehouse covers \['other'\]"):
        RoutingTable.load(write_config(tmp_path, warehouses=text))


def test_the_old_priority_lists_are_refused(tmp_path: Path) -> None:
    text = WAREHOUSES + '[routing]\ndefault = ["A", "B"]\n'
    known = r"known here: base_currency, rates, warehouses"
    with pytest.raises(RoutingConfigError, match=rf"routing: unknown field \({known}\)"):
        RoutingTable.load(write_config(tmp_path, warehouses=text))


def test_duplicate_warehouse_is_refused(tmp_path: Path) -> None:
    text = WAREHOUSES + '[warehouses.A]\nprovince = "SH"\n'
    with pytest.raises(RoutingConfigError, match=r"warehouses\.toml"):
        RoutingTable.load(write_config(tmp_path, warehouses=text))


def test_no_warehouses_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match="empty"):
        RoutingTable.load(write_config(tmp_path, warehouses="warehouses = {}\n"))
    with pytest.raises(RoutingConfigError, match="warehouses: Field required"):
        RoutingTable.load(write_config(tmp_path, warehouses=""))


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match=str(tmp_path.name)):
        RoutingTable.load(write_config(tmp_path, warehouses="[warehouses.A\nname = "))


def test_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match=r"absent\.toml"):
        RoutingTable.load(tmp_path / "absent.toml")
    path = write_config(tmp_path)
    (tmp_path / "carriers.toml").unlink()
    with pytest.raises(RoutingConfigError, match=r"carriers\.toml"):
        RoutingTable.load(path)


def test_warehouse_entry_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, warehouses='[warehouses]\nWH-A = "Shanghai"\n')
    with pytest.raises(RoutingConfigError, match=r"warehouses\.WH-A"):
        RoutingTable.load(path)
