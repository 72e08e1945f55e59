"""Reservation throughput of the stock engine against a naive baseline, both in one run.

Why a baseline: a rate alone says little on a shared 2-core machine; the same orders, the same
concurrency and the same Redis measured both ways show what the Lua-per-sku design buys
(docs/decisions/0003-lua-for-reservations.md). The baseline is what one writes without it:
a redis-py ``Lock`` per sku around read (HGET on hand / reserved), check and write (HINCRBY).

Workload: single-line orders over a catalogue where a few hot skus take a large share of the
orders and sell out partway through, so both sides see contention and refusals. A rate counts
every order decided (reserved or refused for stock) per second of wall time.

Never a timed assertion: the figures are returned, the caller prints them. Both sides must end
with nothing oversold (the engine side also passes ``verify``), else ``BenchError``.
Each run uses its own Redis key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from core.settings import Settings
from order.allocation import ShortagePolicy
from order.reservation import ReserveRequest, ReserveStatus
from state.keys import Keys
from state.redis import connect, connect_async
from state.reservations import StockEngine
from state.stock import StockRow, all_levels, load_stock
from state.verify import verify

WAREHOUSES = ("WH-A", "WH-B", "WH-C")
CATALOGUE = 500  # skus
HOT_SKUS = 5
HOT_SHARE = 0.4  # of the orders
HOT_STOCK_SHARE = 0.6  # hot stock covers this share of hot demand: hot skus sell out
SEED = 20261111


class BenchError(RuntimeError):
    """A side oversold (or the engine failed verify): the figures would be meaningless."""


@dataclass(frozen=True)
class BenchOrder:
    order_id: str
    sku: str
    qty: int
    warehouses: tuple[str, ...]  # routing priority


def make_workload(orders: int, seed: int = SEED) -> tuple[list[BenchOrder], list[StockRow]]:
    """Deterministic orders and the stock to load for them (same for both sides)."""
    rng = random.Random(seed)
    skus = [f"BENCH-{i:04d}" for i in range(CATALOGUE)]
    hot, cold = skus[:HOT_SKUS], skus[HOT_SKUS:]
    out: list[BenchOrder] = []
    demand: Counter[str] = Counter()
    for i in range(orders):
        sku = rng.choice(hot) if rng.random() < HOT_SHARE else rng.choice(cold)
        qty = rng.choice((1, 1, 1, 2, 3))
        whs = list(WAREHOUSES)
        rng.shuffle(whs)
        out.append(BenchOrder(f"bench-{i}", sku, qty, tuple(whs)))
        demand[sku] += qty
    rows = []
    for sku in skus:
        if sku in hot:  # sells out: the last orders race for the last units
            per_wh = max(1, int(demand[sku] * HOT_STOCK_SHARE / len(WAREHOUSES)))
        else:  # plenty: any warehouse could serve all of it
            per_wh = max(3, demand[sku])
        rows += [StockRow(sku, wh, per_wh) for wh in WAREHOUSES]
    return out, rows


def bench_reservations(
    settings: Settings, *, orders: int = 20000, concurrency: int = 8, batch: int = 200
) -> dict[str, object]:
    """Reserve ``orders`` single-line orders through StockEngine.reserve_many (``batch`` per
    pipeline, ``concurrency`` asyncio tasks with a connection each), then the same orders
    through the lock-per-sku baseline with as many tasks; returns the figures.

    Synchronous (runs its own event loop): call it from a thread with no running loop.
    """
    if orders < 1 or concurrency < 1 or batch < 1:
        raise ValueError("orders, concurrency and batch must be positive")
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    bench = settings.model_copy(update={"redis_prefix": prefix})
    client = connect(bench)
    try:
        return asyncio.run(_bench(bench, client, orders, concurrency, batch))
    finally:
        drop_keys(client, prefix)
        client.close()


async def _bench(
    settings: Settings, client: redis.Redis, orders: int, concurrency: int, batch: int
) -> dict[str, object]:
    workload, rows = make_workload(orders)
    engine_keys = Keys(f"{settings.redis_prefix}:engine")
    naive_keys = Keys(f"{settings.redis_prefix}:naive")
    load_stock(client, engine_keys, rows, op_id="bench-load")
    load_stock(client, naive_keys, rows, op_id="bench-load")

    engine_s, engine_status = await _run_engine(settings, engine_keys, workload, concurrency, batch)
    naive_s, naive_status = await _run_baseline(settings, naive_keys, workload, concurrency)

    report = verify(client, engine_keys)
    engine_oversold = report.oversold_units
    naive_oversold = sum(max(0, lv.reserved - lv.on_hand) for lv in all_levels(client, naive_keys))
    engine_per_s = len(workload) / engine_s
    naive_per_s = len(workload) / naive_s
    result: dict[str, object] = {
        "orders": len(workload),
        "concurrency": concurrency,
        "batch": batch,
        "skus": CATALOGUE,
        "hot_skus": HOT_SKUS,
        "warehouses": len(WAREHOUSES),
        "engine_seconds": round(engine_s, 3),
        "engine_per_s": round(engine_per_s, 1),
        "engine_reserved": engine_status.reserved_count,
        "engine_shortage": engine_status.shortage_count,
        "engine_false_shortage": _false_shortages(client, engine_keys, workload, engine_status),
        "engine_oversold": engine_oversold,
        "engine_verify_ok": report.ok,
        "baseline_seconds": round(naive_s, 3),
        "baseline_per_s": round(naive_per_s, 1),
        "baseline_reserved": naive_status.reserved_count,
        "baseline_shortage": naive_status.shortage_count,
        "baseline_false_shortage": _false_shortages(client, naive_keys, workload, naive_status),
        "baseline_oversold": naive_oversold,
        "ratio": round(engine_per_s / naive_per_s, 2),
        "redis_version": str(client.info("server").get("redis_version", "?")),
    }
    if engine_oversold or naive_oversold or not report.ok:
        raise BenchError(f"oversold or inconsistent stock: {result} {report.violations[:5]}")
    return result


@dataclass(frozen=True)
class Outcome:
    """Per-order decisions of one side: order id -> reserved (True) or refused for stock."""

    reserved: dict[str, bool]

    @property
    def reserved_count(self) -> int:
        return sum(self.reserved.values())

    @property
    def shortage_count(self) -> int:
        return len(self.reserved) - self.reserved_count


async def _run_engine(
    settings: Settings,
    keys: Keys,
    workload: list[BenchOrder],
    concurrency: int,
    batch: int,
) -> tuple[float, Outcome]:
    requests = [
        ReserveRequest(o.order_id, {o.sku: o.qty}, o.warehouses, ShortagePolicy.HOLD)
        for o in workload
    ]
    batches: Iterator[list[ReserveRequest]] = (
        requests[i : i + batch] for i in range(0, len(requests), batch)
    )
    decided: dict[str, bool] = {}

    async def worker(engine: StockEngine) -> None:
        for chunk in batches:  # shared iterator: each batch is taken by exactly one task
            for res in await engine.reserve_many(chunk):
                decided[res.order_id] = res.status is ReserveStatus.RESERVED

    clients = [_async_client(settings) for _ in range(concurrency)]
    try:
        engines = [StockEngine(c, keys) for c in clients]
        await asyncio.gather(*(c.ping() for c in clients))  # connect outside the clock
        start = time.perf_counter()
        await asyncio.gather(*(worker(e) for e in engines))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return elapsed, Outcome(decided)


async def _run_baseline(
    settings: Settings, keys: Keys, workload: list[BenchOrder], concurrency: int
) -> tuple[float, Outcome]:
    """Per order: lock the sku, HGET on hand and reserved per warehouse in priority order,
    HINCRBY reserved (and record the order) where it fits, unlock."""
    pending = iter(workload)
    decided: dict[str, bool] = {}

    async def worker(client: aioredis.Redis) -> None:
        for order in pending:
            stock = keys.stock(order.sku)
            # sleep: redis-py polls for a held lock; its 0.1 s default would only slow the
            # baseline down further, so it gets a fair 1 ms.
            lock = client.lock(
                f"{keys.prefix}:lock:{{{order.sku}}}", timeout=30, sleep=0.001, blocking_timeout=60
            )
            async with lock:
                decided[order.order_id] = False
                for wh in order.warehouses:
                    on_hand = int(await client.hget(stock, f"on_hand:{wh}") or 0)
                    reserved = int(await client.hget(stock, f"reserved:{wh}") or 0)
                    if on_hand - reserved >= order.qty:
                        pipe = client.pipeline(transaction=True)
                        pipe.hincrby(stock, f"reserved:{wh}", order.qty)
                        pipe.hset(stock, f"r:{order.order_id}", f"{wh}={order.qty}")
                        await pipe.execute()
                        decided[order.order_id] = True
                        break

    clients = [_async_client(settings) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.ping() for c in clients))
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return elapsed, Outcome(decided)


def _false_shortages(
    client: redis.Redis, keys: Keys, workload: list[BenchOrder], outcome: Outcome
) -> int:
    """Refused orders that some candidate warehouse could still serve at the end. Stock only
    shrinks during the run, so each one was refused although its units were there (a lost
    sale, not an oversell)."""
    left = {(lv.sku, lv.warehouse): lv.available for lv in all_levels(client, keys)}
    return sum(
        1
        for o in workload
        if not outcome.reserved.get(o.order_id, False)
        and any(left.get((o.sku, wh), 0) >= o.qty for wh in o.warehouses)
    )


def _async_client(settings: Settings) -> aioredis.Redis:
    return connect_async(settings)  # with the configured Redis user, password and TLS


def drop_keys(client: redis.Redis, prefix: str) -> int:
    """SCAN + UNLINK everything under the bench's own prefix; returns how many keys."""
    dropped = 0
    batch: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            dropped += client.unlink(*batch)  # type: ignore[operator]
            batch.clear()
    if batch:
        dropped += client.unlink(*batch)  # type: ignore[operator]
    return dropped
