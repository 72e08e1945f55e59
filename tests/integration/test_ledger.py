"""Ledger shipping (Redis streams -> ClickHouse ``stock_movements``) and verify across both.

Real Redis and ClickHouse 18.16 from the test stack; every test has its own Redis prefix and
its own ClickHouse database, so sku names and entry ids never meet another test's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from clickhouse_driver import Client

from analytics.client import connect as ch_connect
from analytics.facts import StockMovement
from analytics.ledger import ClickHouseLedger, LedgerShipper, MovementWriter
from analytics.reports import build_report
from analytics.schema import ensure_schema
from analytics.sink import FactSink
from core.settings import Settings
from order.allocation import ShortagePolicy
from order.reservation import ReserveRequest
from state import ledger as ledger_module
from state import verify as verify_module
from state.keys import Keys
from state.ledger import FENCE_FIELD, entry_time, format_id, movement_id, parse_id
from state.lock import LEDGER_SHIPPER, AsyncDistributedLock, DistributedLock
from state.redis import connect, connect_async, lua_source
from state.reservations import StockEngine
from state.stock import StockChange, StockOp, apply_changes, stock_levels
from state.verify import verify

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- fixtures


@dataclass
class Env:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    aredis: aioredis.Redis
    ch: Client
    sink: FactSink

    def shipper(self, sink: MovementWriter | None = None, **kw: Any) -> LedgerShipper:
        return LedgerShipper(self.aredis, self.keys, sink or self.sink, **kw)

    def engine(self) -> StockEngine:
        return StockEngine(self.aredis, self.keys)

    def xlen(self, sku: str) -> int:
        return int(self.redis.xlen(self.keys.ledger(sku)))

    def distinct_movements(self) -> int:
        return int(self.ch.execute("SELECT uniqExact(movement_id) FROM stock_movements")[0][0])


@pytest.fixture
async def env(redis_settings: Settings, clickhouse_settings: Settings) -> AsyncIterator[Env]:
    settings = redis_settings.model_copy(
        update={"clickhouse_database": f"oms_test_ledger_{uuid.uuid4().hex[:8]}"}
    )
    ensure_schema(settings)
    ch = ch_connect(settings)
    aredis = connect_async(settings)
    sink = FactSink(settings, setup=None, max_attempts=3, base_delay_s=0.01)
    yield Env(settings, Keys(settings.redis_prefix), connect(settings), aredis, ch, sink)
    await sink.close()
    await aredis.aclose()
    ch.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    ch.disconnect()


def load(env: Env, rows: Iterable[tuple[str, str, int]], op: str = "") -> None:
    changes = [StockChange(sku, wh, "on_hand", "set", qty) for sku, wh, qty in rows]
    apply_changes(env.redis, env.keys, StockOp.LOAD, op or uuid.uuid4().hex, changes)


def adjust(env: Env, sku: str, wh: str, delta: int) -> None:
    change = StockChange(sku, wh, "on_hand", "add", delta)
    apply_changes(env.redis, env.keys, StockOp.ADJUST, uuid.uuid4().hex, [change])


async def reserve(env: Env, order: str, sku: str, qty: int) -> None:
    request = ReserveRequest(order, {sku: qty}, ["W1", "W2"], ShortagePolicy.SPLIT)
    (result,) = await env.engine().reserve_many([request])
    assert result.active, result


async def busy_day(env: Env) -> int:
    """Load, adjust, reserve, commit, release, settle and receive on two skus; returns the
    number of ledger entries written."""
    load(env, [("SKU-A", "W1", 10), ("SKU-A", "W2", 5), ("SKU-B", "W1", 3)])
    apply_changes(
        env.redis,
        env.keys,
        StockOp.INBOUND,
        uuid.uuid4().hex,
        [StockChange("SKU-B", "W1", "inbound", "add", 20)],
    )
    adjust(env, "SKU-A", "W1", 2)
    for i in range(5):
        await reserve(env, f"O{i}", "SKU-A", 2)
    await reserve(env, "O9", "SKU-B", 1)
    engine = env.engine()
    await engine.commit("O0", ["SKU-A"])
    await engine.commit("O9", ["SKU-B"])
    await engine.release("O1", ["SKU-A"])
    await engine.settle("O0", ["SKU-A"])  # delivered
    await engine.settle("O9", ["SKU-B"], returned=True)  # came back, sellable
    return env.xlen("SKU-A") + env.xlen("SKU-B")


def figures(env: Env) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    return {
        (lv.sku, lv.warehouse): (lv.on_hand, lv.reserved, lv.inbound, lv.sales_in_transit)
        for sku in ("SKU-A", "SKU-B")
        for lv in stock_levels(env.redis, env.keys, sku)
    }


def ch_figures(env: Env) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    rows = env.ch.execute(
        """
        SELECT s, w, sum(o), sum(r), sum(i), sum(t) FROM
        (
            SELECT movement_id, any(sku) AS s, any(warehouse) AS w, any(on_hand_delta) AS o,
                   any(reserved_delta) AS r, any(inbound_delta) AS i, any(sit_delta) AS t
            FROM stock_movements GROUP BY movement_id
        )
        GROUP BY s, w
        """
    )
    return {(s, w): (int(o), int(r), int(i), int(t)) for s, w, o, r, i, t in rows}


class CrashAfterInsert:
    """Writes, then dies before the shipper can move its cursor (once)."""

    def __init__(self, sink: FactSink) -> None:
        self.sink = sink
        self.crashed = False

    async def write_stock_movements(self, movements: Iterable[StockMovement]) -> None:
        await self.sink.write_stock_movements(movements)
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("worker killed after the INSERT")


class Watched:
    """A slow sink that records how many shippers are inside it at once."""

    def __init__(self, sink: FactSink, delay: float = 0.15) -> None:
        self.sink, self.delay = sink, delay
        self.inside = 0
        self.most = 0
        self.calls = 0

    async def write_stock_movements(self, movements: Iterable[StockMovement]) -> None:
        self.inside += 1
        self.calls += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(self.delay)
            await self.sink.write_stock_movements(movements)
        finally:
            self.inside -= 1


# ---------------------------------------------------------------- pure helpers


def test_stream_id_helpers() -> None:
    assert parse_id("1700000000123-7") == (1700000000123, 7)
    assert format_id((1, 2)) == "1-2"
    assert parse_id("1-10") > parse_id("1-9")  # numeric, not text, order
    assert movement_id("a/b", "1-0") == "a/b/1-0"
    assert entry_time("1700000000123-0").isoformat() == "2023-11-14T22:13:20.123000+00:00"


# ---------------------------------------------------------------- shipping


async def test_movements_land_exactly_once_and_streams_are_trimmed(env: Env) -> None:
    written = await busy_day(env)
    shipper = env.shipper()
    result = await shipper.ship()
    assert result.acquired and result.entries == written and not result.pending
    assert env.distinct_movements() == written
    assert ch_figures(env) == figures(env)
    kinds = dict(env.ch.execute("SELECT kind, count() FROM stock_movements GROUP BY kind"))
    assert {"load", "adjust", "inbound", "reserve", "commit", "release", "delivered"} <= set(kinds)
    assert env.xlen("SKU-A") == 1 and env.xlen("SKU-B") == 1  # the cursor entry stays

    again = await shipper.ship()  # nothing new: nothing shipped
    assert again.acquired and again.entries == 0

    env.redis.hdel(env.keys.ledger_cursor, "SKU-A")  # lost cursor: ships what is left again
    assert (await shipper.ship()).entries == 1
    assert env.distinct_movements() == written  # same movement_id: collapsed, counted once
    assert ch_figures(env) == figures(env)

    # a shipped row carries the entry's time and reference
    ref, at = env.ch.execute(
        "SELECT ref, at FROM stock_movements WHERE kind = 'commit' AND sku = 'SKU-B'"
    )[0]
    assert ref == "O9" and abs(at.timestamp() - time.time()) < 120


async def test_crash_between_insert_and_cursor_ships_again_harmlessly(env: Env) -> None:
    written = await busy_day(env)
    crashing = CrashAfterInsert(env.sink)
    with pytest.raises(RuntimeError, match="killed"):
        await env.shipper(crashing).ship()
    assert env.redis.hgetall(env.keys.ledger_cursor) == {}  # the cursor never moved
    assert env.xlen("SKU-A") + env.xlen("SKU-B") == written  # nothing trimmed
    assert DistributedLock(env.redis, env.keys, LEDGER_SHIPPER).acquire(wait_s=0) is not None

    env.redis.delete(f"{env.keys.prefix}:lock:{{{LEDGER_SHIPPER}}}")
    result = await env.shipper(crashing).ship()
    assert result.entries == written
    raw = int(env.ch.execute("SELECT count() FROM stock_movements")[0][0])
    assert raw >= written  # the first insert is there twice until a merge
    assert env.distinct_movements() == written
    assert ch_figures(env) == figures(env)
    assert verify(env.redis, env.keys, ClickHouseLedger(env.ch)).ok
    report = build_report(env.ch)
    assert report.stock_checked and report.oversold_units == 0


async def test_two_shippers_never_ship_at_once(env: Env) -> None:
    other = connect_async(env.settings)
    try:
        watched = Watched(env.sink)
        one = env.shipper(watched, batch_entries=3, per_sku=3)
        two = LedgerShipper(other, env.keys, watched, batch_entries=3, per_sku=3)
        written = 0
        for round_ in range(4):
            load(env, [(f"SKU-{round_}", "W1", 5), ("SKU-A", "W1", round_ + 1)])
            for i in range(3):
                await reserve(env, f"R{round_}-{i}", f"SKU-{round_}", 1)
            written += 5
            results = await asyncio.gather(one.ship(), two.ship(), one.ship(), two.ship())
            assert sum(r.acquired for r in results) >= 1
            busy = [r for r in results if r.acquired and r.entries]
            assert len(busy) >= 1
        while (await one.ship()).entries:  # drain what a busy round left
            pass
        assert watched.most == 1 and watched.calls >= 4
        assert env.distinct_movements() == written
        assert verify(env.redis, env.keys, ClickHouseLedger(env.ch)).ok
    finally:
        await other.aclose()


async def test_another_worker_takes_over_when_the_holder_dies(env: Env) -> None:
    await busy_day(env)
    dead = AsyncDistributedLock(env.aredis, env.keys, LEDGER_SHIPPER, ttl_ms=300)
    dead_lease = await dead.acquire(wait_s=0)  # a shipper that dies holding the lock
    assert dead_lease is not None
    survivor = env.shipper()
    assert not (await survivor.ship()).acquired
    await asyncio.sleep(0.35)
    result = await survivor.ship()
    assert result.acquired and result.entries > 0 and result.fence > dead_lease.fence

    # The dead shipper comes back (long GC pause) and tries to move a cursor: refused.
    advance = env.aredis.register_script(lua_source("ledger_advance"))
    cursor = env.redis.hget(env.keys.ledger_cursor, "SKU-A")
    status, newest = await advance(
        keys=[env.keys.ledger_cursor], args=[dead_lease.fence, "SKU-A", "9999999999999-0"]
    )
    assert (status, int(newest)) == ("stale_fence", result.fence)
    assert env.redis.hget(env.keys.ledger_cursor, "SKU-A") == cursor
    assert int(env.redis.hget(env.keys.ledger_cursor, FENCE_FIELD) or 0) == result.fence

    # and a current holder can never move a cursor backwards
    status, advanced = await advance(
        keys=[env.keys.ledger_cursor], args=[result.fence, "SKU-A", "1-0"]
    )
    assert (status, int(advanced)) == ("ok", 0)
    assert env.redis.hget(env.keys.ledger_cursor, "SKU-A") == cursor


async def test_a_hot_sku_does_not_starve_the_others(env: Env) -> None:
    load(env, [("HOT", "W1", 500), ("COLD", "W1", 5)])
    for i in range(40):
        await reserve(env, f"H{i}", "HOT", 1)
    shipper = env.shipper(batch_entries=10, per_sku=10)
    first = await shipper.ship(max_batches=1)
    assert first.pending and first.entries == 10
    assert env.redis.hget(env.keys.ledger_cursor, "COLD") is not None  # got its turn
    while (await shipper.ship()).entries:
        pass
    assert env.distinct_movements() == 42
    assert env.xlen("HOT") == 1


# ---------------------------------------------------------------- verify across both parts


async def test_verify_after_shipping_and_trimming(env: Env) -> None:
    written = await busy_day(env)
    await env.shipper().ship()
    await reserve(env, "LATE", "SKU-A", 1)  # one movement only in the stream

    report = verify(env.redis, env.keys, ClickHouseLedger(env.ch))
    assert report.ok, report.violations
    assert report.ledger_entries == written + 1 and report.ledger_shipped == written
    assert report.ledger_locked is True
    assert report.to_dict()["oversold_units"] == 0
    assert DistributedLock(env.redis, env.keys, LEDGER_SHIPPER).acquire(wait_s=0) is not None

    # Without ClickHouse the shipped part is missing: said so, never "ok" on partial data.
    partial = verify(env.redis, env.keys)
    assert not partial.ok
    assert {v["kind"] for v in partial.violations} == {"ledger_trimmed"}
    assert {v["sku"] for v in partial.violations} == {"SKU-A", "SKU-B"}


async def test_verify_reads_a_long_unshipped_ledger_in_pages(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger not shipped for a while is read a page at a time (one reply of a million-order
    flood's movements outlasted the client's read timeout), and every entry is counted once."""
    monkeypatch.setattr(ledger_module, "PAGE", 3)
    written = await busy_day(env)
    pages = Counter[str]()
    real = ledger_module._read_rest

    def counting(*args: Any) -> None:
        pages["rest"] += 1
        real(*args)

    monkeypatch.setattr(ledger_module, "_read_rest", counting)
    report = verify(env.redis, env.keys, ClickHouseLedger(env.ch))
    assert report.ok, report.violations
    assert report.ledger_entries == written > 2 * 3
    [sku_a] = ledger_module.read_ledgers(env.redis, env.keys, ["SKU-A"])
    assert len(sku_a.entries) == len(env.redis.xrange(env.keys.ledger("SKU-A")))
    assert pages["rest"] >= 1


