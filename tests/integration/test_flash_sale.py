"""The flash sale: three worker processes, one hot sku with 1,000 units over two warehouses,
20,000 single-line orders for it from several channels at once, re-pushed duplicates and
cancellations mixed in. Exactly the available units end up reserved, everything else is held
or rejected, nothing is oversold, and `./oms verify` agrees.

And the report is exact, order by order: the units it says the orders hold (each holding
order's current reservation, once) equal what Redis holds, and the orders it says hold the sku
are exactly those with an open reservation in Redis, each with the same allocation. This is
what failed as `assert 1001 == 1000` under load (issue 13, item 10): a cancel that lost its
compare-and-set to a merge window's release had already given the order's stock back, and was
then applied again as an intercept, which keeps an order holding what it no longer has. The
per-order comparison names such orders, with the facts and the ledger of each."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from analytics.client import QueryClient
from analytics.client import connect as ch_connect
from analytics.ledger import ClickHouseLedger
from analytics.reports import HOLDING_STATES, build_report, processed_inputs
from core.kafka import Record, produce
from core.settings import Settings
from ops import stack
from ops.loadgen import generate_burst
from order.allocation import parse_parts
from state.keys import Keys
from state.redis import connect
from state.stock import StockRow, load_stock, stock_levels
from state.verify import verify
from streams import topics

pytestmark = pytest.mark.integration

ORDERS = 20_000
CANCEL_EVERY = 40  # one own-channel cancellation per this many messages, early in the flood


def cancellation(value: bytes) -> bytes:
    """The own channel's later version of an order: cancelled by the buyer."""
    data = orjson.loads(value)
    data["channel_status"] = "cancelled"
    updated = datetime.fromisoformat(data["updated_at"].replace("Z", "+00:00"))
    data["updated_at"] = (updated + timedelta(minutes=1)).isoformat()
    return orjson.dumps(data)


Holdings = dict[str, dict[str, int]]  # order id -> warehouse -> units of the sku


def redis_holdings(settings: Settings, keys: Keys, sku: str) -> Holdings:
    """Open reservations of ``sku`` in Redis (``r:<order>`` fields; "-" is a released one)."""
    out: Holdings = {}
    for field, value in connect(settings).hscan_iter(keys.stock(sku), match="r:*"):
        parts = parse_parts(value)
        if parts:
            out[field.removeprefix("r:")] = {wh: qty for wh, qty in parts}
    return out


def report_holdings(client: QueryClient, sku: str, since: datetime) -> Holdings:
    """What ClickHouse says the orders in scope hold of ``sku`` now: the current reservation
    of every order whose latest state holds stock (the rows Q_RESERVED_BY_SKU sums)."""
    rows = client.execute(
        "SELECT order_id, reserved_sku, reserved_warehouse, reserved_qty FROM order_status "
        "WHERE state IN %(states)s AND first_at >= toDateTime(%(since)s) "
        "AND has(reserved_sku, %(sku)s)",
        {"states": HOLDING_STATES, "since": int(since.timestamp()), "sku": sku},
    )
    out: Holdings = {}
    for order_id, skus, warehouses, quantities in rows:
        held = out.setdefault(order_id, {})
        for s, wh, qty in zip(skus, warehouses, quantities, strict=True):
            if s == sku:
                held[wh] = held.get(wh, 0) + int(qty)
    return out


def explain(client: QueryClient, order_ids: list[str]) -> list[str]:
    """The events and stock movements of each order, for a failure message."""
    lines = []
    for oid in order_ids[:5]:
        events = client.execute(
            "SELECT seq, kind, to_state, actor, toString(at) FROM order_events_latest "
            "WHERE order_id = %(o)s ORDER BY seq",
            {"o": oid},
        )
        moves = client.execute(
            "SELECT any(kind), any(warehouse), any(reserved_delta), toString(any(at)) "
            "FROM stock_movements WHERE ref = %(o)s GROUP BY movement_id ORDER BY movement_id",
            {"o": oid},
        )
        lines.append(f"{oid}: events {events}; stock movements {moves}")
    return lines


