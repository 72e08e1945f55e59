"""A full WMS count applied under the warehouse lock (state/snapshot.py): shipments made while
the count was in flight are kept, reservations are untouched, a short count is a conflict
(never an oversell), and a writer whose lease lapsed is refused by its fencing token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from clickhouse_driver import Client

from analytics.client import connect as ch_connect
from analytics.ledger import ClickHouseLedger, LedgerShipper
from analytics.schema import ensure_schema
from analytics.sink import FactSink
from core.settings import Settings
from order.allocation import ShortagePolicy
from order.reservation import ReserveRequest
from state.keys import Keys
from state.lock import DistributedLock, LockTimeout, stock_lock_name
from state.redis import connect, connect_async
from state.reservations import StockEngine
from state.snapshot import (
    SnapshotError,
    SnapshotRow,
    StaleFence,
    apply_snapshot,
    apply_snapshot_fenced,
    parse_snapshot_file,
)
from state.stock import StockChange, StockOp, apply_changes, stock_levels
from state.verify import verify

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(redis_settings: Settings) -> Keys:
    return Keys(redis_settings.redis_prefix)


@pytest.fixture
def client(redis_settings: Settings) -> Iterator[redis.Redis]:
    c = connect(redis_settings)
    yield c
    c.close()


@pytest.fixture
def ch_settings(redis_settings: Settings, clickhouse_settings: Settings) -> Iterator[Settings]:
    settings = redis_settings.model_copy(
        update={"clickhouse_database": f"oms_test_snapshot_{uuid.uuid4().hex[:8]}"}
    )
    ensure_schema(settings)
    yield settings
    admin = ch_connect(settings, database="default")
    admin.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    admin.disconnect()


@pytest.fixture
def ch(ch_settings: Settings) -> Iterator[Client]:
    c = ch_connect(ch_settings)
    yield c
    c.disconnect()


def redis_now(client: redis.Redis) -> datetime:
    """The WMS counts 'now' by the clock that stamps ledger entries (Redis's)."""
    seconds, micros = client.time()
    return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)


def after_a_tick() -> None:
    time.sleep(0.005)  # ledger ids have millisecond resolution


def load(client: redis.Redis, keys: Keys, rows: list[tuple[str, str, int]]) -> None:
    changes = [StockChange(s, w, "on_hand", "set", q) for s, w, q in rows]
    apply_changes(client, keys, StockOp.LOAD, uuid.uuid4().hex, changes)


async def reserve(settings: Settings, keys: Keys, order: str, sku: str, qty: int) -> StockEngine:
    engine = StockEngine(connect_async(settings), keys)
    (res,) = await engine.reserve_many(
        [ReserveRequest(order, {sku: qty}, ["W1"], ShortagePolicy.REJECT)]
    )
    assert res.active
    return engine


def level(client: redis.Redis, keys: Keys, sku: str, wh: str = "W1") -> tuple[int, int, int]:
    lv = next(lv for lv in stock_levels(client, keys, sku) if lv.warehouse == wh)
    return lv.on_hand, lv.reserved, lv.sales_in_transit


async def test_shipment_in_flight_is_kept_and_reservations_untouched(
    client: redis.Redis, keys: Keys, redis_settings: Settings
) -> None:
    load(client, keys, [("SKU1", "W1", 10), ("SKU2", "W1", 4)])
    await reserve(redis_settings, keys, "O1", "SKU1", 2)
    after_a_tick()
    as_of = redis_now(client)  # the WMS counts 10 (O1's units are still on the shelf)
    after_a_tick()
    engine = await reserve(redis_settings, keys, "O2", "SKU1", 3)  # reserved while in flight
    await engine.commit("O1", ["SKU1"])  # O1 ships while the count is in flight
    assert level(client, keys, "SKU1") == (8, 3, 2)

    result = apply_snapshot(
        client, keys, "W1", [SnapshotRow("SKU1", 10), SnapshotRow("SKU2", 5)], as_of
    )
    assert result.fence >= 1 and not result.conflicts
    lines = {ln.sku: ln for ln in result.lines}
    assert (lines["SKU1"].status, lines["SKU1"].moved_after) == ("unchanged", -2)
    assert level(client, keys, "SKU1") == (8, 3, 2)  # 10 counted - 2 shipped after; O2 kept
    assert (lines["SKU2"].status, lines["SKU2"].before, lines["SKU2"].on_hand) == (
        "applied",
        4,
        5,
    )
    assert level(client, keys, "SKU2") == (5, 0, 0)

    again = apply_snapshot(
        client, keys, "W1", [SnapshotRow("SKU1", 10), SnapshotRow("SKU2", 5)], as_of
    )
    assert [ln.status for ln in again.lines] == ["unchanged", "duplicate"]  # same file: no-op
    assert verify(client, keys).ok


