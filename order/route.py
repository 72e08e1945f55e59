"""Stage 5: warehouse and carrier choice, from config/warehouses.toml, config/carriers.toml and
config/skus.csv (pure: no Redis, no clock).

Warehouses: each declares the destinations it covers, a priority and a shipping cost per
destination. :meth:`RoutingTable.candidates` ranks the covering warehouses by (cost to the
destination, priority, code). Stock is deliberately not looked at here: the reserve script takes
the first candidate that can serve every line, so "has the stock" is decided atomically with the
reservation and a route is never chosen on stale figures.

Carriers: rules match a parcel by warehouse, country, destination and weight; the cheapest
matching rule wins (ties: the first in the file) and a mandatory default carrier takes every
parcel no rule matches, so every parcel gets a carrier.

Destinations are province codes (ISO 3166-2:CN suffixes, streams/regions.py) plus ``other``: an
address outside greater China or without a known province. Config files name them with
*selectors*: a province code, a region (``east``, ``south``... as in streams.regions.REGION),
``mainland`` (the 31 mainland provinces), ``other`` or ``all``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.config import ConfigError, load_config, read_text
from streams.messages import CommandLine
from streams.models import Address, Order, OrderLine
from streams.regions import PROVINCES, REGION

OTHER = "other"
GREATER_CHINA = frozenset({"CN", "HK", "MO", "TW"})
SARS = ("HK", "MO", "TW")  # also ISO 3166-1 countries of their own
MAINLAND = frozenset(PROVINCES) - set(SARS)
DESTINATIONS = frozenset(PROVINCES) | {OTHER}
MAX_SKU_WEIGHT_G = 1_000_000  # a tonne per unit is a typo, not a parcel


def _build_selectors() -> dict[str, tuple[int, frozenset[str]]]:
    """selector -> (specificity, destinations); a more specific cost override wins."""
    selectors: dict[str, tuple[int, frozenset[str]]] = {
        "all": (0, DESTINATIONS),
        "mainland": (1, MAINLAND),
    }
    for region in sorted(set(REGION.values())):
        selectors[region] = (2, frozenset(p for p, r in REGION.items() if r == region))
    for code in [*PROVINCES, OTHER]:
        selectors[code] = (3, frozenset({code}))
    return selectors


SELECTORS = MappingProxyType(_build_selectors())


class RoutingConfigError(ConfigError):
    """A routing, carrier or sku weight file that cannot be used; names the file and field."""


def destination_of(address: Address) -> str:
    """The routing key of an address: its province code, or ``other``."""
    country = address.country.upper()
    code = address.province_code.upper() or (country if country in SARS else "")
    if country in GREATER_CHINA and code in PROVINCES:
        return code
    return OTHER


def expand(selectors: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(SELECTORS[s][1] for s in selectors))


# --- config file schemas (pydantic: unknown keys and wrong types are refused) ---------------


def _to_money(value: object) -> object:
    """TOML floats are binary: money must be written as a string (or a whole number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError('write money as a string, e.g. "8.50"')
    try:
        return Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a number") from exc


# Money in a config file: a string (or a whole number), never a TOML float.
ConfigMoney = Annotated[
    Decimal,
    BeforeValidator(_to_money),
    Field(ge=0, allow_inf_nan=False, decimal_places=4, max_digits=14),
]
# Warehouse codes end up in "WH=qty,WH=qty" reservation fields and "WH-A+WH-B" record fields.
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_selectors(values: list[str], *, allowed: Iterable[str] = SELECTORS) -> list[str]:
    allowed = set(allowed)
    if not values:
        raise ValueError("is empty (list provinces, regions, 'mainland', 'other' or 'all')")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown destinations {unknown} (known: {', '.join(sorted(allowed))})")
    return _check_unique(values)


def _check_unique(values: list[str]) -> list[str]:
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"lists {twice} more than once")
    return values


