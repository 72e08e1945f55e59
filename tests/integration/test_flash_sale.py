"""The flash sale: three worker processes, one hot sku with 1,000 units over two warehouses,
20,000 single-line orders for it from several channels at once, re-pushed duplicates and
cancellations mixed in. Exactly the available units end up reserved, everything else is held
or rejected, nothing is oversold, and `./oms verify` agrees."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from analytics.client import connect as ch_connect
from analytics.reports import build_report, processed_inputs
from ops import stack
from ops.kafka import Record, produce
from ops.loadgen import generate_burst
from ops.settings import Settings
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

    plan = generate_burst(ORDERS, run_id=f"flash-{sku}", catalogue=[(sku, Decimal("99.00"))],
                          malformed_rate=0.0, unpaid_rate=0.0, incomplete_rate=0.0,
                          flagged_rate=0.0, scalper_bursts=0)
    records: list[Record] = []
    sent_own: list[tuple[bytes | None, bytes]] = []  # own-channel orders already sent
    cancels = 0
    for n, m in enumerate(plan.messages):
        records.append((topics.raw_topic(m.channel).name(settings), m.key, m.value, m.headers))
        if m.channel == "own" and m.kind == "order":
            sent_own.append((m.key, m.value))
        if n % CANCEL_EVERY == 0 and n < len(plan.messages) * 0.8 and sent_own:
            key, value = sent_own.pop(0)
            records.append((topics.raw_topic("own").name(settings), key, cancellation(value), []))
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
    check = verify(connect(settings), keys, ch_connect(settings))
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
    units_reserved = sum(s.units for s in report.top_skus if s.sku == sku)
    assert units_reserved == 1000
