"""The ledger shipper timer: stock movements from the per-sku Redis streams into ClickHouse.

Every worker registers the timer; the ``ledger-shipper`` lock makes one of them ship at a time
(state/ledger.py). A worker that dies holding it delays shipping by at most the lock's TTL.
Not an agent on a topic: the movements are written by Redis scripts, not produced to Kafka,
so they are read where they are (and a Kafka hop would cost a produce per movement).
"""

from __future__ import annotations

from collections import Counter

import faust

from agents.guard import guarded
from analytics.ledger import LedgerShipper
from analytics.sink import FactSink
from core.settings import Settings
from state.keys import Keys
from state.redis import connect_async

INTERVAL_S = 1.0


def register_ledger(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    keys = Keys(settings.redis_prefix)
    shipper = LedgerShipper(connect_async(settings), keys, FactSink(settings))

    @app.timer(INTERVAL_S, name="ledger_shipper")
    async def ship_ledger() -> None:
        # FactSink.write_stock_movements retries ClickHouse until it lands; anything else (Redis
        # down, a bug) advanced nothing, and the next tick tries again.
        result = await guarded(counters, "ledger_errors", "ledger shipping", shipper.ship)
        if result is None:
            return
        counters["ledger_shipped"] += result.entries
        counters["ledger_invalid"] += result.invalid
        if result.lost:
            counters["ledger_lease_lost"] += 1
