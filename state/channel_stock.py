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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.config import ConfigError, load_config, validate_config
from state.keys import Keys
from state.lock import LockLost
from state.redis import lua_source, texts
from state.stock import MAX_QTY
from streams.models import Channel, ConfigShopKey, ShopKey

CHANNEL_QUOTA_LOCK = "channel-quota"
UNLIMITED = "none"  # quota field value of a listed shared shop under a limited pool
BATCH = 200  # skus per pipelined round trip


class AllocationError(ConfigError):
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
    key: ShopKey  # a shop, or a channel pool
    rule: Rule
    skus: Mapping[str, Rule] = field(default_factory=dict)

    @property
    def channel(self) -> Channel:
        return self.key.channel

    @property
    def shop_id(self) -> str:
        """The shop id, POOL for a channel pool."""
        return self.key.shop

    def for_sku(self, sku: str) -> Rule:
        return self.skus.get(sku, self.rule)


@dataclass(frozen=True)
class AllocationConfig:
    shops: Mapping[ShopKey, ShopRule] = field(default_factory=dict)  # key -> rule

    def quota_args(self, sku: str) -> list[str]:
        """``KEY|mode|value`` for stock_quota.lua: every key with a limited rule for the sku,
        and ``none`` for a listed shared shop whose channel pool is limited (else the reserve
        script would charge the shop to the pool)."""
        args: list[str] = []
        for key, shop in sorted(self.shops.items()):
            rule = shop.for_sku(sku)
            if rule.limited:
                args.append(f"{key}|{rule.mode.value}|{rule.value}")
            elif not key.is_pool and self._pool_rule(key, sku).limited:
                args.append(f"{key}|{UNLIMITED}|0")
        return args

    def _pool_rule(self, key: ShopKey, sku: str) -> Rule:
        pool = self.shops.get(key.pool)
        return pool.for_sku(sku) if pool else Rule(Mode.SHARED)

    def quota_fields(self) -> list[str]:
        """Every hash field a sellable figure may depend on."""
        return [f"quota:{key}" for key in sorted(self.shops)]

    def published(self) -> list[ShopRule]:
        """Shops (and pools) whose sellable stock is published: every listed key."""
        return [self.shops[k] for k in sorted(self.shops)]


def quota_key_for(shop_key: ShopKey, quotas: Mapping[str, str | None]) -> ShopKey | None:
    """The quota field key the reserve script charges for ``shop_key`` (mirror of
    stock_reserve.lua): the shop's own field, else its channel pool's; None when unlimited."""
    key = shop_key if quotas.get(shop_key) is not None else shop_key.pool
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


def shop_sellable(shop_key: ShopKey, available: int, quotas: Mapping[str, str | None]) -> int:
    key = quota_key_for(shop_key, quotas)
    return sellable(available, None if key is None else int(str(quotas[key])))


# --- config parsing -------------------------------------------------------------------------


def _whole_number(value: Any) -> Any:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"must be a whole number (got {value!r})")


def _check_sku(sku: str) -> str:
    if not sku or len(sku) > 128 or any(c in sku for c in "|{}\n\r\t"):
        raise ValueError(f"bad sku {sku!r}: 1-128 characters, no '|', braces, tabs or newlines")
    return sku


class RuleSpec(BaseModel):
    """A ``{mode, value}`` table: a shop's rule, or one sku's override of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode
    value: Annotated[int | None, BeforeValidator(_whole_number)] = None

    @field_validator("value")
    @classmethod
    def _fits_the_mode(cls, value: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("mode")  # absent when the mode itself is wrong
        if value is None or mode is None:
            return value
        if mode is Mode.SHARED:
            raise ValueError("a shared rule takes no value")
        if mode is Mode.PERCENT and not 0 <= value <= 100:
            raise ValueError(f"percent must be 0-100 (got {value})")
        if mode is Mode.FIXED and not 0 <= value <= MAX_QTY:
            raise ValueError(f"fixed units must be 0-{MAX_QTY} (got {value})")
        return value

    @model_validator(mode="after")
    def _has_a_value(self) -> RuleSpec:
        if self.mode is not Mode.SHARED and self.value is None:
            most = 100 if self.mode is Mode.PERCENT else MAX_QTY
            raise ValueError(f"a {self.mode.value} rule needs a value: a whole number 0-{most}")
        return self

    def rule(self) -> Rule:
        return Rule(self.mode, self.value or 0)


class ShopSpec(RuleSpec):
    skus: dict[Annotated[str, AfterValidator(_check_sku)], RuleSpec] = Field(default_factory=dict)


class AllocationFile(BaseModel):
    """The schema of config/allocation.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shops: dict[ConfigShopKey, ShopSpec] = Field(default_factory=dict)

    def config(self) -> AllocationConfig:
        return AllocationConfig(
            {
                key: ShopRule(key, spec.rule(), {sku: r.rule() for sku, r in spec.skus.items()})
                for key, spec in self.shops.items()
            }
        )


WHAT = "channel allocation"


def load_allocation(path: Path) -> AllocationConfig:
    """Parse and validate; a missing file means every shop is shared."""
    spec = load_config(
        path, AllocationFile, what=WHAT, error=AllocationError, default=AllocationFile()
    )
    return spec.config()


def parse_allocation(
    data: Mapping[str, Any], source: str = "allocation config"
) -> AllocationConfig:
    """An already parsed file; every problem is reported at once."""
    return validate_config(
        data, AllocationFile, source=source, what=WHAT, error=AllocationError
    ).config()


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
) -> dict[tuple[ShopKey, str], int]:
    """(shop key, sku) -> sellable units for every published shop, one HMGET per sku."""
    quota_fields = config.quota_fields()
    shop_keys = [s.key for s in config.published()]
    # Pool fields too, for listed shops that fall back to their channel pool.
    pool_keys = sorted({k.pool for k in shop_keys} - set(shop_keys))
    fields = [f"on_hand:{wh}" for wh in warehouses] + [f"reserved:{wh}" for wh in warehouses]
    fields += quota_fields + [f"quota:{k}" for k in pool_keys]
    quota_names = shop_keys + pool_keys
    out: dict[tuple[ShopKey, str], int] = {}
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
