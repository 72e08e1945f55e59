"""The one shop-key type (streams.models.ShopKey): "CHANNEL/SHOP" built and parsed in one place,
its wire form unchanged, Unicode shop ids kept, and no key built or split by hand elsewhere."""

from __future__ import annotations

import ast
import itertools
import pickle
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from core.settings import REPO_ROOT
from order.promotions import load_promotions
from order.reservation import ReserveRequest
from state.channel_stock import load_allocation
from streams.models import (
    MAX_CODE_CHARS,
    POOL,
    Channel,
    ConfigShopKey,
    ShopKey,
    ShopKeyError,
)
from tests.unit.test_promotions import line, order

FLAGSHIP = "极客数码旗舰店"


def test_of_gives_the_wire_form_and_its_parts() -> None:
    key = ShopKey.of(Channel.TAOBAO, FLAGSHIP)
    assert key == f"taobao/{FLAGSHIP}" and str(key) == f"taobao/{FLAGSHIP}"
    assert type(str(key)) is str
    assert (key.channel, key.shop, key.is_pool) == (Channel.TAOBAO, FLAGSHIP, False)
    assert key.pool == "taobao/*" and key.pool.is_pool and key.pool.shop == POOL
    assert ShopKey.pool_of(Channel.JD) == "jd/*"
    assert ShopKey.of("jd", "10086123") == ShopKey.parse("jd/10086123")


def test_it_is_its_wire_string_everywhere() -> None:
    """Redis fields, script arguments, config keys and JSON see exactly 'CHANNEL/SHOP'."""
    key = ShopKey.of(Channel.JD, "10086123")
    assert {"jd/10086123": 1}[key] == 1 and {key: 1}["jd/10086123"] == 1
    assert f"quota:{key}" == "quota:jd/10086123"
    assert orjson.loads(orjson.dumps({"shop": key})) == {"shop": "jd/10086123"}
    assert pickle.loads(pickle.dumps(key)) == key
    assert type(pickle.loads(pickle.dumps(key))) is ShopKey
    assert repr(key) == "'jd/10086123'"


def test_the_shop_id_is_everything_after_the_first_slash() -> None:
    key = ShopKey.parse("own/a/b")
    assert (key.channel, key.shop) == (Channel.OWN, "a/b")
    assert ShopKey.of(Channel.OWN, "a/b") == key


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("jd", "no '/' between channel and shop"),
        ("", "no '/' between channel and shop"),
        ("tmall/x", "unknown channel 'tmall' (known: taobao, jd, douyin, shopify, amazon, own)"),
        ("JD/x", "unknown channel 'JD'"),
        ("/x", "unknown channel ''"),
        ("jd/", f"the shop id must be 1-{MAX_CODE_CHARS} characters"),
        ("jd/" + "x" * (MAX_CODE_CHARS + 1), f"the shop id must be 1-{MAX_CODE_CHARS}"),
    ],
)
def test_parse_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ShopKeyError) as caught:
        ShopKey.parse(text)
    assert str(caught.value).startswith(f'{text!r} is not a shop key "CHANNEL/SHOP" or')
    assert why in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_of_refuses_what_parse_refuses() -> None:
    with pytest.raises(ShopKeyError, match="unknown channel 'wish'"):
        ShopKey.of("wish", "x")
    with pytest.raises(ShopKeyError, match="the shop id must be"):
        ShopKey.of(Channel.JD, "")


@given(
    st.sampled_from(list(Channel)),
    st.text(min_size=1, max_size=MAX_CODE_CHARS),
)
def test_any_orders_shop_round_trips(channel: Channel, shop: str) -> None:
    """Every shop id an order may carry (1-128 characters of anything) makes a key that parses
    back to the same channel and shop."""
    key = ShopKey.of(channel, shop)
    back = ShopKey.parse(str(key))
    assert (back.channel, back.shop) == (channel, shop)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    shops: dict[ConfigShopKey, int] = {}
    only: list[ConfigShopKey] = []


