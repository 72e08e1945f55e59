"""Warehouse routing (agents/route.py): the shipped config/warehouses.toml, candidate choice per
address, and config files that must be refused."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agents.route import RoutingConfigError, RoutingTable, Warehouse
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


def order_to(country: str = "CN", province_code: str = "") -> Order:
    line = OrderLine(
        line_id="L1", sku="SKU-A", quantity=1, unit_price=Decimal("1"), paid_amount=Decimal("1")
    )
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
        address=Address(country=country, province_code=province_code, city="c", street="s"),
        lines=[line],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal("1")),
        total=Decimal("1"),
    )


@pytest.fixture(scope="module")
def shipped() -> RoutingTable:
    return RoutingTable.load(CONFIG)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warehouses.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped config -------------------------------------------------------------------


def test_there_are_31_mainland_provinces() -> None:
    assert len(MAINLAND) == 31


def test_shipped_warehouses(shipped: RoutingTable) -> None:
    assert set(shipped.warehouses) == {"WH-SH", "WH-BJ", "WH-GZ", "WH-CD"}
    assert shipped.warehouses["WH-GZ"] == Warehouse("WH-GZ", "Guangzhou", "GD")
    for wh in shipped.warehouses.values():
        assert wh.province in PROVINCES


@pytest.mark.parametrize("code", MAINLAND)
def test_every_mainland_province_ranks_all_four_warehouses(
    shipped: RoutingTable, code: str
) -> None:
    ranked = shipped.by_province[code]
    assert len(ranked) == 4
    assert set(ranked) == set(shipped.warehouses)
    assert shipped.candidates(order_to("CN", code)) == ranked


def test_routing_table_names_only_real_province_codes(shipped: RoutingTable) -> None:
    assert set(shipped.by_province) <= set(PROVINCES)
    assert set(MAINLAND) <= set(shipped.by_province)


def test_a_warehouse_province_prefers_its_own_warehouse(shipped: RoutingTable) -> None:
    for wh in shipped.warehouses.values():
        assert shipped.by_province[wh.province][0] == wh.code


def test_default_serves_every_warehouse(shipped: RoutingTable) -> None:
    assert len(shipped.default) == 4
    assert set(shipped.default) == set(shipped.warehouses)


@pytest.mark.parametrize(
    ("country", "code"), [("US", ""), ("US", "CA"), ("SG", ""), ("JP", "GD"), ("DE", "BJ")]
)
def test_foreign_addresses_get_the_default(shipped: RoutingTable, country: str, code: str) -> None:
    assert shipped.candidates(order_to(country, code)) == shipped.default


def test_chinese_address_without_or_with_unknown_province_gets_the_default(
    shipped: RoutingTable,
) -> None:
    assert shipped.candidates(order_to("CN", "")) == shipped.default
    assert shipped.candidates(order_to("CN", "XX")) == shipped.default


@pytest.mark.parametrize("code", ["HK", "MO", "TW"])
def test_sars_and_taiwan_route_as_country_or_subdivision(shipped: RoutingTable, code: str) -> None:
    ranked = shipped.by_province[code]
    assert shipped.candidates(order_to(code, code)) == ranked
    assert shipped.candidates(order_to("CN", code)) == ranked
    assert ranked != shipped.default


def test_country_is_case_insensitive(shipped: RoutingTable) -> None:
    assert shipped.candidates(order_to("cn", "SC")) == shipped.by_province["SC"]


# --- config files -------------------------------------------------------------------------

GOOD = """
[warehouses.A]
name = "Alpha"
province = "SH"

[warehouses.B]
province = "BJ"

[routing]
default = ["B", "A"]
SH = ["A", "B"]
"""


def test_minimal_config_loads(tmp_path: Path) -> None:
    table = RoutingTable.load(write(tmp_path, GOOD))
    assert table.warehouses["A"] == Warehouse("A", "Alpha", "SH")
    assert table.warehouses["B"] == Warehouse("B", "B", "BJ")  # name defaults to the code
    assert table.default == ("B", "A")
    assert table.by_province == {"SH": ("A", "B")}
    assert table.candidates(order_to("CN", "SH")) == ("A", "B")
    assert table.candidates(order_to("CN", "BJ")) == ("B", "A")


def test_missing_default_means_every_warehouse_in_file_order(tmp_path: Path) -> None:
    text = GOOD.replace('default = ["B", "A"]\n', "")
    table = RoutingTable.load(write(tmp_path, text))
    assert table.default == ("A", "B")


def test_unknown_warehouse_in_a_province_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + 'GD = ["A", "WH-NOPE"]\n')
    with pytest.raises(RoutingConfigError, match=r"routing\.GD.*WH-NOPE"):
        RoutingTable.load(path)


def test_unknown_warehouse_in_default_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('default = ["B", "A"]', 'default = ["B", "Z"]'))
    with pytest.raises(RoutingConfigError, match=r"routing\.default.*'Z'"):
        RoutingTable.load(path)


def test_empty_province_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match=r"routing\.GD is empty"):
        RoutingTable.load(write(tmp_path, GOOD + "GD = []\n"))


def test_no_warehouses_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match="empty"):
        RoutingTable.load(write(tmp_path, "[routing]\n"))


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match=str(tmp_path.name)):
        RoutingTable.load(write(tmp_path, "[warehouses.A\nname = "))


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError):
        RoutingTable.load(tmp_path / "absent.toml")


def test_warehouse_entry_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[warehouses]\nWH-A = "Shanghai"\n\n[routing]\ndefault = ["WH-A"]\n')
    with pytest.raises(RoutingConfigError):
        RoutingTable.load(path)
