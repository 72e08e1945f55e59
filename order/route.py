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

Destinations (what an address routes as, :func:`destination_of`): in greater China its
province code (ISO 3166-2:CN suffix, streams/regions.py); elsewhere a US state as ISO 3166-2
(``US-CA``, streams/countries.py) or else the country as ``country:US`` (``country:CN`` is an
address in China without a known province); ``other`` a country code that is no ISO 3166-1 one.
Config files name sets of them with *selectors*: a province code, a region (``east``,
``south``... as in streams.regions.REGION), ``mainland`` (the 31 mainland provinces), a country
``country:US`` (with its states; ``country:CN`` with the mainland), a state ``US-CA``, ``other``
(everything outside greater China's provinces, as it always meant) or ``all``. Countries are
prefixed because bare two-letter selectors were province codes first (``SH`` is Shanghai, not
Saint Helena).

Warehouses abroad price their shipping in their own currency; candidates are ranked by that
cost converted to the file's ``base_currency`` with its ``[rates]`` (Decimal, for ranking only:
docs/decisions/0024-overseas-warehouses.md). Carrier prices are in the currency of the
warehouse the parcel ships from; a carrier may name the countries it ``ships_from``, and every
warehouse country has a default carrier that picks up there.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.config import ConfigError, load_config, read_text
from streams.countries import (
    COUNTRIES,
    GREATER_CHINA,
    SARS,
    all_subdivisions,
    subdivision_of,
)
from streams.messages import CommandLine
from streams.models import Address, Order, OrderLine
from streams.regions import PROVINCES, REGION

OTHER = "other"
COUNTRY = "country:"  # a country's selector and destination: 'country:US'
MAINLAND = frozenset(PROVINCES) - set(SARS)
STATES = all_subdivisions()  # 'US-CA', ...
DESTINATIONS = (
    frozenset(PROVINCES) | STATES | frozenset(COUNTRY + c for c in COUNTRIES - set(SARS)) | {OTHER}
)
ABROAD = DESTINATIONS - frozenset(PROVINCES)  # what 'other' has always meant
MAX_SKU_WEIGHT_G = 1_000_000  # a tonne per unit is a typo, not a parcel
BASE_CURRENCY = "CNY"  # of files that name none, and of warehouses in China


def _country_members(country: str) -> frozenset[str]:
    """A country's destinations: its own, its states, and for CN the mainland provinces."""
    if country in SARS:
        return frozenset({country})
    members = {COUNTRY + country} | {s for s in STATES if s.startswith(f"{country}-")}
    return frozenset(members | (MAINLAND if country == "CN" else set()))


def _build_selectors() -> dict[str, tuple[int, frozenset[str]]]:
    """selector -> (specificity, destinations); a more specific cost override wins (of two
    overlapping selectors, the smaller set is always the more specific)."""
    selectors: dict[str, tuple[int, frozenset[str]]] = {
        "all": (0, DESTINATIONS),
        OTHER: (1, ABROAD),
    }
    for country in sorted(COUNTRIES):
        selectors[COUNTRY + country] = (2, _country_members(country))
    selectors["mainland"] = (3, MAINLAND)
    for region in sorted(set(REGION.values())):
        selectors[region] = (4, frozenset(p for p, r in REGION.items() if r == region))
    for code in [*PROVINCES, *sorted(STATES)]:
        selectors[code] = (5, frozenset({code}))
    return selectors


SELECTORS = MappingProxyType(_build_selectors())
SELECTOR_KINDS = (
    "province codes (SH), regions (east), 'mainland', countries (country:US), US states "
    "(US-CA), 'other' or 'all'"
)


class RoutingConfigError(ConfigError):
    """A routing, carrier or sku weight file that cannot be used; names the file and field."""


def destination_of(address: Address) -> str:
    """The routing key of an address: its province code in greater China, else its US state
    ('US-CA', from the state as the channel sent it), else ``country:XX``; ``other`` for a
    country code ISO 3166-1 does not assign."""
    country = address.country.upper()
    if country in GREATER_CHINA:
        code = address.province_code.upper() or (country if country in SARS else "")
        return code if code in PROVINCES else COUNTRY + "CN"
    if country not in COUNTRIES:
        return OTHER
    state = subdivision_of(country, address.province_code) or subdivision_of(
        country, address.province
    )
    return state or COUNTRY + country


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
        raise ValueError(f"is empty (list {SELECTOR_KINDS})")
    unknown = [v for v in values if v not in allowed]
    if unknown:
        hints = "".join(f"; {hint}" for v in unknown if (hint := _selector_hint(v)))
        raise ValueError(f"unknown destinations {unknown} (known: {SELECTOR_KINDS}){hints}")
    return _check_unique(values)


