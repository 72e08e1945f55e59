"""Property tests of the stock layer against the real test Redis.

A hypothesis state machine drives StockEngine and apply_changes with random loads, adjustments,
reservations, releases, shipments, settlements and replays, and keeps a plain Python model of
what every figure must be. After every step the figures in Redis must equal the model, verify()
must be clean, and every order must hold all its skus or none. Targeted tests below pin down
the interleavings a single-threaded machine cannot reach (crashes, races), and the concurrency
test races several clients for a hot sku.

Bugs found in state/ stay as regression tests.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.settings import Settings
from order.allocation import ShortagePolicy, format_parts, parse_parts, plan_allocation
from order.reservation import Reservation, ReserveRequest, ReserveStatus, to_allocations
from state.keys import Keys
from state.redis import connect, lua_source
from state.reservations import StockEngine
from state.stock import StockChange, StockError, StockOp, apply_changes, stock_levels
from state.verify import verify

pytestmark = pytest.mark.integration

STATEFUL = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FIGURES = ("on_hand", "reserved", "inbound", "sit")
ORDER_IDS = [f"o{i}" for i in range(10)]


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """Leave the shared test Redis as we found it."""
    batch: list[str] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass
class SkuModel:
    """What one sku's hash must hold: figures per warehouse, r:/s: fields per order."""

    fig: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    r: dict[str, str] = field(default_factory=dict)  # order -> "WH=qty,..." or "-"
    s: dict[str, str] = field(default_factory=dict)
    ops: set[str] = field(default_factory=set)  # op ids this sku has applied
    fence: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def available(self, wh: str) -> int:
        return self.fig[("on_hand", wh)] - self.fig[("reserved", wh)]


@dataclass(frozen=True)
class Replay:
    """A past operation that completed: running it again must change nothing at all."""

    kind: str
    args: tuple[Any, ...]