@pytest.fixture(scope="module")
def three_workers(running_stack: Settings):  # type: ignore[no-untyped-def]
    stack.up(running_stack, workers=3)
    yield running_stack
    stack.up(running_stack, workers=running_stack.workers)


def test_flash_sale_reserves_exactly_the_stock(three_workers: Settings) -> None:
    settings = three_workers
    sku = f"SKU-FLASH-{uuid.uuid4().hex[:6].upper()}"
    keys = Keys(settings.redis_prefix)
    load_stock(connect(settings), keys, [StockRow(sku, "WH-SH", 600), StockRow(sku, "WH-BJ", 400)])

    plan = generate_burst(
        ORDERS,
        run_id=f"flash-{sku}",
        catalogue=[(sku, Decimal("99.00"))],
        malformed_rate=0.0,
        unpaid_rate=0.0,
        incomplete_rate=0.0,
        flagged_rate=0.0,
        scalper_bursts=0,
    )
    records: list[Record] = []
    sent_own: list[tuple[bytes | None, bytes]] = []  # own-channel orders already sent
    cancels = 0
    for n, m in enumerate(plan.messages):
        records.append(
            (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        )
        if m.channel == "own" and m.kind == "order":
            sent_own.append((m.key, m.value))
        if n % CANCEL_EVERY == 0 and n < len(plan.messages) * 0.8 and sent_own:
            key, value = sent_own.pop(0)
            records.append(
                (topics.raw_topic("own").name(settings.topic_prefix), key, cancellation(value), [])
            )
            cancels += 1
    assert len({m.channel for m in plan.messages}) >= 4 and plan.duplicates > 0 and cancels > 0

    since = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(produce(settings, records))
    client = ch_connect(settings)
    deadline = time.monotonic() + 600
    while processed_inputs(client, since) < len(records) and time.monotonic() < deadline:
        time.sleep(1)
    assert processed_inputs(client, since) == len(records), "not every input was processed"

    levels = {lv.warehouse: lv for lv in stock_levels(connect(settings), keys, sku)}
    assert levels["WH-SH"].reserved == 600 and levels["WH-BJ"].reserved == 400
    assert all(lv.available == 0 for lv in levels.values())
    check = verify(connect(settings), keys, ClickHouseLedger(ch_connect(settings)))
    assert check.ok, check.violations[:5]
    assert check.oversold_units == 0

    report = build_report(client, since=since)
    assert report.orders_in == plan.orders
    assert report.duplicates == plan.duplicates
    cancelled = report.orders_by_state.get("cancelled", 0)
    # A cancel that reached an order the WMS already had waits for the WMS to confirm the stop
    # (no WMS runs here): it is intercepting, and its stock stays reserved until then.
    stopping = report.orders_by_state.get("intercepting", 0)
    assert cancelled + stopping == cancels
    counted = report.accepted + report.held + report.rejected + cancelled
    assert counted == plan.orders, report.orders_by_state
    assert report.held + report.rejected > 0
    # Exact, order by order: ClickHouse's orders hold what Redis holds, no more, no less.
    redis_held = redis_holdings(settings, keys, sku)
    report_held = report_holdings(client, sku, since)
    differ = sorted(
        oid
        for oid in redis_held.keys() | report_held.keys()
        if redis_held.get(oid) != report_held.get(oid)
    )
    detail = [f"{oid}: report {report_held.get(oid)} redis {redis_held.get(oid)}" for oid in differ]
    assert not differ, (len(differ), detail[:10], explain(client, differ))
    assert sum(sum(h.values()) for h in redis_held.values()) == 1000
    assert report.reserved_by_sku[sku] == 1000
    # single-line orders, no gifts of this sku: the accepted orders' units are those reserved
    units_sold = sum(s.units for s in report.top_skus if s.sku == sku)
    assert units_sold == 1000