def test_config_files_get_keys_and_a_stricter_shop_id() -> None:
    parsed = _Config.model_validate({"shops": {f"taobao/{FLAGSHIP}": 1}, "only": ["jd/*"]})
    [key] = parsed.shops
    assert isinstance(key, ShopKey) and key.shop == FLAGSHIP
    assert parsed.only[0].is_pool
    assert parsed.model_dump(mode="json") == {"shops": {f"taobao/{FLAGSHIP}": 1}, "only": ["jd/*"]}
    for bad in ("jd/a|b", "jd/ a", "jd/a ", "jd/a\nb", "jd/a\tb"):
        with pytest.raises(ValueError, match="has a forbidden character"):
            _Config.model_validate({"only": [bad]})
    with pytest.raises(ValueError, match="unknown channel 'tmall'"):
        _Config.model_validate({"shops": {"tmall/x": 1}})


def test_an_orders_shop_key() -> None:
    key = order(line("S"), channel=Channel.TAOBAO, shop=FLAGSHIP).shop_key
    assert isinstance(key, ShopKey) and key == f"taobao/{FLAGSHIP}"


def test_the_shipped_configs_key_shops_by_shop_key() -> None:
    allocation = load_allocation(REPO_ROOT / "config" / "allocation.toml")
    assert all(isinstance(k, ShopKey) for k in allocation.shops)
    flagship = allocation.shops[ShopKey.of(Channel.TAOBAO, FLAGSHIP)]
    assert (flagship.channel, flagship.shop_id) == (Channel.TAOBAO, FLAGSHIP)
    promotions = load_promotions(REPO_ROOT / "config" / "promotions.toml")
    shops = [s for rule in promotions.promotions for s in rule.shops or ()]
    assert shops and all(isinstance(s, ShopKey) for s in shops)


def test_a_reservation_names_its_shop_by_key() -> None:
    request = ReserveRequest("o1", {"S": 1}, ["W"], shop=ShopKey.of(Channel.JD, "1"))
    assert request.shop is not None and request.shop.pool == "jd/*"
    assert ReserveRequest("o2", {"S": 1}, ["W"]).shop is None


# --- no key by hand -------------------------------------------------------------------------

FLOORS = ("core", "streams", "order", "state", "analytics", "agents", "web", "ops")
HOME = Path("streams/models.py")


def hand_made_keys(path: Path) -> list[str]:
    """f-strings '{...channel...}/...' or '.../{...shop...}', and splitting at '/'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for left, right in itertools.pairwise(parts):
                channel_slash = (
                    isinstance(left, ast.FormattedValue)
                    and "channel" in ast.unparse(left.value)
                    and isinstance(right, ast.Constant)
                    and str(right.value).startswith("/")
                )
                slash_shop = (
                    isinstance(left, ast.Constant)
                    and str(left.value).endswith("/")
                    and isinstance(right, ast.FormattedValue)
                    and "shop" in ast.unparse(right.value)
                )
                if channel_slash or slash_shop:
                    found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("partition", "rpartition", "split", "rsplit")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "/"
        ):
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_shop_key_is_built_or_split_by_hand() -> None:
    found = [
        line
        for floor in FLOORS
        for path in sorted((REPO_ROOT / floor).rglob("*.py"))
        if path.relative_to(REPO_ROOT) != HOME
        for line in hand_made_keys(path)
    ]
    assert found == []
    assert hand_made_keys(REPO_ROOT / HOME)  # the check finds the one place that may


def test_an_orders_key_is_built_once_and_a_changed_copy_gets_its_own() -> None:
    from tests.unit.records import make_order

    order = make_order({"A": 1})
    assert order.shop_key is order.shop_key  # cached: the decisions ask several times
    moved = order.model_copy(update={"shop_id": "极客数码旗舰店"})
    assert moved.shop_key == ShopKey.of(order.channel, "极客数码旗舰店")
    assert order.shop_key == ShopKey.of(order.channel, order.shop_id)