def _selector_hint(value: str) -> str:
    """What a near miss probably meant: a bare country code, an unknown country, a state of a
    country whose states routing does not know."""
    country, dash, _ = value.partition("-")
    if value.startswith(COUNTRY):
        code = value.removeprefix(COUNTRY)
        return "" if code in COUNTRIES else f"{code!r} is no ISO 3166-1 alpha-2 country"
    if len(value) == 2 and value in COUNTRIES:
        return f"a country is written 'country:{value}'"
    if dash and country in COUNTRIES and f"{COUNTRY}{country}" in SELECTORS:
        return f"{value!r}: only US states are known, use 'country:{country}'"
    return ""


def _check_unique(values: list[str]) -> list[str]:
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ValueError(f"lists {twice} more than once")
    return values


def _check_country(value: str) -> str:
    if value not in COUNTRIES:
        raise ValueError(f"unknown country {value!r} (an ISO 3166-1 alpha-2 code, e.g. US)")
    return value


def _check_currency(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError(f"{value!r} is no currency (an ISO 4217 code in capitals, e.g. USD)")
    return value


CountryCode = Annotated[str, AfterValidator(_check_country)]
CurrencyCode = Annotated[str, AfterValidator(_check_currency)]
Rate = Annotated[ConfigMoney, Field(gt=0)]


class _WarehouseSpec(_Config):
    name: str = ""
    country: CountryCode = "CN"
    province: str = ""  # in greater China: its province code; elsewhere a US state or ''
    # Required outside China: the shipping costs are written in it.
    currency: Annotated[CurrencyCode | None, Field(validate_default=True)] = None
    priority: Annotated[int, Field(ge=0)]
    covers: list[str]
    shipping_cost: dict[str, ConfigMoney]

    @field_validator("province")
    @classmethod
    def _known_province(cls, value: str, info: ValidationInfo) -> str:
        country = info.data.get("country", "CN")
        if country in GREATER_CHINA and value not in PROVINCES:
            raise ValueError(f"unknown province code {value!r} (a warehouse in {country})")
        if country not in GREATER_CHINA and value and subdivision_of(country, value) != value:
            raise ValueError(f"{value!r} is no state of {country} known here (e.g. US-CA, or '')")
        return value

    @field_validator("currency")
    @classmethod
    def _currency_outside_china(cls, value: str | None, info: ValidationInfo) -> str | None:
        country = info.data.get("country")
        if value is None and country not in (None, "CN"):
            raise ValueError(
                f"required for a warehouse in {country}: its shipping_cost is written in it "
                "(an ISO 4217 code, e.g. USD)"
            )
        return value

    @property
    def currency_code(self) -> str:
        return self.currency or BASE_CURRENCY

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
    # Costs of warehouses in other currencies are ranked after conversion into this one.
    base_currency: CurrencyCode = BASE_CURRENCY
    rates: dict[CurrencyCode, Rate] = Field(default_factory=dict)  # base units per one unit
    warehouses: dict[Code, _WarehouseSpec]

    @model_validator(mode="after")
    def _every_destination_is_covered(self) -> _WarehousesFile:
        if not self.warehouses:
            raise ValueError("warehouses: empty (declare at least one [warehouses.CODE])")
        uncovered = DESTINATIONS - expand(s for w in self.warehouses.values() for s in w.covers)
        if uncovered:
            raise ValueError(f"warehouses: no warehouse covers {describe(uncovered)}")
        return self

    @model_validator(mode="after")
    def _every_currency_has_a_rate(self) -> _WarehousesFile:
        if self.base_currency in self.rates:
            raise ValueError(f"rates.{self.base_currency}: the base currency needs no rate")
        for code, spec in self.warehouses.items():
            currency = spec.currency_code
            if currency != self.base_currency and currency not in self.rates:
                raise ValueError(
                    f"warehouses.{code}.currency: no rate for {currency} in [rates] (costs are "
                    f'compared in base_currency {self.base_currency}: {currency} = "7.10")'
                )
        return self

    def rate(self, currency: str) -> Decimal:
        return Decimal(1) if currency == self.base_currency else self.rates[currency]


def describe(destinations: Iterable[str]) -> str:
    """A set of destinations in few words: 'other' when it is everything abroad, else the
    first few of them."""
    found = sorted(destinations)
    if set(found) == ABROAD:
        return "['other']"
    if set(found) >= ABROAD:
        found = [d for d in found if d not in ABROAD] + [OTHER]
    shown = ", ".join(repr(d) for d in found[:12])
    return f"[{shown}{f', ... {len(found) - 12} more' if len(found) > 12 else ''}]"


class _Price(_Config):
    carrier: Code
    first_kg: ConfigMoney  # the first kilogram (or part of it)
    per_extra_kg: ConfigMoney = Decimal("0")  # every further started kilogram


class _Rule(_Price):
    warehouses: list[Code] | None = None  # None: any warehouse
    countries: list[CountryCode] | None = None  # of the address
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
    ships_from: list[CountryCode] | None = None  # countries it picks up in; None: anywhere

    @field_validator("ships_from")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("is empty (leave it out for a carrier that picks up anywhere)")
        return value if value is None else _check_unique(value)


class _CarriersFile(_Config):
    default_weight_g: Annotated[int, Field(gt=0, le=MAX_SKU_WEIGHT_G)]  # a sku not in skus.csv
    carriers: dict[Code, _CarrierName]
    default: _Price  # takes every parcel no rule matches, from a country without defaults.XX
    defaults: dict[CountryCode, _Price] = Field(default_factory=dict)  # per warehouse country
    rules: list[_Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_carriers(self) -> _CarriersFile:
        for where, price in self.prices():
            if price.carrier not in self.carriers:
                raise ValueError(f"{where}.carrier: unknown carrier {price.carrier!r}")
        for country, price in self.defaults.items():
            if not self.ships_from(price.carrier, country):
                raise ValueError(
                    f"defaults.{country}.carrier: {price.carrier} does not ship from {country}"
                )
        return self

    def prices(self) -> list[tuple[str, _Price]]:
        return [
            ("default", self.default),
            *((f"defaults.{c}", p) for c, p in self.defaults.items()),
            *((f"rules[{i}]", r) for i, r in enumerate(self.rules)),
        ]

    def ships_from(self, carrier: str, country: str) -> bool:
        origins = self.carriers[carrier].ships_from
        return origins is None or country in origins


# --- the loaded tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Warehouse:
    code: str
    name: str
    province: str  # in greater China; a US state or '' elsewhere
    priority: int  # lower first, among equal shipping costs
    covers: frozenset[str] = field(repr=False)  # destinations it ships to
    # one per destination, in its own currency
    shipping_cost: Mapping[str, Decimal] = field(hash=False, repr=False)
    country: str = "CN"
    currency: str = BASE_CURRENCY
    rate: Decimal = Decimal(1)  # units of the file's base currency for one of its own

    def ranking_cost(self, destination: str) -> Decimal:
        """The shipping cost in the base currency: what warehouses are compared by."""
        return self.shipping_cost[destination] * self.rate


def expand_costs(costs: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Per destination: the most specific key wins (province > region > mainland > default)."""
    out = dict.fromkeys(sorted(DESTINATIONS), costs["default"])
    # sorted is stable: among keys of one specificity (disjoint sets), the file's order
    overrides = sorted((k for k in costs if k != "default"), key=lambda k: SELECTORS[k][0])
    for key in overrides:
        out.update(dict.fromkeys(SELECTORS[key][1], costs[key]))
    return out


def build_warehouse(code: str, spec: _WarehouseSpec, rate: Decimal = Decimal(1)) -> Warehouse:
    return Warehouse(
        code=code,
        name=spec.name or code,
        province=spec.province,
        priority=spec.priority,
        covers=expand(spec.covers),
        shipping_cost=MappingProxyType(expand_costs(spec.shipping_cost)),
        country=spec.country,
        currency=spec.currency_code,
        rate=rate,
    )


def rank_warehouses(warehouses: Iterable[Warehouse], destination: str) -> tuple[str, ...]:
    covering = [w for w in warehouses if destination in w.covers]
    covering.sort(key=lambda w: (w.ranking_cost(destination), w.priority, w.code))
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
    destinations: frozenset[str] = field(default=DESTINATIONS, repr=False)
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
    rules: tuple[CarrierRule, ...]  # each limited to the warehouses its carrier picks up at
    fallback: CarrierRule  # [default]: warehouses in a country without defaults.XX
    default_weight_g: int
    fallbacks: Mapping[str, CarrierRule] = field(default_factory=dict)  # per warehouse

    def choose(self, warehouse: str, address: Address, weight_g: int) -> Carrier:
        country, destination = address.country.upper(), destination_of(address)
        matching = [r for r in self.rules if r.matches(warehouse, country, destination, weight_g)]
        # min keeps the first of equal prices: ties go to the rule earlier in the file
        default = self.fallbacks.get(warehouse, self.fallback)
        best = min(matching, key=lambda r: r.price(weight_g), default=default)
        return Carrier(best.carrier, self.names[best.carrier], best.price(weight_g))

    @classmethod
    def load(cls, path: Path, warehouses: Mapping[str, Warehouse]) -> CarrierBook:
        spec = load_config(path, _CarriersFile, what="carriers", error=RoutingConfigError)
        problems = _unknown_warehouses(spec, warehouses) or _foreign_carriers(spec, warehouses)
        if problems:
            raise RoutingConfigError.listing(path, "carriers", problems)
        return cls(
            names=MappingProxyType({code: c.name for code, c in spec.carriers.items()}),
            rules=tuple(
                replace(rule, warehouses=_pickup(spec, rule, warehouses))
                for rule in map(CarrierRule.from_spec, spec.rules)
            ),
            fallback=CarrierRule.from_spec(spec.default),
            default_weight_g=spec.default_weight_g,
            fallbacks=MappingProxyType(
                {
                    code: CarrierRule.from_spec(spec.defaults.get(w.country, spec.default))
                    for code, w in warehouses.items()
                }
            ),
        )


def _unknown_warehouses(spec: _CarriersFile, warehouses: Mapping[str, Warehouse]) -> list[str]:
    known = set(warehouses)
    return [
        f"rules[{i}].warehouses: unknown warehouses {unknown} (known: {sorted(known)})"
        for i, rule in enumerate(spec.rules)
        if (unknown := sorted(set(rule.warehouses or ()) - known))
    ]


def _foreign_carriers(spec: _CarriersFile, warehouses: Mapping[str, Warehouse]) -> list[str]:
    """A default that would hand a parcel to a carrier that does not pick up in the
    warehouse's country (EMS from Los Angeles), or a rule that can never apply for that
    reason: both are mistakes in the file, said at load rather than found on a parcel."""
    problems = []
    for country in sorted({w.country for w in warehouses.values()} - set(spec.defaults)):
        if not spec.ships_from(spec.default.carrier, country):
            names = sorted(c for c, w in warehouses.items() if w.country == country)
            problems.append(
                f"default.carrier: {spec.default.carrier} does not ship from {country} "
                f"(warehouses {names}): add [defaults.{country}] with a carrier that does"
            )
    for i, rule in enumerate(spec.rules):
        named = rule.warehouses or ()
        if named and not any(spec.ships_from(rule.carrier, warehouses[w].country) for w in named):
            problems.append(
                f"rules[{i}]: {rule.carrier} ships from none of the countries of {named}"
            )
    return problems


def _pickup(
    spec: _CarriersFile, rule: CarrierRule, warehouses: Mapping[str, Warehouse]
) -> frozenset[str] | None:
    """The warehouses a rule may serve: those it names (or all), in a country its carrier
    picks up in; None (any) when nothing narrows it."""
    origins = spec.carriers[rule.carrier].ships_from
    if origins is None:
        return rule.warehouses
    named = rule.warehouses if rule.warehouses is not None else frozenset(warehouses)
    return frozenset(w for w in named if warehouses[w].country in origins)


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
    ranked: Mapping[str, tuple[str, ...]]  # destination -> covering warehouses, best first
    carriers: CarrierBook
    weights: WeightTable
    base_currency: str = BASE_CURRENCY  # ranking costs are compared in it

    def candidates(self, order: Order, address: Address | None = None) -> tuple[str, ...]:
        """Warehouses that may serve the order, best first; ``address`` overrides the order's
        (an after-sales address change)."""
        return self.ranked[destination_of(address or order.address)]

    def shipping_cost(self, warehouse: str, address: Address) -> Decimal:
        """In the warehouse's own currency (``Warehouse.currency``)."""
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
        warehouses = {
            code: build_warehouse(code, w, spec.rate(w.currency_code))
            for code, w in spec.warehouses.items()
        }
        book = CarrierBook.load(carriers or path.with_name("carriers.toml"), warehouses)
        weights = WeightTable.load(skus or path.with_name("skus.csv"), book.default_weight_g)
        ranked = {d: rank_warehouses(warehouses.values(), d) for d in sorted(DESTINATIONS)}
        return cls(warehouses, MappingProxyType(ranked), book, weights, spec.base_currency)