class StockMachine(RuleBasedStateMachine):
    """Random stock operations through the real scripts, checked against SkuModel."""

    def __init__(
        self,
        client: redis.Redis,
        aclient: aioredis.Redis,
        loop: asyncio.AbstractEventLoop,
        prefix: str,
    ) -> None:
        super().__init__()
        self.client, self.loop, self.prefix = client, loop, prefix
        self.keys = Keys(prefix)
        self.engine = StockEngine(aclient, self.keys)
        self.skus: list[str] = []
        self.whs: list[str] = []
        self.orders: dict[str, dict[str, int]] = {}
        self.model: dict[str, SkuModel] = {}
        self.history: list[Replay] = []
        self.released: set[str] = set()
        self.token = 0
        self.ready = False

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def teardown(self) -> None:
        drop_prefix(self.client, self.prefix)

    # ---- setup -------------------------------------------------------------------------------

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        self.skus = [f"S{i}" for i in range(data.draw(st.integers(2, 3), label="skus"))]
        self.whs = [f"W{i}" for i in range(data.draw(st.integers(2, 3), label="warehouses"))]
        self.model = {sku: SkuModel() for sku in self.skus}
        for oid in ORDER_IDS:
            skus = data.draw(
                st.lists(st.sampled_from(self.skus), min_size=1, max_size=3, unique=True)
            )
            self.orders[oid] = {sku: data.draw(st.integers(1, 6)) for sku in skus}
        changes = [
            StockChange(sku, wh, "on_hand", "set", data.draw(st.integers(2, 12)))
            for sku in self.skus
            for wh in self.whs
        ]
        self.do_apply(StockOp.LOAD, "init", changes, 0)
        self.ready = True

    # ---- stock operations ----------------------------------------------------------------------

    @rule(data=st.data())
    def change_stock(self, data: st.DataObject) -> None:
        places = data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(self.skus),
                    st.sampled_from(self.whs),
                    st.sampled_from(["on_hand", "on_hand", "inbound"]),
                ),
                min_size=1,
                max_size=4,
            )
        )
        changes = []
        for sku, wh, fld in places:
            mode = data.draw(st.sampled_from(["set", "add"]))
            value = data.draw(st.integers(0, 12) if mode == "set" else st.integers(-6, 8))
            changes.append(StockChange(sku, wh, fld, mode, value))
        how = data.draw(st.sampled_from(["none", "none", "next", "stale"]))
        fence = 0
        if how == "next" or (how == "stale" and self.token < 2):
            self.token += 1
            fence = self.token
        elif how == "stale":
            fence = data.draw(st.integers(1, self.token - 1))
        kind = data.draw(st.sampled_from([StockOp.LOAD, StockOp.ADJUST, StockOp.SNAPSHOT]))
        self.do_apply(kind, uuid.uuid4().hex, changes, fence)

    def do_apply(self, kind: StockOp, op_id: str, changes: list[StockChange], fence: int) -> None:
        expected = self.model_apply(op_id, changes, fence)
        try:
            applied = apply_changes(self.client, self.keys, kind, op_id, changes, fence=fence)
        except StockError:
            assert expected is None, f"refused, model expected {expected} skus applied"
            event("stock operation refused")
            return
        assert expected is not None, "applied, model expected a refusal"
        assert applied == expected
        self.history.append(Replay("stock", (kind, op_id, changes, fence)))

    def model_apply(self, op_id: str, changes: list[StockChange], fence: int) -> int | None:
        """apply_changes: every sku of the operation is checked before any changes (a refusal
        leaves no trace at all); within a sku, changes apply in order, each on the last."""
        by_sku: dict[str, list[StockChange]] = {}
        for c in changes:
            by_sku.setdefault(c.sku, []).append(c)
        planned: dict[str, dict[tuple[str, str], int]] = {}
        for sku, sku_changes in by_sku.items():
            m = self.model[sku]
            if op_id in m.ops:
                continue
            figures = defaultdict(int, m.fig)
            for c in sku_changes:
                current = figures[(c.field, c.warehouse)]
                target = c.value if c.mode == "set" else current + c.value
                if (
                    (fence > 0 and m.fence[c.warehouse] > fence)
                    or target < 0
                    or (c.field == "on_hand" and target < m.fig[("reserved", c.warehouse)])
                ):
                    return None
                figures[(c.field, c.warehouse)] = target
            planned[sku] = figures
        for sku, figures in planned.items():
            m = self.model[sku]
            m.fig = figures
            if fence > 0:
                for c in by_sku[sku]:
                    m.fence[c.warehouse] = fence
            m.ops.add(op_id)
        return len(planned)

    # ---- reservations ------------------------------------------------------------------------

    def request(self, data: st.DataObject, oid: str) -> ReserveRequest:
        order = data.draw(st.permutations(self.whs))
        candidates = order[: data.draw(st.integers(1, len(order)))]
        policy = data.draw(st.sampled_from(list(ShortagePolicy)))
        return ReserveRequest(oid, dict(self.orders[oid]), candidates, policy)

    @rule(data=st.data())
    def reserve(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(ORDER_IDS), min_size=1, max_size=4, unique=True))
        requests = [self.request(data, oid) for oid in ids]
        if data.draw(st.booleans(), label="same order twice in the batch"):
            again = data.draw(st.sampled_from(requests))
            requests.insert(data.draw(st.integers(0, len(requests))), again)
        self.do_reserve(requests)

    def do_reserve(self, requests: list[ReserveRequest]) -> list[Reservation]:
        """The batch behaves as its distinct orders served one after the other, in order of
        first occurrence; a repeat of an order gets the result of its first occurrence."""
        results = self.run(self.engine.reserve_many(requests))
        assert len(results) == len(requests)
        first: dict[str, Reservation] = {}
        for req, res in zip(requests, results, strict=True):
            assert res.order_id == req.order_id
            if req.order_id in first:
                assert res == first[req.order_id], "a repeat in the batch must agree"
                continue
            first[req.order_id] = res
            status, per_sku = self.model_reserve(req)
            assert res.status is status, (req, res, status)
            assert res.allocations == to_allocations(per_sku)
            event(f"reserve: {res.status.value}" + (" split" if len(res.warehouses) > 1 else ""))
            if res.active:
                held = self.run(self.engine.reservation(req.order_id, list(req.quantities)))
                assert to_allocations(held) == res.allocations
                self.history.append(Replay("reserve", (req,)))
        return results

    def model_reserve(self, req: ReserveRequest) -> tuple[ReserveStatus, dict[str, str]]:
        """Requests of a batch behave as if served one after the other."""
        held = {
            sku: self.model[sku].r[req.order_id]
            for sku in req.quantities
            if req.order_id in self.model[sku].r
        }
        if "-" in held.values():
            return ReserveStatus.BLOCKED, {}
        if held:
            assert set(held) == set(req.quantities), "the machine never leaves a partial hold"
            return ReserveStatus.EXISTING, held
        available = {sku: {wh: m.available(wh) for wh in self.whs} for sku, m in self.model.items()}
        plan = plan_allocation(req.quantities, req.warehouses, available, req.policy)
        if plan is None:
            return ReserveStatus.SHORTAGE, {}
        per_sku = {}
        for sku, parts in plan.items():
            for wh, qty in parts:
                self.model[sku].fig[("reserved", wh)] += qty
            per_sku[sku] = self.model[sku].r[req.order_id] = format_parts(parts)
        return ReserveStatus.RESERVED, per_sku

    def pick(self, data: st.DataObject, figure: str) -> str:
        """Mostly an order with something to act on, so shipments and returns do happen."""
        table = "r" if figure == "reserved" else "s"
        busy = sorted(
            oid
            for oid in ORDER_IDS
            if any(getattr(m, table).get(oid, "-") != "-" for m in self.model.values())
        )
        if busy and data.draw(st.sampled_from([True, True, True, False]), label="prefer busy"):
            return data.draw(st.sampled_from(busy))
        return data.draw(st.sampled_from(ORDER_IDS))

    @rule(oid=st.sampled_from(ORDER_IDS))
    def release_rule(self, oid: str) -> None:
        self.release(oid)

    @rule(data=st.data())
    def commit_rule(self, data: st.DataObject) -> None:
        self.commit(self.pick(data, "reserved"))

    @rule(data=st.data(), returned=st.booleans(), sellable=st.booleans())
    def settle_rule(self, data: st.DataObject, returned: bool, sellable: bool) -> None:
        self.settle(self.pick(data, "in transit"), returned, sellable)

    def release(self, oid: str) -> None:
        skus = list(self.orders[oid])
        got = self.run(self.engine.release(oid, skus))
        expected = {}
        for sku in skus:
            m = self.model[sku]
            current = m.r.get(oid)
            if current and current != "-":
                for wh, qty in parse_parts(current):
                    m.fig[("reserved", wh)] -= qty
                expected[sku] = current
            m.r[oid] = "-"
        assert got == to_allocations(expected)
        self.released.add(oid)
        self.history.append(Replay("release", (oid,)))

    def commit(self, oid: str) -> None:
        skus = list(self.orders[oid])
        got = self.run(self.engine.commit(oid, skus))
        expected = {}
        for sku in skus:
            m = self.model[sku]
            current = m.r.get(oid)
            if current and current != "-":
                for wh, qty in parse_parts(current):
                    m.fig[("reserved", wh)] -= qty
                    m.fig[("on_hand", wh)] -= qty
                    m.fig[("sit", wh)] += qty
                m.r[oid] = "-"
                m.s[oid] = expected[sku] = current
        assert got == to_allocations(expected)
        event(f"commit: {'shipped' if got else 'nothing reserved'}")
        if got:  # a shipment/settlement that found nothing may still apply later
            self.history.append(Replay("commit", (oid,)))

    def settle(self, oid: str, returned: bool, sellable: bool) -> None:
        skus = list(self.orders[oid])
        got = self.run(self.engine.settle(oid, skus, returned=returned, sellable=sellable))
        expected = {}
        for sku in skus:
            m = self.model[sku]
            current = m.s.get(oid)
            if current and current != "-":
                for wh, qty in parse_parts(current):
                    m.fig[("sit", wh)] -= qty
                    if returned and sellable:
                        m.fig[("on_hand", wh)] += qty
                m.s[oid] = "-"
                expected[sku] = current
        assert got == to_allocations(expected)
        event(f"settle: {'settled' if got else 'nothing in transit'}")
        if got:  # a shipment/settlement that found nothing may still apply later
            self.history.append(Replay("settle", (oid, returned, sellable)))

    # ---- replays -----------------------------------------------------------------------------

    def raw_state(self) -> dict[str, object]:
        """Every field of every sku hash and every ledger length: a replay moves none."""
        pipe = self.client.pipeline(transaction=True)
        for sku in self.skus:
            pipe.hgetall(self.keys.stock(sku))
            pipe.xlen(self.keys.ledger(sku))
        return dict(
            zip(itertools.product(self.skus, ("hash", "ledger")), pipe.execute(), strict=True)
        )

    @precondition(lambda self: bool(self.history))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        past = data.draw(st.sampled_from(self.history))
        before = self.raw_state()
        if past.kind == "stock":
            kind, op_id, changes, fence = past.args
            assert self.model_apply(op_id, changes, fence) == 0
            assert apply_changes(self.client, self.keys, kind, op_id, changes, fence=fence) == 0
        elif past.kind == "reserve":
            (req,) = past.args
            (res,) = self.do_reserve([req])
            assert res.status in (ReserveStatus.EXISTING, ReserveStatus.BLOCKED)
        elif past.kind == "release":
            self.release(*past.args)
        elif past.kind == "commit":
            self.commit(*past.args)
        else:
            self.settle(*past.args)
        assert self.raw_state() == before, f"replay of {past.kind} changed Redis"
        event(f"replayed {past.kind}")

    # ---- invariants --------------------------------------------------------------------------

    @invariant()
    def matches_model_and_verifies(self) -> None:
        if not self.ready:
            return
        for sku in self.skus:
            m = self.model[sku]
            fields: dict[str, str] = self.client.hgetall(self.keys.stock(sku))  # type: ignore[assignment]
            levels = {lv.warehouse: lv for lv in stock_levels(self.client, self.keys, sku)}
            for wh in self.whs:
                lv = levels.get(wh)
                got = (lv.on_hand, lv.reserved, lv.inbound, lv.sales_in_transit) if lv else (0,) * 4
                assert got == tuple(m.fig[(f, wh)] for f in FIGURES), (sku, wh)
                assert got[0] - got[1] >= 0, "available must never be negative"
            assert {k[2:]: v for k, v in fields.items() if k.startswith("r:")} == m.r, sku
            assert {k[2:]: v for k, v in fields.items() if k.startswith("s:")} == m.s, sku
        for oid, quantities in self.orders.items():
            active = [
                sku for sku in quantities if self.model[sku].r.get(oid, "-") != "-"
            ]  # equal to Redis, checked above
            assert len(active) in (0, len(quantities)), f"{oid} holds {active} of {quantities}"
            if oid in self.released:
                assert not active, f"{oid} was released for good but holds {active}"
        report = verify(self.client, self.keys)
        assert report.ok, report.violations
        assert report.oversold_units == 0


