"""Per-shop rules (config/shops.toml, order/shops.py): the shipped file, what a bad file is
told, that the decisions look rules up by the order's shop key, and that a worker refuses a
bad file at start as it refuses a bad audit.toml."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agents.pipeline import OrderPipeline
from core.settings import REPO_ROOT, Settings
from order.allocation import ShortagePolicy
from order.audit import AuditConfigError
from order.decisions import Decisions
from order.route import RoutingTable
from order.shops import MAX_MERGE_WINDOW_S, ShopConfigError, ShopRules, load_shop_rules
from streams.channels.base import AdapterContext
from streams.models import Channel, Order, ShopKey
from tests.unit.test_promotions import line
from tests.unit.test_promotions import order as promotions_order

SHIPPED = REPO_ROOT / "config" / "shops.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shops.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ShopConfigError) as caught:
        load_shop_rules(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid shop rules, ")  # names the file
    return message


def order(channel: Channel, shop: str) -> Order:
    return promotions_order(line("S"), channel=channel, shop=shop)


# --- good files ---------------------------------------------------------------------------


def test_the_shipped_file() -> None:
    rules = load_shop_rules(SHIPPED)
    assert rules == {
        "own/own-web": ShopRules(shortage_policy=ShortagePolicy.SPLIT, merge_window_s=5.0),
        "shopify/geek-digital.myshopify.com": ShopRules(shortage_policy=ShortagePolicy.SPLIT),
        "jd/10086123": ShopRules(ship_within_h=24, priority=2),
    }
    assert all(isinstance(key, ShopKey) for key in rules)


def test_no_file_means_every_shop_takes_the_defaults(tmp_path: Path) -> None:
    assert load_shop_rules(tmp_path / "absent.toml") == {}


def test_unicode_shops_and_every_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[shops."taobao/极客数码旗舰店"]\nshortage_policy = "reject"\nmerge_window_s = 2.5\n'
        '[shops."jd/10086123"]\nmerge_window_s = 0\n',
    )
    rules = load_shop_rules(path)
    key = ShopKey.of(Channel.TAOBAO, "极客数码旗舰店")
    assert rules[key] == ShopRules(shortage_policy=ShortagePolicy.REJECT, merge_window_s=2.5)
    assert rules[ShopKey.parse("jd/10086123")] == ShopRules(merge_window_s=0.0)


# --- bad files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[shops."own/web"]\nmerge_windows = 5\n',
            'shops."own/web".merge_windows: unknown field '
            "(known here: shortage_policy, merge_window_s, presale_reserve, ship_within_h, "
            "priority)",
        ),
        (
            '[shops."own/web"]\nshortage_policy = "spilt"\n',
            "shops.\"own/web\".shortage_policy: Input should be 'hold', 'reject' or 'split'",
        ),
        (
            '[shops."own/web"]\nmerge_window_s = -1\n',
            'shops."own/web".merge_window_s: Input should be greater than or equal to 0',
        ),
        (
            '[shops."own/web"]\nmerge_window_s = 36000\n',
            'shops."own/web".merge_window_s: Input should be less than or equal to 3600',
        ),
        ('[shops."own/web"]\nmerge_window_s = nan\n', "merge_window_s: Input should be a finite"),
        ('[shops."own/web"]\nmerge_window_s = inf\n', "merge_window_s: Input should be a finite"),
        ('[shops."own/web"]\nmerge_window_s = "5"\n', "merge_window_s: Input should be a valid"),
        ('[shops."own/web"]\nmerge_window_s = true\n', "merge_window_s: Input should be a valid"),
        ('[shops."own/web"]\nshortage_policy = 1\n', "shortage_policy: Input should be 'hold'"),
        ('[shop."own/web"]\nmerge_window_s = 5\n', "shop: unknown field (known here: shops)"),
        ('[shops]\n"own/web" = "split"\n', 'shops."own/web": must be a table, not a string'),
        ('[shops."tmall/x"]\n', "shops.\"tmall/x\" (key): 'tmall/x' is not a shop key"),
        ('[shops."tmall/x"]\n', "unknown channel 'tmall' (known: taobao, jd, douyin,"),
        ("[shops.own-web]\n", "shops.own-web (key): 'own-web' is not a shop key \"CHANNEL/SHOP\""),
        ('[shops."own/"]\n', "the shop id must be 1-128 characters"),
        ('[shops."own/ web"]\n', "shop id ' web' has a forbidden character"),
        ('[shops."own/*"]\n', "'own/*' is a channel pool: shop rules name one shop each"),
    ],
)
def test_a_bad_file_is_refused_naming_the_shop_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refused(tmp_path, text)


def test_every_problem_at_once(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        '[shops."own/a"]\nshortage_policy = "wait"\n[shops."own/b"]\nmerge_window_s = -5\n',
    )
    assert "2 problems" in message
    assert 'shops."own/a".shortage_policy' in message
    assert 'shops."own/b".merge_window_s' in message


def test_the_bound_is_the_documented_one(tmp_path: Path) -> None:
    edge = f'[shops."own/web"]\nmerge_window_s = {MAX_MERGE_WINDOW_S}\n'
    assert load_shop_rules(write(tmp_path, edge))["own/web"].merge_window_s == MAX_MERGE_WINDOW_S


# --- the decisions use them ---------------------------------------------------------------


def test_decisions_look_rules_up_by_the_orders_shop_key() -> None:
    decisions = Decisions(
        routing=RoutingTable.load(REPO_ROOT / "config" / "warehouses.toml"),
        clock=time.time,
        shops=load_shop_rules(SHIPPED),
        shortage_policy=ShortagePolicy.HOLD,
        merge_window_s=1.0,
    )
    web = order(Channel.OWN, "own-web")
    assert decisions.policy_for(web) is ShortagePolicy.SPLIT
    assert decisions.merge_window_for(web) == 5.0
    shopify = order(Channel.SHOPIFY, "geek-digital.myshopify.com")
    assert decisions.policy_for(shopify) is ShortagePolicy.SPLIT
    assert decisions.merge_window_for(shopify) == 1.0  # not set for the shop: the default
    # The same shop id on another channel is another shop.
    other = order(Channel.TAOBAO, "own-web")
    assert decisions.policy_for(other) is ShortagePolicy.HOLD
    assert decisions.merge_window_for(other) == 1.0


# --- a worker refuses a bad file at start -------------------------------------------------


def pipeline(config_dir: Path) -> OrderPipeline:
    """What a worker builds at start (agents/worker.py make_pipeline); nothing connects."""
    settings = Settings(config_dir=config_dir)
    routing = RoutingTable.load(config_dir / "warehouses.toml")
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    return OrderPipeline(settings, client, routing, AdapterContext())


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", target)
    return target


def test_a_worker_starts_on_the_shipped_files(config_dir: Path) -> None:
    shops = pipeline(config_dir).decisions.shops
    assert shops[ShopKey.of(Channel.OWN, "own-web")].merge_window_s == 5.0


def test_a_worker_refuses_a_bad_shops_file_at_start(config_dir: Path) -> None:
    write(config_dir, '[shops."own/own-web"]\nshortage_policy = "split"\nmerge_window = 5\n')
    with pytest.raises(ShopConfigError, match=r"merge_window: unknown field"):
        pipeline(config_dir)


def test_a_worker_refuses_a_bad_audit_file_at_start_the_same_way(config_dir: Path) -> None:
    (config_dir / "audit.toml").write_text("[scalper]\nwindow = 60\n", encoding="utf-8")
    with pytest.raises(AuditConfigError, match=r"scalper\.window: unknown field"):
        pipeline(config_dir)
