"""Reconciliation of the stock invariants in Redis: the check behind `./oms verify`.

For every sku and warehouse:
- available >= 0 (reserved never exceeds on hand: no oversell), nothing negative;
- reserved = the sum of the open reservations (``r:ORDER`` fields) naming that warehouse, and
  sales in transit = the sum of the shipments in transit (``s:ORDER``);
- the ledger adds up: start (0) + every movement = the figure now, for on hand, reserved,
  inbound and sales in transit;
- no order holds the same sku in the same warehouse twice.
Each sku's figures, reservations and ledger are read in one pipelined round trip per sku
batch, so a check is consistent per sku even while orders keep flowing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis

from state.allocation import parse_parts
from state.keys import Keys
from state.stock import FIGURES, _levels, known_skus


@dataclass
class VerifyReport:
    ok: bool = True
    oversold_units: int = 0
    skus: int = 0
    locations: int = 0
    active_reservations: int = 0
    ledger_entries: int = 0
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
            "ledger_entries": self.ledger_entries,
            "violations": self.violations,
        }


def verify(client: redis.Redis, keys: Keys) -> VerifyReport:
    report = VerifyReport()
    skus = sorted(known_skus(client, keys))
    report.skus = len(skus)
    for start in range(0, len(skus), 200):
        chunk = skus[start : start + 200]
        pipe = client.pipeline(transaction=True)  # one sku's hash and ledger read together
        for sku in chunk:
            pipe.hgetall(keys.stock(sku))
            pipe.xrange(keys.ledger(sku))
        replies = pipe.execute()
        for k, sku in enumerate(chunk):
            check_sku(report, sku, replies[2 * k], replies[2 * k + 1])
    return report


def check_sku(
    report: VerifyReport, sku: str, fields: dict[str, str], ledger: list[tuple[str, dict[str, str]]]
) -> None:
    held: Counter[str] = Counter()
    in_transit: Counter[str] = Counter()
    for key, value in fields.items():
        prefix, _, order_id = key.partition(":")
        if prefix not in ("r", "s"):
            continue
        parts = parse_parts(value)
        warehouses = [wh for wh, _ in parts]
        if len(warehouses) != len(set(warehouses)):
            report.add("double_reservation", sku=sku, order_id=order_id, allocation=value)
        if prefix == "r" and parts:
            report.active_reservations += 1
        for wh, qty in parts:
            (held if prefix == "r" else in_transit)[wh] += qty
    totals: Counter[tuple[str, str]] = Counter()
    for _, entry in ledger:
        for figure in FIGURES:
            totals[(figure, entry["wh"])] += int(entry.get(figure, 0))
    report.ledger_entries += len(ledger)
    for lv in _levels(sku, fields):
        report.locations += 1
        where = {"sku": sku, "warehouse": lv.warehouse}
        if lv.available < 0:
            report.oversold_units += -lv.available
            report.add("oversold", **where, on_hand=lv.on_hand, reserved=lv.reserved)
        for figure, value in (
            ("on_hand", lv.on_hand),
            ("reserved", lv.reserved),
            ("inbound", lv.inbound),
            ("sit", lv.sales_in_transit),
        ):
            if value < 0:
                report.add("negative", **where, figure=figure, value=value)
            if totals[(figure, lv.warehouse)] != value:
                report.add(
                    "ledger_mismatch",
                    **where,
                    figure=figure,
                    value=value,
                    ledger=totals[(figure, lv.warehouse)],
                )
        expected = held.pop(lv.warehouse, 0)
        if lv.reserved != expected:
            report.add(
                "reserved_mismatch", **where, reserved=lv.reserved, sum_of_reservations=expected
            )
        if lv.sales_in_transit != in_transit.pop(lv.warehouse, 0):
            report.add("in_transit_mismatch", **where, sales_in_transit=lv.sales_in_transit)
    for wh, qty in held.items():
        if qty:
            report.add("reservation_without_stock", sku=sku, warehouse=wh, quantity=qty)
