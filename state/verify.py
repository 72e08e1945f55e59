"""Reconciliation of the stock invariants in Redis: the check behind `./oms verify`.

- available >= 0 for every sku/warehouse (reserved never exceeds on hand: no oversell),
- reserved equals the sum of the active reservations that name that sku/warehouse,
- no order holds the same sku/warehouse twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
import redis

from state.keys import Keys
from state.stock import all_levels


@dataclass
class VerifyReport:
    ok: bool = True
    oversold_units: int = 0
    skus: int = 0
    locations: int = 0
    active_reservations: int = 0
    violations: list[dict[str, object]] = field(default_factory=list)

    def add(self, kind: str, **details: object) -> None:
        self.ok = False
        self.violations.append({"kind": kind, **details})

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "oversold_units": self.oversold_units,
            "skus": self.skus,
            "locations": self.locations,
            "active_reservations": self.active_reservations,
            "violations": self.violations,
        }


def reserved_by_reservations(
    client: redis.Redis, keys: Keys, report: VerifyReport
) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    pattern = keys.reservation("*").replace("{*}", "*")
    batch: list[str] = []

    def drain() -> None:
        for key, raw in zip(batch, client.mget(batch), strict=True):
            if not raw:
                continue
            record = orjson.loads(raw)
            if record.get("status") != "reserved":
                continue
            report.active_reservations += 1
            seen: set[tuple[str, str]] = set()
            for a in record.get("allocations") or []:
                where = (a["sku"], a["warehouse"])
                if where in seen:
                    report.add(
                        "double_reservation",
                        order_id=record.get("order_id", key),
                        sku=where[0],
                        warehouse=where[1],
                    )
                seen.add(where)
                totals[where] += int(a["quantity"])
        batch.clear()

    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            drain()
    drain()
    return totals


def verify(client: redis.Redis, keys: Keys) -> VerifyReport:
    report = VerifyReport()
    held = reserved_by_reservations(client, keys, report)
    levels = all_levels(client, keys)
    report.skus = len({lv.sku for lv in levels})
    report.locations = len(levels)
    for lv in levels:
        if lv.available < 0:
            report.oversold_units += -lv.available
            report.add(
                "oversold",
                sku=lv.sku,
                warehouse=lv.warehouse,
                on_hand=lv.on_hand,
                reserved=lv.reserved,
            )
        if lv.reserved < 0:
            report.add(
                "negative_reserved", sku=lv.sku, warehouse=lv.warehouse, reserved=lv.reserved
            )
        expected = held.pop((lv.sku, lv.warehouse), 0)
        if lv.reserved != expected:
            report.add(
                "reserved_mismatch",
                sku=lv.sku,
                warehouse=lv.warehouse,
                reserved=lv.reserved,
                sum_of_reservations=expected,
            )
    for (sku, warehouse), qty in held.items():
        if qty:
            report.add("reservation_without_stock", sku=sku, warehouse=warehouse, quantity=qty)
    return report