async def test_verify_catches_a_tampered_figure(env: Env) -> None:
    await busy_day(env)
    await env.shipper().ship()
    env.redis.hincrby(env.keys.stock("SKU-A"), "on_hand:W2", 3)  # no movement for it
    report = verify(env.redis, env.keys, ClickHouseLedger(env.ch))
    assert not report.ok
    (bad,) = report.violations
    assert bad["kind"] == "ledger_mismatch" and bad["sku"] == "SKU-A"
    assert (bad["warehouse"], bad["figure"], bad["value"] - bad["ledger"]) == ("W2", "on_hand", 3)

    # and a movement lost from ClickHouse (trimmed from Redis already) is caught as well
    env.redis.hincrby(env.keys.stock("SKU-A"), "on_hand:W2", -3)
    assert verify(env.redis, env.keys, ClickHouseLedger(env.ch)).ok
    env.ch.execute("ALTER TABLE stock_movements DELETE WHERE kind = 'adjust'")
    for _ in range(100):  # mutations are asynchronous on 18.16
        if not env.ch.execute("SELECT count() FROM stock_movements WHERE kind = 'adjust'")[0][0]:
            break
        await asyncio.sleep(0.05)
    lost = verify(env.redis, env.keys, ClickHouseLedger(env.ch))
    assert {(v["kind"], v["sku"], v["figure"]) for v in lost.violations} == {
        ("ledger_mismatch", "SKU-A", "on_hand")
    }