def test_stock_state_machine(redis_settings: Settings) -> None:
    client = connect(redis_settings)
    loop = asyncio.new_event_loop()
    aclient = aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True)
    counter = itertools.count()
    try:
        run_state_machine_as_test(
            lambda: StockMachine(  # type: ignore[arg-type, return-value]
                client, aclient, loop, f"{redis_settings.redis_prefix}:{next(counter)}"
            ),
            settings=STATEFUL,
        )
    finally:
        loop.run_until_complete(aclient.aclose())
        loop.close()
        drop_prefix(client, redis_settings.redis_prefix)


# --------------------------------------------------------------------------------------------
# Targeted cases: crashes and races a sequential machine cannot reach
# --------------------------------------------------------------------------------------------


@dataclass
class Env:
    settings: Settings
    client: redis.Redis
    aclient: aioredis.Redis
    keys: Keys
    engine: StockEngine

    def load(self, rows: dict[tuple[str, str], int]) -> None:
        changes = [StockChange(s, w, "on_hand", "set", q) for (s, w), q in rows.items()]
        apply_changes(self.client, self.keys, StockOp.LOAD, uuid.uuid4().hex, changes)

    def level(self, sku: str, wh: str) -> tuple[int, int]:
        for lv in stock_levels(self.client, self.keys, sku):
            if lv.warehouse == wh:
                return lv.on_hand, lv.reserved
        return 0, 0

    def reserve_script(self, sku: str, order_id: str, allocation: str) -> list[Any]:
        """One sku of a saga, as a worker that crashed right after it would have left it."""
        script = self.client.register_script(lua_source("stock_reserve"))
        (reply,) = script(
            keys=[self.keys.stock(sku), self.keys.ledger(sku)], args=[order_id, allocation, "", ""]
        )  # type: ignore[misc]
        return reply  # type: ignore[no-any-return]

    def clean(self) -> bool:
        report = verify(self.client, self.keys)
        return report.ok and report.oversold_units == 0


