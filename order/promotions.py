"""Gift promotions from config/promotions.toml: which free lines an order earns (pure).

Two kinds of rule: ``buy`` (buy at least N of a sku, get a gift; optionally one gift per N) and
``amount`` (goods paid at least N in a currency, get a gift). Each may be limited to shops
("CHANNEL/SHOP" or "CHANNEL/*", as in config/shops.toml) and to an active window.

Rules are evaluated at the order's ``created_at``, not at processing time, so a replayed or
late order earns exactly what it earned when the buyer placed it, and the gift lines are a
pure function of (order, file): their ids ("GIFT-<rule id>") are stable across redeliveries.
Only the channel's own paid lines count: a gift never earns a gift (neither a channel's free
line nor a line added here). The caller reserves gifts best effort: a gift out of stock never
blocks an order.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.config import ConfigError, load_config
from order.route import ConfigMoney
from streams.models import ConfigShopKey, Order, OrderLine, ShopKey

GIFT_LINE_PREFIX = "GIFT-"

RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Sku = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Units = Annotated[int, Field(gt=0, le=10_000)]


class PromotionConfigError(ConfigError):
    """config/promotions.toml cannot be used; names the file and each bad field."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: RuleId
    title: Annotated[str, StringConstraints(max_length=200)] = ""
    gift_sku: Sku
    gift_quantity: Units = 1
    shops: list[ConfigShopKey] | None = None  # None: every shop
    starts: AwareDatetime | None = None  # inclusive
    ends: AwareDatetime | None = None  # exclusive

    @field_validator("shops")
    @classmethod
    def _known_shops(cls, value: list[ShopKey] | None) -> list[ShopKey] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("is empty (leave it out for every shop)")
        if len(set(value)) != len(value):
            raise ValueError("lists a shop more than once")
        return value

    @model_validator(mode="after")
    def _window(self) -> _Rule:
        if self.starts and self.ends and self.ends <= self.starts:
            raise ValueError("ends must be after starts")
        return self

    def applies(self, order: Order) -> bool:
        """Active at the order's creation and open to its shop."""
        at = order.created_at
        if (self.starts and at < self.starts) or (self.ends and at >= self.ends):
            return False
        if self.shops is None:
            return True
        shop = order.shop_key
        return shop in self.shops or shop.pool in self.shops


class BuyRule(_Rule):
    """Buy at least ``min_quantity`` of ``sku``: ``gift_quantity`` gifts, or that many per
    ``min_quantity`` bought when ``per_multiple`` (capped by ``max_gift_quantity``)."""

    kind: Literal["buy"]
    sku: Sku
    min_quantity: Units = 1
    per_multiple: bool = False
    max_gift_quantity: Units | None = None

    def gift_units(self, bought: dict[str, int], paid: Decimal, currency: str) -> int:
        times = bought.get(self.sku, 0) // self.min_quantity
        units = self.gift_quantity * (times if self.per_multiple else min(times, 1))
        return min(units, self.max_gift_quantity or units)


class AmountRule(_Rule):
    """Goods paid (the order's own lines after discounts, shipping excluded) of at least
    ``min_amount`` in ``currency``: ``gift_quantity`` gifts."""

    kind: Literal["amount"]
    min_amount: Annotated[ConfigMoney, Field(gt=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]

    def gift_units(self, bought: dict[str, int], paid: Decimal, currency: str) -> int:
        return self.gift_quantity if currency == self.currency and paid >= self.min_amount else 0


Rule = Annotated[BuyRule | AmountRule, Field(discriminator="kind")]


class Promotions(BaseModel):
    """The validated file; rules are evaluated in file order (the order of the gift lines)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    promotions: list[Rule] = Field(default_factory=list)

    @field_validator("promotions")
    @classmethod
    def _unique_ids(cls, value: list[BuyRule | AmountRule]) -> list[BuyRule | AmountRule]:
        ids = [r.id for r in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"rule ids {twice} are used more than once (gift line ids)")
        return value


def load_promotions(path: Path) -> Promotions:
    return load_config(path, Promotions, what="promotions", error=PromotionConfigError)


def paid_lines(lines: Iterable[OrderLine]) -> list[OrderLine]:
    return [line for line in lines if not line.is_gift]


def gift_lines(order: Order, promotions: Promotions) -> list[OrderLine]:
    """The free lines the order earns, one per matching rule, in file order."""
    lines = paid_lines(order.lines)
    bought: dict[str, int] = {}
    for line in lines:
        bought[line.sku] = bought.get(line.sku, 0) + line.quantity
    paid = sum((line.paid_amount for line in lines), Decimal(0))
    gifts = []
    for rule in promotions.promotions:
        units = rule.gift_units(bought, paid, order.currency.upper()) if rule.applies(order) else 0
        if units:
            gifts.append(make_gift_line(rule, units))
    return gifts


def make_gift_line(rule: BuyRule | AmountRule, units: int) -> OrderLine:
    return OrderLine(
        line_id=f"{GIFT_LINE_PREFIX}{rule.id}",
        sku=rule.gift_sku,
        title=rule.title,
        quantity=units,
        unit_price=Decimal(0),
        paid_amount=Decimal(0),
        is_gift=True,
    )