class _WarehouseSpec(_Config):
    name: str = ""
    province: str
    priority: Annotated[int, Field(ge=0)]
    covers: list[str]
    shipping_cost: dict[str, ConfigMoney]

    @field_validator("province")
    @classmethod
    def _known_province(cls, value: str) -> str:
        if value not in PROVINCES:
            raise ValueError(f"unknown province code {value!r}")
        return value

    @field_validator("covers")
    @classmethod
    def _known_covers(cls, value: list[str]) -> list[str]:
        return _check_selectors(value)

    @field_validator("shipping_cost")
    @classmethod
    def _known_cost_keys(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if "default" not in value:
            raise ValueError('needs a "default" cost (any destination not listed)')
        overrides = [k for k in value if k != "default"]
        if overrides:
            _check_selectors(overrides, allowed=set(SELECTORS) - {"all"})
        return value


class _WarehousesFile(_Config):
    warehouses: dict[Code, _WarehouseSpec]

    @model_validator(mode="after")
    def _every_destination_is_covered(self) -> _WarehousesFile:
        if not self.warehouses:
            raise ValueError("warehouses: empty (declare at least one [warehouses.CODE])")
        uncovered = DESTINATIONS - expand(s for w in self.warehouses.values() for s in w.covers)
        if uncovered:
            raise ValueError(f"warehouses: no warehouse covers {sorted(uncovered)}")
        return self


class _Price(_Config):
    carrier: Code
    first_kg: ConfigMoney  # the first kilogram (or part of it)
    per_extra_kg: ConfigMoney = Decimal("0")  # every further started kilogram


class _Rule(_Price):
    warehouses: list[Code] | None = None  # None: any warehouse
    countries: list[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]] | None = None
    destinations: list[str] | None = None  # selectors; None: any destination
    exclude: list[str] = Field(default_factory=list)  # selectors taken out of destinations
    min_weight_g: Annotated[int, Field(ge=0)] = 0
    max_weight_g: Annotated[int, Field(ge=0)] | None = None  # inclusive

    @field_validator("warehouses", "countries")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty (leave it out to match any)")
        return value if value is None else _check_unique(value)

    @field_validator("destinations")
    @classmethod
    def _known_destinations(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else _check_selectors(value)

    @field_validator("exclude")
    @classmethod
    def _known_exclusions(cls, value: list[str]) -> list[str]:
        return _check_selectors(value) if value else value

    @model_validator(mode="after")
    def _sensible(self) -> _Rule:
        if self.max_weight_g is not None and self.max_weight_g < self.min_weight_g:
            raise ValueError("max_weight_g is below min_weight_g")
        if not expand(self.destinations or ["all"]) - expand(self.exclude):
            raise ValueError("exclude leaves no destination")
        return self


class _CarrierName(_Config):
    name: Annotated[str, StringConstraints(min_length=1)]


class _CarriersFile(_Config):
    default_weight_g: Annotated[int, Field(gt=0, le=MAX_SKU_WEIGHT_G)]  # a sku not in skus.csv
    carriers: dict[Code, _CarrierName]
    default: _Price  # takes every parcel no rule matches
    rules: list[_Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_carriers(self) -> _CarriersFile:
        for where, price in [("default", self.default)] + [
            (f"rules[{i}]", r) for i, r in enumerate(self.rules)
        ]:
            if price.carrier not in self.carriers:
                raise ValueError(f"{where}.carrier: unknown carrier {price.carrier!r}")
        return self


# --- the loaded tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Warehouse:
    code: str
    name: str
    province: str
    priority: int  # lower first, among equal shipping costs
    covers: frozenset[str]  # destinations it ships to
    shipping_cost: Mapping[str, Decimal] = field(hash=False)  # one per destination


def expand_costs(costs: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Per destination: the most specific key wins (province > region > mainland > default)."""
    out = dict.fromkeys(sorted(DESTINATIONS), costs["default"])
    overrides = sorted((k for k in costs if k != "default"), key=lambda k: SELECTORS[k][0])
    for key in overrides:
        out.update(dict.fromkeys(SELECTORS[key][1], costs[key]))
    return out


def build_warehouse(code: str, spec: _WarehouseSpec) -> Warehouse:
    return Warehouse(
        code=code,
        name=spec.name or code,
        province=spec.province,
        priority=spec.priority,
        covers=expand(spec.covers),
        shipping_cost=MappingProxyType(expand_costs(spec.shipping_cost)),
    )


def rank_warehouses(warehouses: Iterable[Warehouse], destination: str) -> tuple[str, ...]:
    covering = [w for w in warehouses if destination in w.covers]
    covering.sort(key=lambda w: (w.shipping_cost[destination], w.priority, w.code))
    return tuple(w.code for w in covering)


@dataclass(frozen=True)
class Carrier:
    code: str
    name: str
    cost: Decimal


@dataclass(frozen=True)
class CarrierRule:
    carrier: str
    first_kg: Decimal
    per_extra_kg: Decimal = Decimal("0")
    warehouses: frozenset[str] | None = None  # None: any
    countries: frozenset[str] | None = None  # None: any
    destinations: frozenset[str] = DESTINATIONS
    min_weight_g: int = 0
    max_weight_g: int | None = None

    def matches(self, warehouse: str, country: str, destination: str, weight_g: int) -> bool:
        return (
            (self.warehouses is None or warehouse in self.warehouses)
            and (self.countries is None or country in self.countries)
            and destination in self.destinations
            and self.min_weight_g <= weight_g
            and (self.max_weight_g is None or weight_g <= self.max_weight_g)
        )

    def price(self, weight_g: int) -> Decimal:
        """First kilogram plus every further started kilogram (首重 + 续重)."""
        extra_kg = max(0, -(-(weight_g - 1000) // 1000))
        return self.first_kg + self.per_extra_kg * extra_kg

    @classmethod
    def from_spec(cls, spec: _Price) -> CarrierRule:
        if not isinstance(spec, _Rule):
            return cls(spec.carrier, spec.first_kg, spec.per_extra_kg)
        return cls(
            carrier=spec.carrier,
            first_kg=spec.first_kg,
            per_extra_kg=spec.per_extra_kg,
            warehouses=None if spec.warehouses is None else frozenset(spec.warehouses),
            countries=None if spec.countries is None else frozenset(spec.countries),
            destinations=expand(spec.destinations or ["all"]) - expand(spec.exclude),
            min_weight_g=spec.min_weight_g,
            max_weight_g=spec.max_weight_g,
        )


@dataclass(frozen=True)
class CarrierBook:
    names: Mapping[str, str]  # carrier code -> name
    rules: tuple[CarrierRule, ...]
    fallback: CarrierRule
    default_weight_g: int

    def choose(self, warehouse: str, address: Address, weight_g: int) -> Carrier:
        country, destination = address.country.upper(), destination_of(address)
        matching = [r for r in self.rules if r.matches(warehouse, country, destination, weight_g)]
        # min keeps the first of equal prices: ties go to the rule earlier in the file
        best = min(matching, key=lambda r: r.price(weight_g), default=self.fallback)
        return Carrier(best.carrier, self.names[best.carrier], best.price(weight_g))

    @classmethod
    def load(cls, path: Path, warehouses: Iterable[str]) -> CarrierBook:
        spec = load_config(path, _CarriersFile, what="carriers", error=RoutingConfigError)
        known = set(warehouses)
        problems = [
            f"rules[{i}].warehouses: unknown warehouses {unknown} (known: {sorted(known)})"
            for i, rule in enumerate(spec.rules)
            if (unknown := sorted(set(rule.warehouses or ()) - known))
        ]
        if problems:
            raise RoutingConfigError.listing(path, "carriers", problems)
        return cls(
            names=MappingProxyType({code: c.name for code, c in spec.carriers.items()}),
            rules=tuple(CarrierRule.from_spec(r) for r in spec.rules),
            fallback=CarrierRule.from_spec(spec.default),
            default_weight_g=spec.default_weight_g,
        )


@dataclass(frozen=True)
class WeightTable:
    grams: Mapping[str, int]  # sku -> grams per unit, packed
    default_g: int  # a sku the table does not know

    def weight_g(self, lines: Iterable[OrderLine | CommandLine]) -> int:
        return sum(self.grams.get(line.sku, self.default_g) * line.quantity for line in lines)

    @classmethod
    def load(cls, path: Path, default_g: int) -> WeightTable:
        """CSV with header sku,weight_g; every bad row is reported at once."""
        text = read_text(path, RoutingConfigError, encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text))
        header = {(h or "").strip() for h in reader.fieldnames or []}
        if not {"sku", "weight_g"} <= header:
            raise RoutingConfigError.listing(path, "sku weights", ["header must be sku,weight_g"])
        grams: dict[str, int] = {}
        errors: list[str] = []
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            sku, weight = row.get("sku", ""), row.get("weight_g", "")
            if not sku:
                errors.append(f"line {line_no}: sku is empty")
            elif sku in grams:
                errors.append(f"line {line_no}: sku {sku!r} listed twice")
            elif not weight.isdigit() or int(weight) > MAX_SKU_WEIGHT_G:
                errors.append(f"line {line_no}: weight_g {weight!r} is not 0-{MAX_SKU_WEIGHT_G}")
            else:
                grams[sku] = int(weight)
        if errors:
            raise RoutingConfigError.listing(path, "sku weights", errors)
        return cls(MappingProxyType(grams), default_g)


@dataclass(frozen=True)
class RoutingTable:
    warehouses: dict[str, Warehouse]
    by_province: dict[str, tuple[str, ...]]  # province code -> covering warehouses, best first
    default: tuple[str, ...]  # the same for 'other' (abroad, or no known province)
    carriers: CarrierBook
    weights: WeightTable

    def candidates(self, order: Order, address: Address | None = None) -> tuple[str, ...]:
        """Warehouses that may serve the order, best first; ``address`` overrides the order's
        (an after-sales address change)."""
        destination = destination_of(address or order.address)
        return self.default if destination == OTHER else self.by_province[destination]

    def shipping_cost(self, warehouse: str, address: Address) -> Decimal:
        return self._warehouse(warehouse).shipping_cost[destination_of(address)]

    def choose_carrier(self, warehouse: str, address: Address, weight_g: int) -> Carrier:
        self._warehouse(warehouse)
        if weight_g < 0:
            raise ValueError(f"negative parcel weight {weight_g}")
        return self.carriers.choose(warehouse, address, weight_g)

    def weight_g(self, lines: Iterable[OrderLine | CommandLine]) -> int:
        """Grams of a parcel: order lines, or the command lines a warehouse ships."""
        return self.weights.weight_g(lines)

    def _warehouse(self, code: str) -> Warehouse:
        try:
            return self.warehouses[code]
        except KeyError:
            raise ValueError(f"unknown warehouse {code!r}") from None

    @classmethod
    def load(
        cls, path: Path, *, carriers: Path | None = None, skus: Path | None = None
    ) -> RoutingTable:
        """warehouses.toml, plus carriers.toml and skus.csv beside it unless given."""
        spec = load_config(path, _WarehousesFile, what="warehouses", error=RoutingConfigError)
        warehouses = {code: build_warehouse(code, w) for code, w in spec.warehouses.items()}
        book = CarrierBook.load(carriers or path.with_name("carriers.toml"), warehouses)
        weights = WeightTable.load(skus or path.with_name("skus.csv"), book.default_weight_g)
        ranked = {d: rank_warehouses(warehouses.values(), d) for d in sorted(DESTINATIONS)}
        default = ranked.pop(OTHER)
        return cls(warehouses, ranked, default, book, weights)