@pytest.fixture
async def env(redis_settings: Settings) -> AsyncIterator[Env]:
    client = connect(redis_settings)
    aclient = aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True)
    keys = Keys(redis_settings.redis_prefix)
    yield Env(redis_settings, client, aclient, keys, StockEngine(aclient, keys))
    await aclient.aclose()
    drop_prefix(client, redis_settings.redis_prefix)


def req(
    oid: str, quantities: dict[str, int], whs: list[str], policy: str = "hold"
) -> ReserveRequest:
    return ReserveRequest(oid, quantities, whs, ShortagePolicy(policy))


async def test_redelivery_after_interrupted_saga_ends_all_or_nothing(env: Env) -> None:
    """A worker died after reserving one sku of two: the next delivery completes the order."""
    env.load({("A", "W1"): 5, ("B", "W1"): 5})
    assert env.reserve_script("A", "o1", "W1=2")[0] == "reserved"
    (res,) = await env.engine.reserve_many([req("o1", {"A": 2, "B": 1}, ["W1"])])
    assert res.status is ReserveStatus.RESERVED
    assert await env.engine.reservation("o1", ["A", "B"]) == {"A": "W1=2", "B": "W1=1"}
    assert env.level("A", "W1") == (5, 2)
    assert env.clean()


async def test_redelivery_after_interrupted_saga_without_stock_undoes_it(env: Env) -> None:
    env.load({("A", "W1"): 5, ("B", "W1"): 0})
    env.reserve_script("A", "o1", "W1=2")
    (res,) = await env.engine.reserve_many([req("o1", {"A": 2, "B": 1}, ["W1"])])
    assert res.status is ReserveStatus.SHORTAGE
    assert await env.engine.reservation("o1", ["A", "B"]) == {}
    assert env.level("A", "W1") == (5, 0)
    assert env.clean()


async def test_released_order_never_reserves_again(env: Env) -> None:
    env.load({("A", "W1"): 5, ("B", "W2"): 5})
    order = req("o1", {"A": 1, "B": 1}, ["W1", "W2"], "split")
    assert (await env.engine.release("o1", ["A", "B"])) == []  # cancelled before reserving
    for _ in range(2):
        (res,) = await env.engine.reserve_many([order])
        assert res.status is ReserveStatus.BLOCKED and not res.allocations
    assert env.level("A", "W1") == (5, 0) and env.level("B", "W2") == (5, 0)
    assert env.clean()


async def test_stale_fence_is_refused_whole(env: Env) -> None:
    env.load({("A", "W1"): 5, ("B", "W1"): 5})
    newer = [StockChange("B", "W1", "on_hand", "set", 9)]
    apply_changes(env.client, env.keys, StockOp.SNAPSHOT, "snap-2", newer, fence=2)
    older = [
        StockChange("A", "W1", "on_hand", "set", 1),
        StockChange("B", "W1", "on_hand", "set", 1),
    ]
    with pytest.raises(StockError, match="fencing"):
        apply_changes(env.client, env.keys, StockOp.SNAPSHOT, "snap-1", older, fence=1)
    assert env.level("A", "W1") == (5, 0) and env.level("B", "W1") == (9, 0)
    assert env.clean()


