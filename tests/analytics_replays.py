"""Facts emitted again under the same ids with other content, for the replay tests on both
ClickHouse versions (tests/unit/test_replay_facts.py: current, via chdb;
tests/integration/test_analytics_replay.py: 18.16).

Two kinds of second emission:
* ``reemitted``: what may differ between two emissions of one fact without changing what it
  says: its time (by weeks, across a month, so the old monthly partitions would have kept both
  rows for good; and by milliseconds, within one second), decimals serialised with more
  digits, a detail text or actor. The report must be exactly the one of a single emission.
* ``redecided``: a worker decided an input again and emitted the same event ids with other
  content (another allocation, another hold reason, another snapshot of the order). The report
  must follow the latest emission alone, whichever order the rows arrive in.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from analytics.facts import COLUMNS, rows_for
from streams.messages import (
    AfterSalesRequest,
    Allocation,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OrderEvent,
    WmsEvent,
)
from streams.models import Order
from tests.analytics_scenario import scenario

# The fact tables keyed by id since migration 0006 (stock_movements always was).
TABLES = (
    "order_events",
    "orders",
    "order_lines",
    "dlq",
    "fulfilment_commands",
    "wms_events",
    "aftersales_requests",
    "sales_by_minute",
)
IDS = {  # the distinct identities each table holds, whatever was replayed
    "order_events": "uniqExact(event_id)",
    "orders": "uniqExact(order_id)",
    "order_lines": "uniqExact(order_id, line_id)",
    "dlq": "uniqExact(dlq_id)",
    "fulfilment_commands": "uniqExact(command_id)",
    "wms_events": "uniqExact(event_id)",
    "aftersales_requests": "uniqExact(request_id)",
    "sales_by_minute": "uniqExact(order_id, line_id)",
}
LATER = timedelta(days=40, milliseconds=1)  # another month, and not the same millisecond


def _digits(value: Decimal) -> Decimal:
    """The same amount written with more digits (what re-serialising a float-ish value does)."""
    return value + Decimal("0.0000")


def _reserialised(order: Order) -> Order:
    lines = [
        line.model_copy(
            update={
                "unit_price": _digits(line.unit_price),
                "discount": _digits(line.discount),
                "paid_amount": _digits(line.paid_amount),
            }
        )
        for line in order.lines
    ]
    return order.model_copy(update={"lines": lines, "total": _digits(order.total)})


def reemitted(item: Any, n: int) -> Any:
    """The ``n``-th emission after the first (n >= 1): same id, same meaning, other content."""
    shift = LATER * n
    if isinstance(item, OrderEvent):
        update: dict[str, Any] = {
            "at": item.at + shift,
            "detail": f"emitted again ({n})",
            "actor": f"{item.actor}:again",
        }
        if item.order is not None:
            update["order"] = _reserialised(item.order)
        return item.model_copy(update=update)
    if isinstance(item, DlqRecord):
        return item.model_copy(
            update={"received_at": item.received_at + shift, "detail": f"{item.detail} ({n})"}
        )
    if isinstance(item, FulfilmentCommand):
        return item.model_copy(update={"created_at": item.created_at + shift})
    if isinstance(item, WmsEvent):
        return item.model_copy(update={"at": item.at + shift, "detail": f"again {n}"})
    if isinstance(item, AfterSalesRequest):
        return item.model_copy(update={"at": item.at + shift})
    raise TypeError(type(item).__name__)


def every_emission(items: list[Any]) -> list[list[Any]]:
    """Batches as a sink may meet them: the first emission, two later ones, the first again
    after them (a late redelivery), and one batch holding the first and the latest together."""
    second = [reemitted(i, 1) for i in items]
    latest = [reemitted(i, 2) for i in items]
    return [
        items,
        second,
        latest,
        items[: len(items) // 2],
        items[len(items) // 2 :],
        items + latest,
    ]


def latest_emissions(items: list[Any]) -> list[Any]:
    """What ``every_emission`` must read as: its latest emission of every fact, alone."""
    return [reemitted(i, 2) for i in items]


def _event(items: list[Any], external_id: str, seq: int) -> OrderEvent:
    return next(
        i
        for i in items
        if isinstance(i, OrderEvent) and i.external_id == external_id and i.seq == seq
    )


def redecided() -> tuple[list[Any], list[Any]]:
    """The scenario's first emissions, and three events emitted again under their ids with
    other content (later): S5's reservation split over two warehouses, S3 held for another
    reason, T2's update snapshot with two units of A instead of one (total 44.99)."""
    items = scenario()
    s5 = _event(items, "S5", 2)
    s3 = _event(items, "S3", 2)
    t2 = _event(items, "T2", 2)
    assert t2.order is not None
    line = t2.order.lines[0]
    more = line.model_copy(update={"quantity": 2, "paid_amount": Decimal("39.98")})
    again = [
        s5.model_copy(
            update={
                "at": s5.at + LATER,
                "warehouse": "W1+W2",
                "allocations": [
                    Allocation(sku="C", warehouse="W1", quantity=1),
                    Allocation(sku="C", warehouse="W2", quantity=2),
                ],
            }
        ),
        s3.model_copy(update={"at": s3.at + LATER, "reason": "unpaid"}),
        t2.model_copy(
            update={
                "at": t2.at + LATER,
                "order": t2.order.model_copy(update={"lines": [more], "total": Decimal("44.99")}),
            }
        ),
    ]
    assert all(e.kind in (EventKind.RESERVED, EventKind.HELD, EventKind.UPDATED) for e in again)
    return items, again


# What the report says after ``redecided``'s second emissions, where it differs from
# tests.analytics_scenario.EXPECTED (the rest is checked against a database holding the
# latest emissions only).
REDECIDED: dict[str, Any] = {
    "split_orders": 1,
    "held_by_reason": {"unpaid": 1},
    "reserved_by_sku": {"A": 3, "C": 3, "B": 1},
    "gmv_by_channel": {"taobao": "95.98"},
    "top_skus": [
        {"sku": "A", "units": 4, "gmv": {"CNY": "79.96"}},
        {"sku": "C", "units": 3, "gmv": {"USD": "0.9999"}},
        {"sku": "B", "units": 1, "gmv": {"CNY": "5.01"}},
    ],
}


def replace_first(items: list[Any], again: list[Any]) -> list[Any]:
    """``items`` with each fact of ``again`` in place of the first emission of its id."""
    ids = {e.event_id for e in again}
    return [i for i in items if getattr(i, "event_id", None) not in ids] + again


_AFTER_0006 = frozenset({"rev", "bundle", "bundle_line_id", "phone_hash", "phone_key"})  # 0006 on


def inserts_before_0006(items: list[Any]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The INSERTs a sink before migration 0006 made for ``items``: the same rows without
    ``rev`` (the tables had none; 0006 derives it from seq and time for such rows) nor the
    columns later migrations added (bundles, phone keys)."""
    out = []
    for table, rows in rows_for(items).items():
        if not rows:
            continue
        cols = COLUMNS[table]
        keep = [i for i, c in enumerate(cols) if c not in _AFTER_0006]
        names = ", ".join(cols[i] for i in keep)
        out.append(
            (f"INSERT INTO {table} ({names}) VALUES", [tuple(r[i] for i in keep) for r in rows])
        )
    return out