async def test_verify_is_exact_while_the_shipper_runs(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lock for verify at all (as if the shipper never let go): reserving, committing and
    shipping in small batches run all the time, and every verify still adds up exactly."""

    class NoLock:
        lease = None

        def __init__(self, *_: Any, **__: Any) -> None: ...

        def acquire(self, *_: Any, **__: Any) -> None:
            return None

    monkeypatch.setattr(verify_module, "DistributedLock", NoLock)
    monkeypatch.setattr(ledger_module, "PAGE", 2)  # streams read in pages while trimmed
    load(env, [(f"S{i}", wh, 400) for i in range(4) for wh in ("W1", "W2")])
    shipper = env.shipper(batch_entries=7, per_sku=3)
    stop = asyncio.Event()
    seen: Counter[str] = Counter()

    async def orders() -> None:
        engine = env.engine()
        n = 0
        while not stop.is_set():
            n += 1
            await reserve(env, f"X{n}", f"S{n % 4}", 1)
            if n % 3 == 0:
                await engine.commit(f"X{n - 1}", [f"S{(n - 1) % 4}"])
            await asyncio.sleep(0)

    async def shipping() -> None:
        while not stop.is_set():
            seen["shipped"] += (await shipper.ship(max_batches=1)).entries
            await asyncio.sleep(0.002)

    async def verifying() -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            report = await asyncio.to_thread(
                verify, connect(env.settings), env.keys, ClickHouseLedger(env.ch)
            )
            assert report.ok, report.violations
            assert report.ledger_locked is False
            seen["verified"] += 1
            seen["mixed"] += 0 < report.ledger_shipped < report.ledger_entries
        stop.set()

    await asyncio.gather(orders(), shipping(), verifying())
    assert seen["verified"] >= 3 and seen["shipped"] > 0 and seen["mixed"] > 0
    while (await shipper.ship()).entries:
        pass
    assert verify(env.redis, env.keys, ClickHouseLedger(env.ch)).ok
