"""Channel allocation config parsing/validation and the pure quota/sellable math
(state/channel_stock.py), plus the engine's quota pre-check (state/reservations.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.settings import REPO_ROOT
from order.reservation import ReserveRequest
from state.channel_stock import (
    AllocationConfig,
    AllocationError,
    Mode,
    Rule,
    load_allocation,
    parse_allocation,
    percent_quota,
    quota_key_for,
    sellable,
    shop_sellable,
)
from state.reservations import _quota_charges
from streams.models import Channel, ShopKey


def test_sample_config_is_valid_and_mostly_shared() -> None:
    config = load_allocation(REPO_ROOT / "config" / "allocation.toml")
    modes = {k: s.rule.mode for k, s in config.shops.items()}
    assert set(modes) == {
        "taobao/极客数码旗舰店",
        "jd/10086123",
        "douyin/4463798",
        "shopify/geek-digital.myshopify.com",
        "amazon/amazon-cn",
        "own/own-web",
    }
    assert sum(m is Mode.SHARED for m in modes.values()) >= 3
    douyin = config.shops["douyin/4463798"]
    assert douyin.for_sku("SKU-PHONE-X1") == Rule(Mode.PERCENT, 80)
    assert douyin.for_sku("SKU-CASE-C3") == Rule(Mode.SHARED)


def test_missing_file_means_everyone_shared(tmp_path: Path) -> None:
    assert load_allocation(tmp_path / "none.toml") == AllocationConfig()


def test_parse_rules_and_overrides() -> None:
    config = parse_allocation(
        {
            "shops": {
                "jd/1": {"mode": "fixed", "value": 5, "skus": {"A": {"mode": "shared"}}},
                "jd/*": {"mode": "percent", "value": 30},
                "own/web": {"mode": "shared"},
            }
        }
    )
    jd = config.shops["jd/1"]
    assert jd.channel is Channel.JD and jd.shop_id == "1"
    assert jd.for_sku("B") == Rule(Mode.FIXED, 5)
    assert jd.for_sku("A") == Rule(Mode.SHARED)
    # B: jd/1 fixed, pool percent; own/web shared and its channel has no pool: no field.
    assert config.quota_args("B") == ["jd/*|percent|30", "jd/1|fixed|5"]
    # A: jd/1 shared under a limited pool -> explicit 'none', else it would be charged the pool.
    assert config.quota_args("A") == ["jd/*|percent|30", "jd/1|none|0"]


@pytest.mark.parametrize(
    ("shops", "needle"),
    [
        ({"tmall/x": {"mode": "shared"}}, "unknown channel 'tmall'"),
        ({"jd": {"mode": "shared"}}, "CHANNEL/SHOP"),
        ({"jd/": {"mode": "shared"}}, "CHANNEL/SHOP"),
        ({"jd/a|b": {"mode": "shared"}}, "forbidden"),
        ({"jd/1": {"mode": "quota", "value": 1}}, "mode: Input should be 'fixed', 'percent' or"),
        ({"jd/1": {"mode": "percent", "value": 101}}, "0-100"),
        ({"jd/1": {"mode": "percent", "value": 12.5}}, "whole number"),
        ({"jd/1": {"mode": "fixed", "value": -1}}, "fixed units"),
        ({"jd/1": {"mode": "fixed", "value": True}}, "whole number"),
        ({"jd/1": {"mode": "fixed"}}, "whole number"),
        ({"jd/1": {"mode": "shared", "value": 3}}, "takes no value"),
        ({"jd/1": {"mode": "shared", "limit": 3}}, "limit: unknown field (known here: mode, value"),
        (
            {"jd/1": {"mode": "shared", "skus": {"A": {"mode": "fixed", "value": "x"}}}},
            'shops."jd/1".skus.A.value: must be a whole number',
        ),
        ({"jd/1": {"mode": "shared", "skus": {"A|B": {"mode": "shared"}}}}, "bad sku"),
        ({"jd/1": "fixed"}, "must be a table"),
    ],
)
def test_invalid_configs_are_refused(shops: dict[str, object], needle: str) -> None:
    with pytest.raises(AllocationError, match="problem") as info:
        parse_allocation({"shops": shops})
    assert needle in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "allocation.toml"
    path.write_text(
        '[shops."jd/1"]\nmode = "percent"\nvalue = 200\n[shops."xx/2"]\nmode = "shared"\n',
        encoding="utf-8",
    )
    with pytest.raises(AllocationError) as info:
        load_allocation(path)
    text = str(info.value)
    assert str(path) in text and "2 problems" in text and "0-100" in text and "'xx'" in text
    path.write_text("[shops\n", encoding="utf-8")
    with pytest.raises(AllocationError, match="not valid TOML"):
        load_allocation(path)


@given(st.integers(0, 100), st.integers(-50, 10**9))
def test_percent_quota_is_a_floor_share(percent: int, available: int) -> None:
    q = percent_quota(percent, available)
    avail = max(0, available)
    assert 0 <= q <= avail
    assert q * 100 <= percent * avail < (q + 1) * 100
    # What stock_quota.lua computes with doubles agrees with integer floor.
    assert q == int(percent * avail / 100 // 1)


@given(st.integers(-(10**6), 10**9), st.one_of(st.none(), st.integers(-(10**6), 10**9)))
def test_sellable_never_exceeds_quota_nor_stock(available: int, quota: int | None) -> None:
    s = sellable(available, quota)
    assert 0 <= s <= max(0, available)
    if quota is not None:
        assert s <= max(0, quota)
        assert s == max(0, min(quota, available))
    else:
        assert s == max(0, available)


def test_quota_key_resolution_mirrors_the_reserve_script() -> None:
    jd1, jd2 = ShopKey.of(Channel.JD, "1"), ShopKey.of(Channel.JD, "2")
    assert quota_key_for(jd1, {"jd/1": "3", "jd/*": "9"}) == "jd/1"
    assert quota_key_for(jd2, {"jd/1": "3", "jd/*": "9"}) == "jd/*"
    assert quota_key_for(jd1, {"jd/1": "none", "jd/*": "9"}) is None
    assert quota_key_for(jd1, {"jd/1": None, "jd/*": None}) is None
    assert quota_key_for(ShopKey.parse("own/x"), {}) is None
    assert shop_sellable(jd2, 5, {"jd/*": "9"}) == 5
    assert shop_sellable(jd2, 50, {"jd/*": "9"}) == 9
    assert shop_sellable(jd1, 50, {"jd/1": "-2"}) == 0


def test_engine_precheck_charges_like_the_script() -> None:
    quotas: dict[str, dict[str, str | None]] = {
        "A": {"jd/1": "2", "jd/*": None},
        "B": {"jd/1": None, "jd/*": None},
    }
    jd1 = ShopKey.parse("jd/1")
    req = ReserveRequest("o1", {"A": 2, "B": 7}, ["W"], shop=jd1)
    assert _quota_charges(req, quotas) == [("A", "jd/1", 0)]
    assert _quota_charges(ReserveRequest("o2", {"A": 3}, ["W"], shop=jd1), quotas) is None
    assert _quota_charges(ReserveRequest("o3", {"A": 3}, ["W"]), quotas) == []