async def test_count_after_shipping_to_clickhouse_needs_clickhouse(
    client: redis.Redis, keys: Keys, ch_settings: Settings, ch: Client
) -> None:
    load(client, keys, [("SKU1", "W1", 10)])
    as_of = redis_now(client)
    after_a_tick()
    engine = await reserve(ch_settings, keys, "O1", "SKU1", 4)
    await engine.commit("O1", ["SKU1"])
    await engine.settle("O1", ["SKU1"], returned=True)  # 4 back on the shelf after as_of
    await reserve(ch_settings, keys, "O2", "SKU1", 1)
    await engine.commit("O2", ["SKU1"])  # 1 gone
    sink = FactSink(ch_settings, setup=None)
    await LedgerShipper(connect_async(ch_settings), keys, sink).ship()
    await sink.close()
    assert client.xlen(keys.ledger("SKU1")) == 1  # the movements after as_of are trimmed

    rows = [SnapshotRow("SKU1", 12)]  # the WMS found 2 more than we thought at as_of
    with pytest.raises(SnapshotError, match="ClickHouse"):
        apply_snapshot(client, keys, "W1", rows, as_of)
    assert level(client, keys, "SKU1") == (9, 0, 1)  # nothing written (O2 in transit)

    result = apply_snapshot(client, keys, "W1", rows, as_of, archive=ClickHouseLedger(ch))
    (line,) = result.lines
    assert (line.moved_after, line.before, line.on_hand) == (-4 + 4 - 1, 9, 11)
    assert level(client, keys, "SKU1") == (11, 0, 1)
    assert verify(client, keys, ClickHouseLedger(ch)).ok


async def test_short_count_is_a_conflict_never_an_oversell(
    client: redis.Redis, keys: Keys, redis_settings: Settings
) -> None:
    load(client, keys, [("SKU1", "W1", 10), ("SKU9", "W1", 3)])
    await reserve(redis_settings, keys, "O1", "SKU1", 6)
    as_of = redis_now(client)
    result = apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 4)], as_of)
    (conflict,) = result.conflicts
    assert (conflict.sku, conflict.shortfall, conflict.on_hand) == ("SKU1", 2, 6)
    assert level(client, keys, "SKU1") == (6, 6, 0)  # available 0, O1 still reserved
    assert level(client, keys, "SKU9") == (3, 0, 0)  # not in the file: left alone
    assert result.to_dict()["shortfall_units"] == 2
    report = verify(client, keys)
    assert report.ok and report.oversold_units == 0

    zeroed = apply_snapshot(
        client, keys, "W1", [SnapshotRow("SKU1", 6)], redis_now(client), zero_missing=True
    )
    assert {ln.sku: ln.status for ln in zeroed.lines} == {"SKU1": "unchanged", "SKU9": "applied"}
    assert level(client, keys, "SKU9") == (0, 0, 0)


async def test_an_older_count_does_not_overwrite_a_newer_one(
    client: redis.Redis, keys: Keys
) -> None:
    load(client, keys, [("SKU1", "W1", 10)])
    old = redis_now(client)
    after_a_tick()
    apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 7)], redis_now(client))
    late = apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 30)], old)
    assert [ln.status for ln in late.lines] == ["superseded"]
    assert level(client, keys, "SKU1") == (7, 0, 0)


def test_fence_refuses_an_older_writer(
    client: redis.Redis, keys: Keys, redis_settings: Settings
) -> None:
    load(client, keys, [("SKU1", "W1", 10)])
    as_of = redis_now(client)
    name = stock_lock_name("W1")
    paused = DistributedLock(client, keys, name, ttl_ms=100)
    old = paused.acquire(wait_s=0)
    assert old is not None
    with pytest.raises(LockTimeout):
        apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 1)], as_of, lock_wait_s=0.02)
    time.sleep(0.15)  # the first holder stalls past its TTL

    other = connect(redis_settings)
    newer = apply_snapshot(other, keys, "W1", [SnapshotRow("SKU1", 8)], as_of)
    assert newer.fence > old.fence and level(client, keys, "SKU1")[0] == 8

    # The stalled holder wakes up and writes its count (taken later, so it is not simply
    # superseded by the newer one) with its old token: the stock script refuses it.
    after_a_tick()
    later = redis_now(client)
    with pytest.raises(StaleFence):
        apply_snapshot_fenced(
            client, keys, "W1", [SnapshotRow("SKU1", 2)], later, fence=old.fence, op_id="late"
        )
    assert level(client, keys, "SKU1")[0] == 8
    assert not client.hexists(keys.stock("SKU1"), "op:late")