async def test_redelivery_after_interrupted_saga_may_use_what_it_held(env: Env) -> None:
    """Regression: the redelivery planned on a snapshot that still counted its own stale hold,
    so an order whose interrupted saga held the last units came out SHORTAGE."""
    env.load({("A", "W1"): 1, ("B", "W1"): 1})
    env.reserve_script("A", "o1", "W1=1")  # the crashed worker's half of the saga
    (res,) = await env.engine.reserve_many([req("o1", {"A": 1, "B": 1}, ["W1"])])
    assert res.status is ReserveStatus.RESERVED
    assert await env.engine.reservation("o1", ["A", "B"]) == {"A": "W1=1", "B": "W1=1"}
    assert env.clean()


async def test_same_order_twice_in_a_batch_reports_the_reservation(env: Env) -> None:
    """Regression: the repeat was planned as a new order on the snapshot already charged with
    the first occurrence and reported SHORTAGE although the order was reserved."""
    env.load({("A", "W1"): 5})
    first, again = await env.engine.reserve_many([req("o1", {"A": 3}, ["W1"])] * 2)
    assert first.status is ReserveStatus.RESERVED
    assert again == first
    assert env.level("A", "W1") == (5, 3)


async def test_same_order_twice_in_a_batch_does_not_starve_the_next(env: Env) -> None:
    """Regression: the snapshot was charged once per occurrence, so a later order of the batch
    was refused although its stock was free."""
    env.load({("A", "W1"): 10})
    results = await env.engine.reserve_many(
        [req("o1", {"A": 3}, ["W1"]), req("o1", {"A": 3}, ["W1"]), req("o2", {"A": 5}, ["W1"])]
    )
    assert [r.status for r in results] == [ReserveStatus.RESERVED] * 3
    assert env.level("A", "W1") == (10, 8)  # o1 once, o2
    assert env.clean()


async def test_repeated_candidate_warehouse_never_oversells(env: Env) -> None:
    """Regression (fixed in 66bf720): a warehouse listed twice was checked once per part."""
    env.load({("A", "W1"): 3})
    await env.engine.reserve_many([req("o1", {"A": 5}, ["W1", "W1"], "split")])
    env.reserve_script("A", "o2", "W1=3,W1=3")  # the script alone, whatever the planner does
    assert env.clean()
    assert env.level("A", "W1")[1] <= 3


async def test_two_changes_of_one_place_in_one_operation(env: Env) -> None:
    """Regression: each change was computed from the stored value, the last one won and the
    ledger recorded both deltas (verify: ledger_mismatch)."""
    changes = [
        StockChange("A", "W1", "on_hand", "add", 5),
        StockChange("A", "W1", "on_hand", "add", 3),
    ]
    apply_changes(env.client, env.keys, StockOp.ADJUST, "op", changes)
    assert env.level("A", "W1") == (8, 0)
    assert env.clean()


async def test_retry_of_a_refused_operation_is_all_or_nothing(env: Env) -> None:
    """Regression: a refused operation left op:ID on the skus it had applied and reverted, so a
    retry with the same op id skipped them and ended half-applied."""
    env.load({("A", "W1"): 10, ("B", "W1"): 10})
    await env.engine.reserve_many([req("o1", {"B": 8}, ["W1"])])
    changes = [
        StockChange("A", "W1", "on_hand", "set", 20),
        StockChange("B", "W1", "on_hand", "set", 5),
    ]
    with pytest.raises(StockError, match="nothing applied"):
        apply_changes(env.client, env.keys, StockOp.LOAD, "file-1", changes)
    assert env.level("A", "W1") == (10, 0)
    await env.engine.release("o1", ["B"])  # the cause is gone: the operator retries the file
    assert apply_changes(env.client, env.keys, StockOp.LOAD, "file-1", changes) == 2
    assert env.level("A", "W1") == (20, 0) and env.level("B", "W1") == (5, 0)
    assert apply_changes(env.client, env.keys, StockOp.LOAD, "file-1", changes) == 0
    assert env.clean()


