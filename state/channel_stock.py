"""Channel allocation: which share of a sku's available stock each shop may sell.

``config/allocation.toml`` gives rules per shop ``"CHANNEL/SHOP"`` or per channel pool
``"CHANNEL/*"`` (every shop of the channel that is not listed itself, together), each with
optional per-sku overrides:

- ``fixed``: ``value`` units given to the shop. They deplete as the shop sells (a cancel gives
  them back); a rebalance applies only a *change* of the configured value, so a shop can never
  sell more than it was given, however often quotas are rebalanced.
- ``percent``: ``value`` (0-100) percent of the sku's available units over all warehouses,
  recomputed at every rebalance (floor), so the shop stops before the warehouse runs out.
- ``shared``: no limit beyond available stock (the default for shops not listed).

Enforcement is in the reserve script (``quota:KEY`` fields of the sku's stock hash, same slot,
see stock_reserve.lua); this module parses the config (pure), computes the per-sku script
arguments and sellable figures (pure), and runs the rebalance (``stock_quota.lua`` per sku,
fenced by the ``channel-quota`` lock's token). Sellable for a shop = min(quota, available), or
available for a shared shop; never below zero.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from state.keys import Keys
from state.lock import LockLost
from state.redis import lua_source, texts
from state.stock import MAX_QTY
from streams.models import Channel

CHANNEL_QUOTA_LOCK = "channel-quota"
POOL = "*"  # shop id of a channel pool rule
UNLIMITED = "none"  # quota field value of a listed shared shop under a limited pool
BATCH = 200  # skus per pipelined round trip


class AllocationError(ValueError):
    """config/allocation.toml is invalid; the message lists every problem."""


class QuotaFenceError(LockLost):
    """A newer holder of the channel-quota lock has written quotas: stop writing."""


class Mode(StrEnum):
    FIXED = "fixed"
    PERCENT = "percent"
    SHARED = "shared"


@dataclass(frozen=True)
class Rule:
    mode: Mode
    value: int = 0

    @property
    def limited(self) -> bool:
        return self.mode is not Mode.SHARED


@dataclass(frozen=True)
class ShopRule:
    channel: Channel
    shop_id: str  # POOL for a channel pool
    rule: Rule
    skus: Mapping[str, Rule] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.channel.value}/{self.shop_id}"

    def for_sku(self, sku: str) -> Rule:
        return self.skus.get(sku, self.rule)


@dataclass(frozen=True)
class AllocationConfig:
    shops: Mapping[str, ShopRule] = field(default_factory=dict)  # key -> rule

    def quota_args(self, sku: str) -> list[str]:
        """``KEY|mode|value`` for stock_quota.lua: every key with a limited rule for the sku,
        and ``none`` for a listed shared shop whose channel pool is limited (else the reserve
        script would charge the shop to the pool)."""
        args: list[str] = []
        for key, shop in sorted(self.shops.items()):
            rule = shop.for_sku(sku)
            if rule.limited:
                args.append(f"{key}|{rule.mode.value}|{rule.value}")
            elif shop.shop_id != POOL and self._pool_rule(shop.channel, sku).limited:
                args.append(f"{key}|{UNLIMITED}|0")
        return args

    def _pool_rule(self, channel: Channel, sku: str) -> Rule:
        pool = self.shops.get(f"{channel.value}/{POOL}")
        return pool.for_sku(sku) if pool else Rule(Mode.SHARED)

    def quota_fields(self) -> list[str]:
        """Every hash field a sellable figure may depend on."""
        return [f"quota:{key}" for key in sorted(self.shops)]

    def published(self) -> list[ShopRule]:
        """Shops (and pools) whose sellable stock is published: every listed key."""
        return [self.shops[k] for k in sorted(self.shops)]


def quota_key_for(shop_key: str, quotas: Mapping[str, str | None]) -> str | None:
    """The quota field key the reserve script charges for ``shop_key`` (mirror of
    stock_reserve.lua): the shop's own field, else its channel pool's; None when unlimited."""
    pool = f"{shop_key.partition('/')[0]}/{POOL}"
    key = shop_key if quotas.get(shop_key) is not None else pool
    value = quotas.get(key)
    if value is None or value == UNLIMITED:
        return None
    return key


def sellable(available: int, quota: int | None) -> int:
    """What a shop may show: its quota capped by available stock (None = shared), never < 0."""
    cap = max(0, available)
    return cap if quota is None else max(0, min(quota, cap))


def percent_quota(percent: int, available: int) -> int:
    """floor(percent/100 * available) in integers, as stock_quota.lua computes it."""
    return percent * max(0, available) // 100


def shop_sellable(shop_key: str, available: int, quotas: Mapping[str, str | None]) -> int:
    key = quota_key_for(shop_key, quotas)
    return sellable(available, None if key is None else int(str(quotas[key])))


# --- config parsing -------------------------------------------------------------------------


def load_allocation(path: Path) -> AllocationConfig:
    """Parse and validate; a missing file means every shop is shared."""
    if not path.exists():
        return AllocationConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AllocationError(f"{path}: cannot read: {exc}") from exc
    try:
        return parse_allocation(data)
    except AllocationError as exc:
        raise AllocationError(f"{path}: {exc}") from exc


def parse_allocation(data: Mapping[str, Any]) -> AllocationConfig:
    errors: list[str] = []
    unknown = set(data) - {"shops"}
    if unknown:
        errors.append(f'unknown top-level keys {sorted(unknown)} (expected [shops."CH/SHOP"])')
    shops_raw = data.get("shops", {})
    if not isinstance(shops_raw, dict):
        raise AllocationError('shops must be a table of "CHANNEL/SHOP" entries')
    shops: dict[str, ShopRule] = {}
    for key, entry in shops_raw.items():
        where = f"shops.{key!r}"
        channel_text, slash, shop_id = str(key).partition("/")
        if not slash or not shop_id.strip() or shop_id != shop_id.strip():
            errors.append(f'{where}: key must be "CHANNEL/SHOP" or "CHANNEL/*"')
            continue
        if channel_text not in {c.value for c in Channel}:
            errors.append(
                f"{where}: unknown channel {channel_text!r} "
                f"(known: {', '.join(c.value for c in Channel)})"
            )
            continue
        if any(c in shop_id for c in "|\n\r") or len(shop_id) > 128:
            errors.append(f"{where}: shop id has forbidden characters or is too long")
            continue
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a table with mode and value")
            continue
        extra = set(entry) - {"mode", "value", "skus"}
        if extra:
            errors.append(f"{where}: unknown keys {sorted(extra)}")
        rule = _rule(entry, where, errors)
        overrides: dict[str, Rule] = {}
        skus_raw = entry.get("skus", {})
        if not isinstance(skus_raw, dict):
            errors.append(f"{where}.skus: must be a table sku -> {{mode, value}}")
            skus_raw = {}
        for sku, sku_entry in skus_raw.items():
            sku_where = f"{where}.skus.{sku!r}"
            if not sku or len(sku) > 128 or any(c in sku for c in "|{}\n\r\t"):
                errors.append(f"{sku_where}: bad sku")
                continue
            if not isinstance(sku_entry, dict) or set(sku_entry) - {"mode", "value"}:
                errors.append(f"{sku_where}: must be a table with mode and value only")
                continue
            sku_rule = _rule(sku_entry, sku_where, errors)
            if sku_rule is not None:
                overrides[sku] = sku_rule
        if rule is not None:
            shops[key] = ShopRule(Channel(channel_text), shop_id, rule, overrides)
    if errors:
        raise AllocationError(
            f"{len(errors)} problem(s) in the allocation config:\n  " + "\n  ".join(errors)
        )
    return AllocationConfig(shops)


def _rule(entry: Mapping[str, Any], where: str, errors: list[str]) -> Rule | None:
    mode_text = entry.get("mode")
    if mode_text not in {m.value for m in Mode}:
        errors.append(f"{where}: mode must be fixed, percent or shared (got {mode_text!r})")
        return None
    mode = Mode(mode_text)
    value = entry.get("value")
    if mode is Mode.SHARED:
        if value is not None:
            errors.append(f"{where}: a shared rule takes no value")
            return None
        return Rule(mode)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(f"{where}: value must be a whole number (got {value!r})")
        return None
    if mode is Mode.PERCENT and not 0 <= value <= 100:
        errors.append(f"{where}: percent must be 0-100 (got {value})")
        return None
    if mode is Mode.FIXED and not 0 <= value <= MAX_QTY:
        errors.append(f"{where}: fixed units must be 0-{MAX_QTY} (got {value})")
        return None
    return Rule(mode, value)


# --- Redis ----------------------------------------------------------------------------------


def _chunks(items: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def rebalance(
    client: aioredis.Redis,
    keys: Keys,
    config: AllocationConfig,
    warehouses: Sequence[str],
    skus: Iterable[str] | None = None,
    *,
    fence: int,
) -> dict[str, int]:
    """Set every quota of ``skus`` (default: the sku registry) from the config and the sku's
    available units; one script call per sku (atomic per sku), pipelined. Call it holding the
    ``channel-quota`` lock and pass its fencing token: a stale token raises QuotaFenceError
    (skus of the same batch not yet written by the newer holder may still have been written,
    as for the stock snapshot). Returns sku -> available units used for percent."""
    script = client.register_script(lua_source("stock_quota"))
    names = sorted(skus) if skus is not None else sorted(texts(await client.smembers(keys.skus)))
    wh_arg = ",".join(warehouses)
    available: dict[str, int] = {}
    for chunk in _chunks(names):
        pipe = client.pipeline(transaction=False)
        for sku in chunk:
            await script(
                keys=[keys.stock(sku), keys.ledger(sku)],
                args=[fence, wh_arg, *config.quota_args(sku)],
                client=pipe,
            )
        for sku, reply in zip(chunk, await pipe.execute(), strict=True):
            if reply[0] != "applied":
                raise QuotaFenceError(f"quota of {sku} refused: {reply[1]} (fence {fence})")
            available[sku] = int(reply[1])
    return available


async def read_sellable(
    client: aioredis.Redis,
    keys: Keys,
    config: AllocationConfig,
    warehouses: Sequence[str],
    skus: Sequence[str],
) -> dict[tuple[str, str], int]:
    """(shop key, sku) -> sellable units for every published shop, one HMGET per sku."""
    quota_fields = config.quota_fields()
    shop_keys = [s.key for s in config.published()]
    # Pool fields too, for listed shops that fall back to their channel pool.
    pool_keys = sorted({f"{k.partition('/')[0]}/{POOL}" for k in shop_keys} - set(shop_keys))
    fields = [f"on_hand:{wh}" for wh in warehouses] + [f"reserved:{wh}" for wh in warehouses]
    fields += quota_fields + [f"quota:{k}" for k in pool_keys]
    quota_names = shop_keys + pool_keys
    out: dict[tuple[str, str], int] = {}
    if not shop_keys:
        return out
    for chunk in _chunks(list(skus)):
        pipe = client.pipeline(transaction=False)
        for sku in chunk:
            pipe.hmget(keys.stock(sku), fields)
        for sku, values in zip(chunk, await pipe.execute(), strict=True):
            n = len(warehouses)
            avail = sum(int(values[k] or 0) - int(values[n + k] or 0) for k in range(n))
            quotas = dict(zip(quota_names, values[2 * n :], strict=True))
            for key in shop_keys:
                out[(key, sku)] = shop_sellable(key, avail, quotas)
    return out
