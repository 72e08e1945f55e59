"""Carrier choice and parcel weight (order/route.py): the shipped config/carriers.toml and
config/skus.csv, the rule semantics (cheapest match wins, file order breaks ties, the default
takes the rest) and files that must be refused."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.loadgen import DEFAULT_CATALOGUE
from order.route import Carrier, RoutingConfigError, RoutingTable
from streams.models import Address, OrderLine
from streams.regions import PROVINCES

from .test_route import CARRIERS, CONFIG, address, write_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped() -> RoutingTable:
    return RoutingTable.load(CONFIG)


def line(sku: str, quantity: int = 1, line_id: str = "L1") -> OrderLine:
    return OrderLine(
        line_id=line_id, sku=sku, quantity=quantity, unit_price=Decimal(1), paid_amount=Decimal(1)
    )


# --- the shipped config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warehouse", "to", "grams", "carrier", "cost"),
    [
        ("WH-SH", address("CN", "ZJ"), 450, "YTO", "4.20"),  # light parcel from a hub
        ("WH-BJ", address("CN", "HE"), 450, "ZTO", "4.50"),  # YTO's rate is for the hubs
        ("WH-SH", address("CN", "JS"), 2500, "ZTO", "7.50"),  # 4.50 + 2 started kg
        ("WH-GZ", address("CN", "GD"), 25_000, "JD", "56.80"),  # heavy: 28 + 24 x 1.20
        ("WH-CD", address("CN", "XZ"), 450, "EMS", "15.00"),  # remote province
        ("WH-CD", address("CN", "XJ"), 1200, "EMS", "23.00"),
        ("WH-CD", address("CN", "QH"), 30_000, "EMS", "247.00"),  # no JD there either
        ("WH-GZ", address("HK", ""), 450, "SF", "28.00"),
        ("WH-SH", address("CN", "TW"), 1500, "SF", "40.00"),
        ("WH-SH", address("US", "CA"), 450, "UPS", "160.00"),  # UPS cheaper when light
        ("WH-SH", address("US", "CA"), 5000, "DHL", "420.00"),  # DHL from 3 kg on
        ("WH-GZ", address("SG"), 800, "DHL", "180.00"),
        ("WH-SH", address("BR"), 800, "EMS", "140.00"),  # no rule: the default
        ("WH-BJ", address("US"), 800, "EMS", "140.00"),  # no express contract from Beijing
    ],
)
def test_shipped_carrier_choice(
    shipped: RoutingTable, warehouse: str, to: Address, grams: int, carrier: str, cost: str
) -> None:
    chosen = shipped.choose_carrier(warehouse, to, grams)
    assert (chosen.code, chosen.cost) == (carrier, Decimal(cost))
    assert chosen.name == shipped.carriers.names[carrier]


def test_shipped_carriers_are_the_realistic_ones(shipped: RoutingTable) -> None:
    assert set(shipped.carriers.names) == {
        *("SF", "ZTO", "YTO", "JD", "EMS", "DHL", "UPS"),
        *("USPS", "FEDEX", "DHLDE", "DPD", "YAMATO", "SAGAWA"),
    }
    assert shipped.carriers.names["JD"] == "JD Logistics"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["WH-SH", "WH-BJ", "WH-GZ", "WH-CD", "WH-US-LA", "WH-DE-FRA", "WH-JP-TYO"]),
    st.sampled_from(sorted(PROVINCES)) | st.sampled_from(["", "CA", "NY", "Texas"]),
    st.sampled_from(["CN", "HK", "US", "DE", "BR", "JP"]),
    st.integers(min_value=0, max_value=200_000),
)
def test_every_parcel_gets_a_known_carrier_at_a_price(
    shipped: RoutingTable, warehouse: str, province: str, country: str, grams: int
) -> None:
    table = shipped
    chosen = table.choose_carrier(warehouse, address(country, province), grams)
    assert chosen.code in table.carriers.names
    assert chosen.cost > 0
    heavier = table.choose_carrier(warehouse, address(country, province), grams + 1000)
    if heavier.code == chosen.code:  # the same carrier never gets cheaper with weight
        assert heavier.cost >= chosen.cost


def test_choose_carrier_refuses_unknown_warehouse_and_negative_weight(
    shipped: RoutingTable,
) -> None:
    with pytest.raises(ValueError, match="WH-NOPE"):
        shipped.choose_carrier("WH-NOPE", address("CN", "SH"), 100)
    with pytest.raises(ValueError, match="negative"):
        shipped.choose_carrier("WH-SH", address("CN", "SH"), -1)


def test_shipped_weights_cover_every_sku_in_use(shipped: RoutingTable) -> None:
    with (ROOT / "samples" / "stock.csv").open(newline="") as fh:
        stocked = {row["sku"] for row in csv.DictReader(fh)}
    catalogue = {sku for sku, _ in DEFAULT_CATALOGUE}
    assert stocked | catalogue <= set(shipped.weights.grams)
    assert all(0 < g < 5000 for g in shipped.weights.grams.values())


def test_weight_sums_units_and_defaults_unknown_skus(shipped: RoutingTable) -> None:
    lines = [line("SKU-PHONE-X1", 2), line("SKU-CASE-C3", 1, "L2"), line("SKU-NEW", 3, "L3")]
    default = shipped.weights.default_g
    assert shipped.weight_g(lines) == 2 * 450 + 60 + 3 * default
    assert shipped.weight_g([]) == 0


# --- rule semantics -----------------------------------------------------------------------


def rules(*entries: str) -> str:
    """The minimal carriers file plus two more carriers and the given [[rules]]."""
    names = '[carriers.ZTO]\nname = "ZTO"\n[carriers.SF]\nname = "SF"\n'
    return CARRIERS + names + "".join(f"[[rules]]\n{e}\n" for e in entries)


def choose(tmp_path: Path, carriers: str, warehouse: str, to: Address, grams: int) -> Carrier:
    return RoutingTable.load(write_config(tmp_path, carriers=carriers)).choose_carrier(
        warehouse, to, grams
    )


def test_cheapest_matching_rule_wins(tmp_path: Path) -> None:
    text = rules('carrier = "SF"\nfirst_kg = "9"', 'carrier = "ZTO"\nfirst_kg = "5"')
    assert choose(tmp_path, text, "A", address("CN", "SH"), 100).code == "ZTO"


def test_equal_price_goes_to_the_rule_first_in_the_file(tmp_path: Path) -> None:
    text = rules('carrier = "SF"\nfirst_kg = "5"', 'carrier = "ZTO"\nfirst_kg = "5"')
    assert choose(tmp_path, text, "A", address("CN", "SH"), 100).code == "SF"


def test_price_counts_every_started_extra_kilogram(tmp_path: Path) -> None:
    text = rules('carrier = "SF"\nfirst_kg = "10"\nper_extra_kg = "2.5"')
    expected = {0: "10", 1000: "10", 1001: "12.5", 2000: "12.5", 2001: "15"}
    for grams, cost in expected.items():
        assert choose(tmp_path, text, "A", address("CN", "SH"), grams).cost == Decimal(cost)


def test_weight_bounds_are_inclusive(tmp_path: Path) -> None:
    text = rules('carrier = "SF"\nfirst_kg = "1"\nmin_weight_g = 100\nmax_weight_g = 200')
    codes = [choose(tmp_path, text, "A", address("CN", "SH"), g).code for g in (99, 100, 200, 201)]
    assert codes == ["EMS", "SF", "SF", "EMS"]


def test_match_by_warehouse_country_and_destination(tmp_path: Path) -> None:
    text = rules(
        'carrier = "SF"\nfirst_kg = "1"\nwarehouses = ["B"]',
        'carrier = "ZTO"\nfirst_kg = "2"\ndestinations = ["east"]\nexclude = ["ZJ"]',
        'carrier = "ZTO"\nfirst_kg = "3"\ncountries = ["US"]',
    )
    table = RoutingTable.load(write_config(tmp_path, carriers=text))
    assert table.choose_carrier("B", address("CN", "ZJ"), 1).code == "SF"
    assert table.choose_carrier("A", address("CN", "SH"), 1).code == "ZTO"
    assert table.choose_carrier("A", address("CN", "ZJ"), 1).code == "EMS"  # excluded
    assert table.choose_carrier("A", address("CN", "BJ"), 1).code == "EMS"  # not east
    assert table.choose_carrier("A", address("us", "CA"), 1).cost == Decimal("3")


def test_the_default_takes_what_no_rule_matches(tmp_path: Path) -> None:
    chosen = choose(tmp_path, CARRIERS, "A", address("CN", "SH"), 100)
    assert chosen == Carrier("EMS", "China Post EMS", Decimal("20"))


# --- files that must be refused -----------------------------------------------------------


@pytest.mark.parametrize(
    ("carriers", "message"),
    [
        (CARRIERS.split("[default]")[0], r"default: Field required"),
        (CARRIERS.replace('carrier = "EMS"', 'carrier = "DPD"'), r"default\.carrier: .*'DPD'"),
        (CARRIERS.replace("default_weight_g = 300\n", ""), r"default_weight_g: Field required"),
        (CARRIERS.replace("300", "0"), r"default_weight_g: .*greater than 0"),
        (CARRIERS.replace('first_kg = "20"', "first_kg = 20.5"), r"default\.first_kg: .*string"),
        (
            CARRIERS + 'countries = ["US"]\n',
            r"default\.countries: unknown field \(known here: carrier, first_kg, per_extra_kg\)",
        ),
        (rules('carrier = "DPD"\nfirst_kg = "1"'), r"rules\[0\]\.carrier: .*'DPD'"),
        (rules('carrier = "SF"\nfirst_kg = "-1"'), r"rules\[0\]\.first_kg: .*0"),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\nwarehouses = ["Z"]'),
            r"rules\[0\]\.warehouses: .*Z",
        ),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\nwarehouses = []'),
            r"rules\[0\]\.warehouses: .*empty",
        ),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\ncountries = ["US", "US"]'),
            r"rules\[0\]\.countries: .*more than once",
        ),
        (rules('carrier = "SF"\nfirst_kg = "1"\ncountries = ["usa"]'), r"rules\[0\]\.countries"),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\ndestinations = ["moon"]'),
            r"rules\[0\]\.destinations: .*moon",
        ),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\ndestinations = ["SH"]\nexclude = ["east"]'),
            r"rules\[0\]: .*no destination",
        ),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\nmin_weight_g = 5\nmax_weight_g = 4'),
            r"rules\[0\]: max_weight_g is below min_weight_g",
        ),
        (
            rules('carrier = "SF"\nfirst_kg = "1"\nprovinces = ["SH"]'),
            r"rules\[0\]\.provinces: unknown field \(known here: carrier, .*, destinations,",
        ),
    ],
)
def test_bad_carriers_file_is_refused_naming_file_and_field(
    tmp_path: Path, carriers: str, message: str
) -> None:
    path = write_config(tmp_path, carriers=carriers)
    with pytest.raises(RoutingConfigError, match=message) as exc:
        RoutingTable.load(path)
    assert "carriers.toml" in str(exc.value)


@pytest.mark.parametrize(
    ("skus", "message"),
    [
        ("sku,grams\nA,1\n", "header must be sku,weight_g"),
        ("sku,weight_g\nA,1\nA,2\n", r"line 3: sku 'A' listed twice"),
        ("sku,weight_g\nA,-1\n", r"line 2: weight_g '-1'"),
        ("sku,weight_g\nA,1.5\n", r"line 2: weight_g '1.5'"),
        ("sku,weight_g\nA,2000000\n", r"line 2: weight_g '2000000'"),
        (
            "sku,weight_g\n,1\nB,x\n",
            r"2 problems:\n  - line 2: sku is empty\n  - line 3: weight_g 'x'",
        ),
    ],
)
def test_bad_sku_weights_are_refused(tmp_path: Path, skus: str, message: str) -> None:
    with pytest.raises(RoutingConfigError, match=message) as exc:
        RoutingTable.load(write_config(tmp_path, skus=skus))
    assert "skus.csv" in str(exc.value)


def test_sku_weights_tolerate_bom_and_padding(tmp_path: Path) -> None:
    table = RoutingTable.load(write_config(tmp_path, skus="\ufeffsku , weight_g\n A , 7 \n"))
    assert dict(table.weights.grams) == {"A": 7}