class RacingClient:
    """A redis client whose stock script lets another worker act right after its first direct
    (not pipelined) call: between two skus of one operation."""

    def __init__(self, real: redis.Redis, between: Callable[[], None]) -> None:
        self._real = real
        self._between: Callable[[], None] | None = between

    def register_script(self, source: str) -> Callable[..., Any]:
        script = self._real.register_script(source)

        def call(**kwargs: Any) -> Any:
            out = script(**kwargs)
            if self._between is not None and kwargs.get("client") is None:
                between, self._between = self._between, None
                between()
            return out

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_refusal_after_the_dry_run_reports_what_stayed_applied(env: Env) -> None:
    """Regression: when reservations land between two skus of an operation (after its checks),
    the second sku refuses and the first cannot be reverted (its units are reserved now): the
    error must not claim that nothing was applied."""
    env.load({("B", "W1"): 5})

    def other_worker() -> None:
        env.reserve_script("A", "o2", "W1=10")  # takes the units A was just loaded with
        env.reserve_script("B", "o1", "W1=5")  # B can no longer be set to 3

    racing = RacingClient(env.client, other_worker)
    changes = [
        StockChange("A", "W1", "on_hand", "set", 10),
        StockChange("B", "W1", "on_hand", "set", 3),
    ]
    with pytest.raises(StockError) as refused:
        apply_changes(racing, env.keys, StockOp.LOAD, "file-1", changes)  # type: ignore[arg-type]
    assert env.level("B", "W1") == (5, 5)
    if env.level("A", "W1")[0]:
        assert "nothing applied" not in str(refused.value)
        assert "A" in str(refused.value).partition("partially applied")[2]
    assert env.clean()


async def test_concurrent_redeliveries_of_one_order_agree(env: Env) -> None:
    """Two workers carrying out one saved decision to reserve (a redelivery during a
    rebalance) at the same seq: the one that planned first on an old snapshot and was held up
    reads what the other reserved meanwhile, sku by sku, and both report the same allocation.
    (Found as a bug once: the failing delivery undid skus the other had reported reserved;
    a per-order lease used to prevent it, the seq fences now do, without waiting.)"""
    env.load({("A", "W1"): 5, ("A", "W2"): 5, ("B", "W1"): 1, ("B", "W2"): 1})
    order = replace(req("o1", {"A": 1, "B": 1}, ["W1", "W2"]), seq=640)
    other = aioredis.Redis.from_url(env.settings.redis_url, decode_responses=True)
    first, second = env.engine, StockEngine(other, env.keys)
    planned, go = asyncio.Event(), asyncio.Event()
    original = first._reserve_plans

    async def gated(*args: Any) -> Any:
        planned.set()
        await go.wait()
        return await original(*args)

    first._reserve_plans = gated  # type: ignore[method-assign]
    try:
        one = asyncio.create_task(first.reserve_many([order]))
        await planned.wait()  # delivery 1 planned both skus in W1 on its snapshot
        await StockEngine(env.aclient, env.keys).reserve_many([req("x", {"B": 1}, ["W1"])])
        (res2,) = await second.reserve_many([order])  # B is short in W1: both in W2
        go.set()
        (res1,) = await one  # its seq was decided: it reads W2, reserves nothing more
    finally:
        go.set()
        await other.aclose()
    assert res2.status is ReserveStatus.RESERVED and res2.warehouses == ["W2"]
    assert res1.active and res1.allocations == res2.allocations
    held = await env.engine.reservation("o1", ["A", "B"])
    assert to_allocations(held) == res2.allocations
    assert env.clean()


async def test_a_stale_seq_changes_nothing(env: Env) -> None:
    """A late worker still carrying out an older decision (a lower seq) after a newer one was
    carried out is told 'superseded' and moves no figure."""
    env.load({("A", "W1"): 5})
    newer = replace(req("o1", {"A": 2}, ["W1"]), seq=6400)
    (res,) = await env.engine.reserve_many([newer])
    assert res.status is ReserveStatus.RESERVED
    await env.engine.release("o1", ["A"], seq=6500)  # a later decision cancelled it
    before = await env.aclient.hgetall(env.keys.stock("A"))
    (late,) = await env.engine.reserve_many([replace(newer, seq=640)])
    assert late.status is ReserveStatus.SUPERSEDED
    assert await env.engine.commit("o1", ["A"], seq=641) == []
    assert await env.aclient.hgetall(env.keys.stock("A")) == before
    assert env.clean()


# --------------------------------------------------------------------------------------------
# Concurrency: several clients race for a hot sku
# --------------------------------------------------------------------------------------------

HOT_STOCK = {("HOT", "W1"): 30, ("HOT", "W2"): 20}
COLD = [f"COLD{i}" for i in range(6)]


def race_orders(rng: random.Random, n: int) -> list[ReserveRequest]:
    orders = []
    for i in range(n):
        quantities = {"HOT": rng.randint(1, 2)}
        if rng.random() < 0.8:
            quantities[rng.choice(COLD)] = rng.randint(1, 3)
        whs = ["W1", "W2"]
        rng.shuffle(whs)
        policy = rng.choice([ShortagePolicy.HOLD, ShortagePolicy.SPLIT])
        orders.append(ReserveRequest(f"race-{i}", quantities, whs, policy))
    return orders


async def race(
    env: Env, deliveries: list[list[ReserveRequest]], batch: int
) -> dict[str, list[Reservation]]:
    """Each list of deliveries is one worker with its own connection, in small batches."""

    async def worker(requests: list[ReserveRequest]) -> list[Reservation]:
        client = aioredis.Redis.from_url(env.settings.redis_url, decode_responses=True)
        engine = StockEngine(client, env.keys)
        try:
            out: list[Reservation] = []
            for i in range(0, len(requests), batch):
                out += await engine.reserve_many(requests[i : i + batch])
            return out
        finally:
            await client.aclose()

    by_order: dict[str, list[Reservation]] = defaultdict(list)
    for results in await asyncio.gather(*(worker(d) for d in deliveries)):
        for res in results:
            by_order[res.order_id].append(res)
    return by_order


