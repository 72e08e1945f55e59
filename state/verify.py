"""Reconciliation of the stock invariants in Redis: the check behind `./oms verify`.

For every sku and warehouse:
- available >= 0 (reserved never exceeds on hand: no oversell), nothing negative;
- reserved = the sum of the open reservations (``r:ORDER`` fields) naming that warehouse, and
  sales in transit = the sum of the shipments in transit (``s:ORDER``);
- the ledger adds up: start (0) + every movement = the figure now, for on hand, reserved,
  inbound and sales in transit. Movements the shipper moved to ClickHouse (and trimmed from
  the stream) are summed there, the rest in the stream, split at the sku's cursor exactly as
  state/ledger.py ``read_ledgers`` explains; without ClickHouse a sku whose ledger was shipped
  is a ``ledger_trimmed`` violation, never a silent pass on partial data;
- no order holds the same sku in the same warehouse twice;
- no unit left with a parcel that no reservation covered (``u:ORDER``: the commit script takes
  such units off on hand when the WMS reports them shipped, and records them here: the WMS's
  shipped quantities reconciled with the books at the moment they leave);
- no saved decision left its stock work unfinished for longer than the pending sweeper allows
  (the order's record says what should have happened to stock; 0013).
Each sku's figures, reservations and ledger are read in one MULTI per sku batch, so a check is
consistent per sku even while orders keep flowing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from order.allocation import parse_parts
from order.record import PENDING_GRACE_S
from state.keys import Keys
from state.ledger import (
    CHUNK,
    Entry,
    ShippedLedger,
    Totals,
    format_id,
    read_ledgers,
    require_archive,
    stream_totals,
)
from state.lock import LEDGER_SHIPPER, DistributedLock, LockLost
from state.redis import scored
from state.stock import FIGURES, known_skus, levels_from

LOCK_WAIT_S = 3.0


@dataclass
class VerifyReport:
    ok: bool = True
    oversold_units: int = 0
    skus: int = 0
    locations: int = 0
    active_reservations: int = 0
    ledger_entries: int = 0  # movements checked, both parts
    ledger_shipped: int = 0  # of which summed in ClickHouse
    # True: the shipper was paused (lock held) during the read; False: it could not be paused
    # within the wait (the split at the cursor is exact anyway); None: ClickHouse not used.
    ledger_locked: bool | None = None
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
            "ledger_shipped": self.ledger_shipped,
            "ledger_locked": self.ledger_locked,
            "violations": self.violations,
        }


def verify(
    client: redis.Redis,
    keys: Keys,
    archive: ShippedLedger | None = None,
    *,
    lock_wait_s: float = LOCK_WAIT_S,
    now: float | None = None,
) -> VerifyReport:
    """Check every sku; ``archive`` (analytics/ledger.py ClickHouseLedger) supplies the shipped part
    of the ledger. The ``ledger-shipper`` lock is taken (bounded wait) so the shipper stands
    still while we read; the result does not depend on it, and the report says if it failed."""
    require_archive(archive)
    report = VerifyReport()
    skus = sorted(known_skus(client, keys))
    report.skus = len(skus)
    lock = None
    if archive is not None:
        lock = DistributedLock(client, keys, LEDGER_SHIPPER, wait_s=lock_wait_s)
        report.ledger_locked = lock.acquire() is not None
    try:
        for start in range(0, len(skus), CHUNK):
            if lock is not None and lock.lease is not None:
                try:
                    lock.renew_if_due()
                except LockLost:  # the shipper may run again: still exact (see above)
                    report.ledger_locked = False
            ledgers = read_ledgers(client, keys, skus[start : start + CHUNK])
            shipped: dict[str, dict[str, Totals]] = {}
            if archive is not None:
                ranges = {lg.sku: lg.shipped for lg in ledgers if lg.shipped is not None}
                for (sku, wh), totals in archive.totals(ranges).items():
                    shipped.setdefault(sku, {})[wh] = totals
            for lg in ledgers:
                trimmed = archive is None and lg.shipped is not None
                if trimmed:
                    report.add(
                        "ledger_trimmed",
                        sku=lg.sku,
                        cursor=format_id(lg.cursor),
                        detail="movements up to the cursor are only in ClickHouse: "
                        "verify with ClickHouse to check this ledger",
                    )
                check_sku(
                    report,
                    lg.sku,
                    lg.fields,
                    lg.entries,
                    shipped.get(lg.sku),
                    ledger_known=not trimmed,
                )
    finally:
        if lock is not None and lock.lease is not None:
            lock.release()
    check_unfinished(report, client, keys, time.time() if now is None else now)
    return report


def check_unfinished(report: VerifyReport, client: redis.Redis, keys: Keys, now: float) -> None:
    """Orders whose saved decision's stock work has waited past twice the sweeper's grace:
    their records and the stock disagree until it is carried out."""
    late = now - 2 * PENDING_GRACE_S
    pending = scored(client.zrangebyscore(keys.pending, "-inf", late, withscores=True))
    for order_id, since in pending:
        report.add(
            "unfinished_decision",
            order_id=order_id,
            pending_since=round(since, 3),
            detail="stock work of a saved decision not carried out (is any worker running?)",
        )


def check_sku(
    report: VerifyReport,
    sku: str,
    fields: dict[str, str],
    ledger: list[Entry],
    shipped: Mapping[str, Totals] | None = None,
    *,
    ledger_known: bool = True,
) -> None:
    """``ledger``: stream entries not yet shipped; ``shipped``: warehouse -> sums of the
    shipped ones; ``ledger_known`` False skips the ledger comparison (part is missing)."""
    held: Counter[str] = Counter()
    in_transit: Counter[str] = Counter()
    for key, value in fields.items():
        prefix, _, order_id = key.partition(":")
        if prefix == "u":
            report.add(
                "shipped_unreserved",
                sku=sku,
                order_id=order_id,
                shipped=value,
                detail="the WMS shipped units no reservation covered: taken off on hand when "
                "they left, but some order or count is wrong",
            )
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
    for part, counted_as_shipped in ((stream_totals(ledger), False), (shipped or {}, True)):
        for wh, sums in part.items():
            for figure in FIGURES:
                totals[(figure, wh)] += sums[figure]
            report.ledger_entries += sums["entries"]
            if counted_as_shipped:
                report.ledger_shipped += sums["entries"]
    for lv in levels_from(sku, fields):
        report.locations += 1
        where = {"sku": sku, "warehouse": lv.warehouse}
        if lv.available < 0:
            report.oversold_units += -lv.available
            report.add("oversold", **where, on_hand=lv.on_hand, reserved=lv.reserved)
        for figure, units in (
            ("on_hand", lv.on_hand),
            ("reserved", lv.reserved),
            ("inbound", lv.inbound),
            ("sit", lv.sales_in_transit),
        ):
            if units < 0:
                report.add("negative", **where, figure=figure, value=units)
            if ledger_known and totals[(figure, lv.warehouse)] != units:
                report.add(
                    "ledger_mismatch",
                    **where,
                    figure=figure,
                    value=units,
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
