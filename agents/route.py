"""Stage 5: which warehouses may serve an order, in priority order, from config/warehouses.toml.

The reserve script takes the first candidate that can serve every line, so routing and
reservation happen in one atomic step and a route is never chosen on stale stock figures.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from streams.models import Order


class RoutingConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Warehouse:
    code: str
    name: str
    province: str


@dataclass(frozen=True)
class RoutingTable:
    warehouses: dict[str, Warehouse]
    by_province: dict[str, tuple[str, ...]]
    default: tuple[str, ...]

    def candidates(self, order: Order) -> tuple[str, ...]:
        address = order.address
        if address.country.upper() in {"CN", "HK", "MO", "TW"} and address.province_code:
            return self.by_province.get(address.province_code, self.default)
        return self.default

    @classmethod
    def load(cls, path: Path) -> RoutingTable:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RoutingConfigError(f"{path}: {exc}") from exc
        raw_warehouses = data.get("warehouses", {})
        if not isinstance(raw_warehouses, dict) or not all(
            isinstance(w, dict) for w in raw_warehouses.values()
        ):
            raise RoutingConfigError(f"{path}: every [warehouses.CODE] must be a table")
        warehouses = {
            code: Warehouse(code, str(w.get("name", code)), str(w.get("province", "")))
            for code, w in raw_warehouses.items()
        }
        routing = data.get("routing", {})
        if not isinstance(routing, dict) or not all(isinstance(v, list) for v in routing.values()):
            raise RoutingConfigError(f"{path}: [routing] maps provinces to lists of warehouses")
        routing = dict(routing)
        default = tuple(routing.pop("default", list(warehouses)))
        table = {prov: tuple(codes) for prov, codes in routing.items()}
        for prov, codes in [("default", default), *table.items()]:
            if len(set(codes)) != len(codes):
                raise RoutingConfigError(f"{path}: routing.{prov} lists a warehouse twice")
            unknown = [c for c in codes if c not in warehouses]
            if unknown or not codes:
                raise RoutingConfigError(
                    f"{path}: routing.{prov} names unknown warehouses {unknown}"
                    if unknown
                    else f"{path}: routing.{prov} is empty"
                )
        return cls(warehouses, table, default)