async def held_by(
    env: Env, orders: list[ReserveRequest]
) -> list[tuple[ReserveRequest, dict[str, str]]]:
    return [(o, await env.engine.reservation(o.order_id, list(o.quantities))) for o in orders]


def load_race_stock(env: Env, rng: random.Random) -> None:
    rows = dict(HOT_STOCK)
    for k, sku in enumerate(COLD):  # half the cold skus are tight, so some sagas undo
        for wh in ("W1", "W2"):
            rows[(sku, wh)] = rng.randint(0, 6) if k % 2 else 500
    env.load(rows)


def assert_no_oversell(env: Env) -> None:
    for sku in ["HOT", *COLD]:
        for lv in stock_levels(env.client, env.keys, sku):
            assert lv.reserved <= lv.on_hand, lv
    assert sum(env.level("HOT", wh)[1] for wh in ("W1", "W2")) <= 50
    report = verify(env.client, env.keys)
    assert report.ok, report.violations
    assert report.oversold_units == 0


async def test_concurrent_clients_never_oversell_a_hot_sku(env: Env) -> None:
    rng = random.Random(7)
    load_race_stock(env, rng)
    orders = race_orders(rng, 300)
    workers = 6
    by_order = await race(env, [orders[i::workers] for i in range(workers)], batch=10)
    assert_no_oversell(env)
    reserved = 0
    for order, held in await held_by(env, orders):
        (res,) = by_order[order.order_id]
        active = [v for v in held.values() if v != "-"]
        assert len(active) in (0, len(order.quantities)), (order, held)
        assert res.active == bool(active), (res, held)
        if res.active:
            assert to_allocations(held) == res.allocations
            reserved += 1
    assert 0 < reserved < len(orders)
    # Demand for HOT is far above its 50 units: losing races must not leave units unsold.
    assert sum(env.level("HOT", wh)[1] for wh in ("W1", "W2")) == 50


async def test_concurrent_redeliveries_never_oversell_a_hot_sku(env: Env) -> None:
    """Every order delivered twice, by two different workers (at-least-once)."""
    rng = random.Random(11)
    load_race_stock(env, rng)
    orders = race_orders(rng, 300)
    workers = 6
    deliveries: list[list[ReserveRequest]] = [[] for _ in range(workers)]
    for i, order in enumerate(orders):
        deliveries[i % workers].append(order)
        deliveries[(i + 1) % workers].append(order)
    for d in deliveries:
        rng.shuffle(d)
    by_order = await race(env, deliveries, batch=7)
    assert_no_oversell(env)
    for order, held in await held_by(env, orders):
        active = [v for v in held.values() if v != "-"]
        assert len(active) in (0, len(order.quantities)), (order, held)
        if active:  # someone reserved it, and said so
            assert any(r.active for r in by_order[order.order_id])


async def test_a_decision_carried_out_again_after_its_fallback(env: Env) -> None:
    """A worker carried out a decision's first request to its last attempt (short: the gift is
    out of stock), reserved its fallback (the order without the gift) and died before saving.
    The worker carrying the decision out again must read 'short' for the first request, not
    'superseded' (which made it give up and try again for ever: ./oms chaos found it), and the
    fallback's reservation as it is."""
    env.load({("A", "W1"): 5})
    first = replace(req("o1", {"A": 1, "G": 1}, ["W1"]), seq=6416, seq_limit=6464)
    fallback = replace(first, quantities={"A": 1}, seq=6420)
    (short,) = await env.engine.reserve_many([first])
    (kept,) = await env.engine.reserve_many([fallback])
    assert short.status is ReserveStatus.SHORTAGE and kept.status is ReserveStatus.RESERVED
    other = StockEngine(env.aclient, env.keys)
    (again,) = await other.reserve_many([first])
    (kept_again,) = await other.reserve_many([fallback])
    assert again.status is ReserveStatus.SHORTAGE
    assert kept_again.active and kept_again.allocations == kept.allocations
    # A later decision of the order moved on: the old one is superseded, nothing moves.
    later = replace(first, quantities={"A": 2}, seq=6480, seq_limit=6528)
    (moved,) = await env.engine.reserve_many([later])
    assert moved.status is ReserveStatus.RESERVED
    before = await env.aclient.hgetall(env.keys.stock("A"))
    (old,) = await other.reserve_many([first])
    assert old.status is ReserveStatus.SUPERSEDED
    assert await env.aclient.hgetall(env.keys.stock("A")) == before
    assert env.clean()


