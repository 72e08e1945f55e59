"""Per-shop rules from config/shops.toml (pure): what a shop wants when no single warehouse can
serve a whole order, how long its reserved orders wait to merge, when a pre-sale reserves, how
long a paid order has to ship and how its orders rank.

``[shops."CHANNEL/SHOP"]`` tables, one per shop; a shop not listed, or a setting left out, takes
the worker's default (OMS_SHORTAGE_POLICY, OMS_MERGE_WINDOW_S). The file is validated when a
worker starts (core/config.py): an unknown key, a policy that does not exist or a window out of
range stops the worker with a message naming the shop and the key, instead of the setting being
silently ignored.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.config import ConfigError, load_config
from order.allocation import ShortagePolicy
from streams.models import ConfigShopKey, ShopKey, ShopKeyError

# An hour: a merge window holds a paid order back from the warehouse, so anything longer is a
# typo (seconds for minutes), not a policy.
MAX_MERGE_WINDOW_S = 3600.0


class ShopConfigError(ConfigError):
    """config/shops.toml cannot be used; names the file, the shop and the key."""


class PresaleReserve(StrEnum):
    DEPOSIT = "deposit"
    BALANCE = "balance"


class ShopRules(BaseModel):
    """One shop's settings; None: the worker's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    shortage_policy: Annotated[ShortagePolicy | None, Field(strict=False)] = None
    merge_window_s: Annotated[
        float | None, Field(ge=0, le=MAX_MERGE_WINDOW_S, allow_inf_nan=False)
    ] = None
    # A pre-sale's stock is reserved when the deposit is paid (the platform sold the units) or
    # only once the balance is (units stay sellable to others until then).
    presale_reserve: Annotated[PresaleReserve | None, Field(strict=False)] = None
    # Hours a paid order has to ship under the shop's promise (order/deadlines.py; None: the
    # channel's usual rule). A week at most: longer is a pre-sale, which has its own date.
    ship_within_h: Annotated[float | None, Field(gt=0, le=168, allow_inf_nan=False)] = None
    # Orders of this shop go before others (0-9) when stock comes back and at the WMS.
    priority: Annotated[int | None, Field(ge=0, le=9)] = None


def _one_shop(key: ShopKey) -> ShopKey:
    if key.is_pool:
        one = ShopKey.of(key.channel, "SHOP_ID")
        raise ShopKeyError(
            f"{str(key)!r} is a channel pool: shop rules name one shop each, as {one}"
        )
    return key


class ShopsFile(BaseModel):
    """The schema of config/shops.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    shops: dict[Annotated[ConfigShopKey, AfterValidator(_one_shop)], ShopRules] = Field(
        default_factory=dict
    )


def load_shop_rules(path: Path) -> dict[ShopKey, ShopRules]:
    """Shop key -> rules; no file: every shop takes the defaults. Raises
    :class:`ShopConfigError` naming the file and each bad key."""
    spec = load_config(
        path, ShopsFile, what="shop rules", error=ShopConfigError, default=ShopsFile()
    )
    return dict(spec.shops)