def test_bad_rows_are_rejected_whole(client: redis.Redis, keys: Keys) -> None:
    load(client, keys, [("SKU1", "W1", 10)])
    rows = [SnapshotRow("SKU1", 3), SnapshotRow("SKU1", 4), SnapshotRow("a|b", 1)]
    with pytest.raises(SnapshotError, match="2 bad row"):
        apply_snapshot(client, keys, "W1", rows, redis_now(client))
    assert level(client, keys, "SKU1") == (10, 0, 0)


async def test_reservations_racing_the_write_are_retried(
    client: redis.Redis, keys: Keys, redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reserved grows between our read and our write: the script refuses, we read again."""
    import state.snapshot as snapshot

    load(client, keys, [("SKU1", "W1", 10)])
    as_of = redis_now(client)
    real = snapshot.read_ledgers
    calls = {"n": 0}

    def racing(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 1:  # another worker reserves right after our first read
            client.hincrby(keys.stock("SKU1"), "reserved:W1", 5)
            client.hset(keys.stock("SKU1"), "r:RACE", "W1=5")
        return out

    monkeypatch.setattr(snapshot, "read_ledgers", racing)
    result = apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 3)], as_of)
    assert calls["n"] == 2
    (line,) = result.lines
    assert (line.reserved, line.on_hand, line.shortfall) == (5, 5, 2)
    assert level(client, keys, "SKU1") == (5, 5, 0)


async def test_rows_counted_at_different_times(
    client: redis.Redis, keys: Keys, redis_settings: Settings
) -> None:
    """A cycle count: each sku has its own as_of; only shipments after *its* count count."""
    load(client, keys, [("SKU1", "W1", 10), ("SKU2", "W1", 10)])
    engine = await reserve(redis_settings, keys, "O1", "SKU1", 2)
    await reserve(redis_settings, keys, "O2", "SKU2", 2)
    first = redis_now(client)  # SKU1 counted: 10
    after_a_tick()
    await engine.commit("O1", ["SKU1"])
    await engine.commit("O2", ["SKU2"])
    after_a_tick()
    second = redis_now(client)  # SKU2 counted after its shipment: 8
    rows = [SnapshotRow("SKU1", 10, first), SnapshotRow("SKU2", 8, second)]
    result = apply_snapshot(client, keys, "W1", rows, None)
    assert {ln.sku: (ln.status, ln.moved_after) for ln in result.lines} == {
        "SKU1": ("unchanged", -2),
        "SKU2": ("unchanged", 0),
    }
    with pytest.raises(SnapshotError, match="zero_missing needs"):
        apply_snapshot(client, keys, "W1", rows, None, zero_missing=True)
    with pytest.raises(SnapshotError, match="no as_of"):
        apply_snapshot(client, keys, "W1", [SnapshotRow("SKU1", 1)], None)


def test_snapshot_files(tmp_path: Path) -> None:
    csv_file = tmp_path / "count.csv"
    csv_file.write_text(
        "sku,qty,as_of\nA,3,2024-11-11T00:00:00+08:00\nB,0,2024-11-11T00:00:00+08:00\n"
    )
    rows, as_of = parse_snapshot_file(csv_file)
    assert [(r.sku, r.counted) for r in rows] == [("A", 3), ("B", 0)]
    assert as_of == datetime(2024, 11, 10, 16, tzinfo=UTC)

    json_file = tmp_path / "count.json"
    json_file.write_text(
        '{"as_of": "2024-11-11T00:00:00Z", "rows": [{"sku": "A", "qty": 3},'
        ' {"sku": "B", "counted": 1, "as_of": "2024-11-11T01:00:00Z"}]}'
    )
    rows, as_of = parse_snapshot_file(json_file)
    assert as_of == datetime(2024, 11, 11, tzinfo=UTC)
    assert rows[0].as_of is None and rows[1].as_of == datetime(2024, 11, 11, 1, tzinfo=UTC)

    bad = tmp_path / "bad.csv"
    bad.write_text("sku,qty,as_of\nA,x,2024-11-11T00:00:00Z\nB,1,2024-11-11 00:00\n")
    with pytest.raises(SnapshotError, match="2 bad row") as exc:
        parse_snapshot_file(bad)
    assert "not a whole number" in str(exc.value) and "no UTC offset" in str(exc.value)