async def counted_script_calls(env: Env, engine: StockEngine) -> list[str]:
    """Wrap ``engine``'s reserve script: the seqs it is called at, in order."""
    calls: list[str] = []
    script = engine._reserve

    async def counted(*, keys: Any, args: Any, client: Any) -> Any:
        calls.extend(str(seq) for seq in args[3::4])  # one reservation per 4 arguments
        return await script(keys=keys, args=args, client=client)

    engine._reserve = counted  # type: ignore[assignment]
    return calls


async def test_a_sold_out_order_is_short_after_one_attempt(env: Env) -> None:
    """Nothing could be planned (the sku is sold out in every warehouse): the script records an
    empty plan at the first attempt's seq and the verdict is final, not three more attempts."""
    env.load({("A", "W1"): 0, ("A", "W2"): 0, ("B", "W1"): 5})
    order = replace(req("o1", {"A": 1, "B": 1}, ["W1", "W2"]), seq=6416, seq_limit=6464)
    calls = await counted_script_calls(env, env.engine)
    (res,) = await env.engine.reserve_many([order])
    assert res.status is ReserveStatus.SHORTAGE and not res.allocations
    assert calls == ["6416", "6416"]  # one call per sku, one attempt
    assert await env.aclient.hget(env.keys.stock("A"), "e:o1") == "6416:n"
    assert env.level("B", "W1") == (5, 0)
    assert env.clean()


async def test_a_worker_with_a_plan_reads_the_recorded_empty_plan(env: Env) -> None:
    """Two workers carry out one decision at one seq. The first saw no stock and recorded an
    empty plan for every sku; stock arrives; the second plans on its fresh snapshot but reads
    the decisions already taken at that seq: short too, nothing reserved. A worker still at an
    older attempt of the same decision is sent to that seq and concludes the same."""
    env.load({("A", "W1"): 0})
    order = replace(req("o1", {"A": 2}, ["W1"]), seq=6416, seq_limit=6464)
    (first,) = await env.engine.reserve_many([order])
    env.load({("A", "W1"): 10})
    other = StockEngine(env.aclient, env.keys)
    (second,) = await other.reserve_many([order])
    assert first.status is second.status is ReserveStatus.SHORTAGE
    assert env.level("A", "W1") == (10, 0)
    # The next decision of the order (a higher seq) plans again and gets the new stock.
    (later,) = await env.engine.reserve_many([replace(order, seq=6480, seq_limit=6528)])
    assert later.status is ReserveStatus.RESERVED and env.level("A", "W1") == (10, 2)
    assert env.clean()


async def test_a_lost_race_still_tries_again(env: Env) -> None:
    """A plan that the script finds short (another order took the units after the snapshot) is
    not an empty plan: the saga tries again on a fresh snapshot and finds the other warehouse."""
    env.load({("A", "W1"): 1, ("A", "W2"): 1})
    order = replace(req("o1", {"A": 1}, ["W1", "W2"]), seq=6416, seq_limit=6464)
    planned, go = asyncio.Event(), asyncio.Event()
    original = env.engine._reserve_plans

    async def gated(*args: Any) -> Any:
        planned.set()
        await go.wait()
        return await original(*args)

    env.engine._reserve_plans = gated  # type: ignore[method-assign]
    try:
        one = asyncio.create_task(env.engine.reserve_many([order]))
        await planned.wait()  # planned W1 on its snapshot
        rival = StockEngine(env.aclient, env.keys)
        (taken,) = await rival.reserve_many([req("x", {"A": 1}, ["W1"])])
        go.set()
        (res,) = await one
    finally:
        go.set()
    assert taken.status is ReserveStatus.RESERVED
    assert res.status is ReserveStatus.RESERVED and res.warehouses == ["W2"]
    assert env.clean()


async def test_a_batch_asks_each_sku_once_with_every_request_in_order(env: Env) -> None:
    """One script call per sku per attempt carries every request of the batch for it, decided
    in the order given: the first three of five one-unit orders get the three units, and the
    ledger names each order that moved stock."""
    env.load({("A", "W1"): 3, ("B", "W1"): 10})
    calls: list[tuple[str, int]] = []
    script = env.engine._reserve

    async def counted(*, keys: Any, args: Any, client: Any) -> Any:
        calls.append((keys[0], len(args) // 4))
        return await script(keys=keys, args=args, client=client)

    env.engine._reserve = counted  # type: ignore[method-assign]
    orders = [
        replace(req(f"o{n}", {"A": 1, "B": 1}, ["W1"]), seq=6416, seq_limit=6464) for n in range(5)
    ]
    got = await env.engine.reserve_many(orders)
    assert [r.status for r in got] == [ReserveStatus.RESERVED] * 3 + [ReserveStatus.SHORTAGE] * 2
    assert sorted(calls) == [(env.keys.stock("A"), 5), (env.keys.stock("B"), 5)]
    assert env.level("A", "W1") == (3, 3) and env.level("B", "W1") == (10, 3)
    ledger = await env.aclient.xrange(env.keys.ledger("A"))
    assert [e["ref"] for _, e in ledger if e["kind"] == "reserve"] == ["o0", "o1", "o2"]
    assert env.clean()
