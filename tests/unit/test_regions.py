"""Province normalisation: every spelling a channel sends -> one ISO 3166-2:CN routing key."""

from __future__ import annotations

import pytest

from streams.regions import PROVINCES, REGION, province_code, region_of

# The current 2-letter ISO 3166-2:CN suffixes (2017 revision) of the 34 provincial-level units.
ISO_CODES = {
    "BJ", "TJ", "HE", "SX", "NM", "LN", "JL", "HL", "SH", "JS", "ZJ", "AH", "FJ", "JX", "SD",
    "HA", "HB", "HN", "GD", "GX", "HI", "CQ", "SC", "GZ", "YN", "XZ", "SN", "GS", "QH", "NX",
    "XJ", "TW", "HK", "MO",
}


def test_all_provincial_units_present() -> None:
    assert set(PROVINCES) == ISO_CODES
    assert len([c for c in PROVINCES if c not in {"HK", "MO", "TW"}]) == 31
    assert set(REGION) == ISO_CODES
    assert set(REGION.values()) == {"east", "north", "south", "southwest", "northwest",
                                    "northeast", "central"}


@pytest.mark.parametrize("code", sorted(ISO_CODES))
def test_every_name_and_code_round_trips(code: str) -> None:
    zh, en = PROVINCES[code]
    for spelling in (code, code.lower(), f"CN-{code}", zh, en, en.upper(), f" {en} "):
        assert province_code(spelling) == code, spelling


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("浙江省", "ZJ"), ("浙江", "ZJ"), ("广西壮族自治区", "GX"), ("广西", "GX"),
        ("内蒙古", "NM"), ("内蒙古自治区", "NM"), ("新疆维吾尔自治区", "XJ"), ("新疆", "XJ"),
        ("宁夏回族自治区", "NX"), ("西藏自治区", "XZ"), ("北京市", "BJ"), ("北京", "BJ"),
        ("重庆", "CQ"), ("香港特别行政区", "HK"), ("澳门", "MO"), ("台湾", "TW"),
        ("Zhejiang", "ZJ"), ("zhejiang sheng", "ZJ"), ("Zhejiang Province", "ZJ"),
        ("Guangdong", "GD"), ("Inner Mongolia", "NM"), ("Nei Mongol", "NM"),
        ("Beijing Shi", "BJ"), ("Beijing Municipality", "BJ"), ("Shanghai", "SH"),
        ("Shaanxi", "SN"), ("Shanxi", "SX"), ("Tibet", "XZ"), ("Xizang", "XZ"),
        ("Guangxi Zhuangzu Zizhiqu", "GX"), ("Xinjiang Uygur Autonomous Region", "XJ"),
        ("Hong Kong SAR", "HK"), ("Macau", "MO"),
        ("CN-ZJ", "ZJ"), ("cn-gd", "GD"), ("ZJ", "ZJ"), ("ＺＪ", "ZJ"),
        ("330000", "ZJ"), ("51", "SC"), ("CN-33", "ZJ"), ("沪", "SH"), ("粤", "GD"),
    ],
)
def test_spellings(text: str, code: str) -> None:
    assert province_code(text) == code


@pytest.mark.parametrize("text", ["", "   ", "Atlantis", "浙江杭州", "330100", "99", "C", "省"])
def test_unknown_is_empty(text: str) -> None:
    assert province_code(text) == ""


def test_country_handling() -> None:
    assert province_code("Zhejiang", "CN") == "ZJ"
    assert province_code("Zhejiang", "China") == "ZJ"
    assert province_code("浙江", "中国") == "ZJ"
    assert province_code("California", "US") == ""
    assert province_code("ZJ", "US") == ""  # a US 'ZJ' is not Zhejiang
    assert province_code("Kowloon", "HK") == "HK"
    assert province_code("", "MO") == "MO"
    assert province_code("Taipei", "TW") == "TW"
    assert province_code("浙江", "") == "ZJ"  # no country: the Chinese channels' default


def test_region_of() -> None:
    assert region_of("ZJ") == "east"
    assert region_of("GD") == "south"
    assert region_of("SC") == "southwest"
    assert region_of("HL") == "northeast"
    assert region_of("XJ") == "northwest"
    assert region_of("HB") == "central"
    assert region_of("BJ") == "north"
    assert region_of("??") == ""
