"""A model of concurrency, not just examples: the intake, operator, after-sales and WMS
pipelines of two workers run at the same time against the real Redis on the same orders, and
a scheduler drawn by hypothesis decides which of them goes on at every Redis round trip (so
between a stock effect and the save that records it, between a save and its effects, between
two sagas of one order). After every step the books must balance:

- units on hand = units received - units the WMS shipped (per the order records) - units
  written off as missing;
- reserved = the open reservations, in transit = the shipments (verify), and every order in a
  state that holds stock holds exactly its units while no other order does;
- an order's state agrees with its commands (released or later has an outbound, a held,
  rejected or cancelled one has none live);
- the shop's channel quota plus what open and sold reservations charged it = the quota given.

The scheduler gates every pipeline ``execute`` of the pipelines' Redis clients: one task runs
at a time between two round trips, chosen the way the drawn schedule says, so an interleaving
found once is found again from its seed.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.client import Pipeline

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.allocation import parse_parts
from order.plan import BatchResult
from order.promotions import Promotions
from order.record import LIVE_OUTBOUND
from order.route import RoutingTable
from state.keys import Keys
from state.orders import LoadedRecord
from state.redis import connect
from state.stock import StockRow, load_stock
from state.verify import verify
from streams.channels.base import AdapterContext
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    CommandKind,
    CommandLine,
    FulfilmentCommand,
    OperatorAction,
    OperatorActionKind,
    OrderState,
    WmsEventKind,
)
from streams.models import ChannelStatus, Order
from tests.integration.test_pipeline import Feed, own_order, wms_answer

pytestmark = pytest.mark.integration

S = OrderState
# C is stocked only in Beijing: an order with C and A or B ships as two parcels (split), so a
# later decision can touch one sku of an order and not the other.
STOCK = {"A": {"WH-SH": 3, "WH-BJ": 2}, "B": {"WH-SH": 2}, "C": {"WH-BJ": 2}, "G": {"WH-SH": 1}}
# Buying B earns a gift G, of which there is one: gifts that do not fit are left out (the
# reservation's fallback), a path a decision may be carried out along twice.
GIFTS = Promotions.model_validate(
    {"promotions": [{"id": "B-GIFT", "kind": "buy", "sku": "B", "gift_sku": "G"}]}
)
QUOTA_SKU, QUOTA = "A", 4  # own/shop1 may sell 4 of the 5 A
SHOP = "own/shop1"
# States in which an order holds its units reserved (all of them, nothing shipped yet).
HOLDS_ALL = frozenset({S.RESERVED, S.ROUTED, S.RELEASED, S.ACCEPTED, S.PICKED})
# States in which an order may hold some units (a parcel out, a stop asked, a person needed).
MAY_HOLD = HOLDS_ALL | {S.INTERCEPTING, S.EXCEPTION, S.PARTIALLY_SHIPPED}
HOLDS_NONE = frozenset({S.HELD, S.REJECTED, S.CANCELLED, S.RECEIVED})

CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("task", default=None)


class Scheduler:
    """Lets one task at a time run from one Redis round trip to the next.

    Which one is chosen the way probabilistic concurrency testing (PCT) does: every task has a
    drawn priority and the highest waiting one runs; at each drawn change point the task about
    to run drops below all others. Bugs that need a task to stop at one spot while others run
    past it (``depth`` spots) are found with good probability at few change points, where a
    uniform random choice at every round trip would almost never produce them."""

    def __init__(
        self,
        priorities: list[int],
        changes: frozenset[int],
        picks: list[int] | None = None,
        crash: tuple[int, int] | None = None,
    ) -> None:
        self.priorities = priorities
        self.changes = changes
        self.crash = crash  # (job, round trip): that job's worker dies there, Redis unanswered
        self.passed: Counter[str] = Counter()
        self.picks = picks  # instead of PCT: the n-th choice is picks[n] among the waiting
        self.rank: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.moved = asyncio.Event()
        self.trace: list[str] = []

    async def gate(self) -> None:
        name = CURRENT.get()
        if name is None:
            return
        self.passed[name] += 1
        if self.crash is not None and (int(name.split(":")[0]), self.passed[name]) == self.crash:
            raise WorkerDied(name)
        future = asyncio.get_running_loop().create_future()
        self.waiting[name] = future
        self.moved.set()
        await future

    def choose(self) -> str:
        step = len(self.trace)
        if self.picks is not None:
            names = sorted(self.waiting)
            return (
                names[self.picks[step % len(self.picks)] % len(names)] if self.picks else names[0]
            )
        name = max(self.waiting, key=lambda n: self.rank[n])
        if step in self.changes:
            self.rank[name] = -1.0 - step  # below every task, and below earlier demotions
            name = max(self.waiting, key=lambda n: self.rank[n])
        return name

    async def run(self, jobs: dict[str, Coroutine[Any, Any, BatchResult]]) -> dict[str, Any]:
        tasks: dict[str, asyncio.Task[BatchResult]] = {}
        for i, (name, job) in enumerate(jobs.items()):
            drawn = self.priorities[i % len(self.priorities)] if self.priorities else i
            self.rank[name] = float(drawn)
            task = asyncio.get_running_loop().create_task(job, context=_context(name))
            task.add_done_callback(lambda _: self.moved.set())
            tasks[name] = task

        def all_stopped() -> bool:
            return all(n in self.waiting or t.done() for n, t in tasks.items())

        while True:
            while not all_stopped():
                self.moved.clear()
                if not all_stopped():
                    await self.moved.wait()
            if not self.waiting:
                break
            name = self.choose()
            self.trace.append(name)
            self.waiting.pop(name).set_result(None)
        return {n: (t.exception() or t.result()) for n, t in tasks.items()}


def _context(name: str) -> contextvars.Context:
    ctx = contextvars.copy_context()
    ctx.run(CURRENT.set, name)
    return ctx


class WorkerDied(Exception):
    """The worker running a job died at a Redis round trip (before sending it)."""


class GatedPipeline(Pipeline):  # type: ignore[type-arg]
    scheduler: Scheduler | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.scheduler is not None:
            await self.scheduler.gate()
        return await super().execute(raise_on_error)


class GatedRedis(aioredis.Redis):
    scheduler: Scheduler | None = None

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:  # type: ignore[override]
        pipe = GatedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.scheduler = self.scheduler
        return pipe


@dataclass
class World:
    """Two workers' pipelines on one Redis prefix, and what was sent to them so far."""

    settings: Settings
    workers: list[OrderPipeline]
    clients: list[GatedRedis]
    orders: dict[str, Order] = field(default_factory=dict)
    commands: list[FulfilmentCommand] = field(default_factory=list)
    inputs: list[tuple[str, Any]] = field(default_factory=list)
    feed: Feed = field(default_factory=Feed)
    minutes: Counter[str] = field(default_factory=Counter)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.redis_prefix)

    def absorb(self, result: Any) -> None:
        assert isinstance(result, BatchResult), f"a worker failed: {result!r}"
        for topic, _, value in result.outputs:
            if topic.endswith("fulfilment.commands"):
                command = FulfilmentCommand.model_validate_json(value)
                if command.command_id not in {c.command_id for c in self.commands}:
                    self.commands.append(command)

    def job(self, worker: int, kind: str, item: Any) -> Coroutine[Any, Any, BatchResult]:
        pipeline = self.workers[worker]
        run = {
            "raw": pipeline.process,
            "action": pipeline.apply_actions,
            "wms": pipeline.apply_wms_events,
            "aftersales": pipeline.apply_aftersales,
        }[kind]
        return run([item])

    def version_of(self, order_id: str, *, paid: bool, cancelled: bool = False) -> Order:
        """A later version of the order as its channel would push it."""
        self.minutes[order_id] += 1
        base = self.orders[order_id]
        lines = {ln.sku: ln.quantity for ln in base.lines}
        status = (
            ChannelStatus.CANCELLED
            if cancelled
            else (ChannelStatus.PAID if paid else ChannelStatus.PENDING_PAYMENT)
        )
        return own_order(
            base.external_id, lines, paid=paid, status=status, minutes=self.minutes[order_id]
        )


# --- what may happen to an order ---------------------------------------------------------

INPUT_KINDS = [
    "pay",
    "expire",
    "cancel",
    "release_hold",
    "channel_cancel",
    "buyer_cancel",
    "wms_accepted",
    "wms_shipped",
    "wms_short_pick",
    "wms_cancelled",
    "wms_exception",
    "redeliver",
]


def make_input(world: World, kind: str, pick: int) -> tuple[str, Any] | None:
    oids = sorted(world.orders)
    oid = oids[pick % len(oids)]
    now = datetime.now(UTC)
    if kind == "pay":
        return "raw", world.feed.raw(world.version_of(oid, paid=True))
    if kind == "channel_cancel":
        return "raw", world.feed.raw(world.version_of(oid, paid=True, cancelled=True))
    if kind in ("expire", "cancel", "release_hold"):
        action_kind = {
            "expire": OperatorActionKind.EXPIRE_UNPAID,
            "cancel": OperatorActionKind.CANCEL,
            "release_hold": OperatorActionKind.RELEASE_HOLD,
        }[kind]
        return "action", OperatorAction(
            action_id=uuid.uuid4().hex,
            order_id=oid,
            kind=action_kind,
            actor="model",
            at=now,
        )
    if kind == "buyer_cancel":
        return "aftersales", AfterSalesRequest(
            request_id=uuid.uuid4().hex, order_id=oid, kind=AfterSalesKind.CANCEL, at=now
        )
    if kind == "redeliver":
        return world.inputs[pick % len(world.inputs)] if world.inputs else None
    if not world.commands:
        return None
    command = world.commands[pick % len(world.commands)]
    wms_kind = {
        "wms_accepted": WmsEventKind.ACCEPTED,
        "wms_shipped": WmsEventKind.SHIPPED,
        "wms_short_pick": WmsEventKind.SHORT_PICK,
        "wms_cancelled": WmsEventKind.CANCELLED,
        "wms_exception": WmsEventKind.EXCEPTION,
    }[kind]
    stop = command.kind in (CommandKind.CANCEL, CommandKind.INTERCEPT)
    if stop != (wms_kind is WmsEventKind.CANCELLED):
        return None  # a stop is answered with cancelled, an outbound with the rest
    lines: list[CommandLine] = []
    if wms_kind is WmsEventKind.SHORT_PICK and command.lines:
        first = command.lines[0]
        lines = [CommandLine(line_id=first.line_id, sku=first.sku, quantity=1)]
    return "wms", wms_answer(
        command,
        wms_kind,
        lines=lines,
        carrier="SF",
        tracking_number="SF1" if wms_kind is WmsEventKind.SHIPPED else "",
    )


# --- the books --------------------------------------------------------------------------


def check_books(world: World, loaded: dict[str, LoadedRecord]) -> None:
    records = {oid: lr.record for oid, lr in loaded.items() if lr.record is not None}
    client = connect(world.settings)
    keys = world.keys
    hashes = {sku: client.hgetall(keys.stock(sku)) for sku in STOCK}
    report = verify(client, keys)
    assert report.ok, report.violations[:3]

    written_off: Counter[str] = Counter()
    for sku in STOCK:
        for _, entry in client.xrange(keys.ledger(sku)):
            if entry.get("kind") == "short_pick":
                written_off[sku] += -int(entry["on_hand"])
    shipped: Counter[str] = Counter()
    for record in records.values():
        for command in record.commands:
            if command.kind is CommandKind.OUTBOUND and command.status.value in (
                "shipped",
                "delivered",
            ):
                for ln in command.lines:
                    if ln.order_id in ("", record.order_id):
                        shipped[ln.sku] += ln.quantity
    for sku, per_wh in STOCK.items():
        on_hand = sum(int(hashes[sku].get(f"on_hand:{wh}", 0)) for wh in per_wh)
        received = sum(per_wh.values())
        assert on_hand == received - shipped[sku] - written_off[sku], (
            f"{sku}: on hand {on_hand}, received {received}, shipped {shipped[sku]}, "
            f"written off {written_off[sku]}: a shipped unit is still on the books"
        )

    for oid, record in records.items():
        held = {sku: hashes.get(sku, {}).get(f"r:{oid}") for sku in record.quantities}
        active = {
            sku: sum(q for _, q in parse_parts(v)) for sku, v in held.items() if v and v != "-"
        }
        where = f"{oid} {record.state.value} holds {active} for {record.quantities}"
        live = [
            c
            for c in record.commands
            if c.kind is CommandKind.OUTBOUND and c.status in LIVE_OUTBOUND
        ]
        if record.state in HOLDS_ALL:
            assert active == record.quantities, where
        if record.state in HOLDS_NONE:
            assert not active, where
            assert not live, f"{where}: live outbound {[c.command_id for c in live]}"
        if active:  # an order holds stock while it may ship, or a parcel of it is still out
            assert record.state in MAY_HOLD or live, where
        if record.state in (S.RELEASED, S.ACCEPTED, S.PICKED):
            assert live, f"{where}: released without a live outbound"
        went = any(
            c.status.value in ("shipped", "delivered") for c in record.commands
        )  # a full commit closes the reservation ('-') too
        if "-" in held.values():
            assert record.state is S.CANCELLED or went, f"{where}: closed for good {held}"
        assert not loaded[oid].unsettled, f"{oid}: unfinished {record.pending}"

    quota_hash = hashes[QUOTA_SKU]
    charged = 0
    for key, value in quota_hash.items():
        if key.startswith("rq:"):
            shop, _, units = value.rpartition("=")
            assert shop == SHOP
            charged += int(units)
    left = int(quota_hash.get(f"quota:{SHOP}", QUOTA))
    assert left + charged == QUOTA, f"quota {left} + charged {charged} != {QUOTA}"


def load_records(world: World, loop: asyncio.AbstractEventLoop) -> dict[str, LoadedRecord]:
    return loop.run_until_complete(world.workers[0].orders.load_many(sorted(world.orders)))


# --- the property -----------------------------------------------------------------------

# PCT priorities and change points, or a uniform choice at every round trip (its picks).
Schedule = tuple[list[int], frozenset[int]] | list[int]
order_lines = st.fixed_dictionaries(
    {"A": st.integers(1, 2)}, optional={"B": st.integers(1, 1), "C": st.integers(1, 1)}
)
# Kinds that race on one order's stock are drawn more often than the rest.
input_kinds = st.sampled_from(
    [
        *INPUT_KINDS,
        *["pay", "expire"] * 3,
        "cancel",
        "wms_shipped",
        "wms_short_pick",
        "buyer_cancel",
    ]
)
schedules = st.one_of(
    st.tuples(st.permutations(list(range(3))), st.frozensets(st.integers(0, 24), max_size=3)),
    st.lists(st.integers(0, 5), min_size=1, max_size=40),
)
crashes = st.one_of(st.none(), st.tuples(st.integers(0, 2), st.integers(1, 20)))
steps = st.lists(
    st.tuples(
        st.lists(
            st.tuples(input_kinds, st.integers(0, 50), st.integers(0, 1)),
            min_size=2,
            max_size=3,
        ),
        schedules,
        crashes,
    ),
    min_size=1,
    max_size=6,
)
Step = tuple[list[tuple[str, int, int]], Schedule, tuple[int, int] | None]


@pytest.fixture(scope="module")
def model_base(infra: Settings) -> Settings:
    return infra


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    orders=st.lists(
        st.tuples(order_lines, st.sampled_from([False, False, True])), min_size=1, max_size=2
    ),
    plan=steps,
)
def test_concurrent_inputs_keep_the_books(
    model_base: Settings, orders: list[tuple[dict[str, int], bool]], plan: list[Step]
) -> None:
    run_model(model_base, orders, plan)


def run_model(base: Settings, orders: list[tuple[dict[str, int], bool]], plan: list[Step]) -> None:
    settings_ = base.model_copy(update={"redis_prefix": f"m{uuid.uuid4().hex[:8]}"})
    loop = asyncio.new_event_loop()
    routing = RoutingTable.load(settings_.config_dir / "warehouses.toml")
    clients = [GatedRedis.from_url(settings_.redis_url, decode_responses=True) for _ in range(2)]
    workers = []
    for client in clients:
        pipeline = OrderPipeline(settings_, client, routing, AdapterContext())
        pipeline.decisions.promotions = GIFTS
        workers.append(pipeline)
    world = World(settings_, workers, clients)
    sync = connect(settings_)
    keys = world.keys
    load_stock(
        sync,
        keys,
        [StockRow(sku, wh, qty) for sku, per_wh in STOCK.items() for wh, qty in per_wh.items()],
    )
    sync.hset(keys.stock(QUOTA_SKU), f"quota:{SHOP}", QUOTA)
    try:
        for i, (lines, paid) in enumerate(orders):
            status = ChannelStatus.PAID if paid else ChannelStatus.PENDING_PAYMENT
            order = own_order(f"M{i}", lines, paid=paid, status=status)
            world.orders[order.order_id] = order
            raw = world.feed.raw(order)
            world.inputs.append(("raw", raw))
            world.absorb(loop.run_until_complete(world.job(0, "raw", raw)))
        check_books(world, load_records(world, loop))
        for inputs, schedule, crash in plan:
            scheduler = (
                Scheduler([], frozenset(), schedule, crash=crash)
                if isinstance(schedule, list)
                else Scheduler(*schedule, crash=crash)
            )
            for client in clients:
                client.scheduler = scheduler
            jobs, made_for = {}, {}
            for n, (kind, pick, worker) in enumerate(inputs):
                made = make_input(world, kind, pick)
                if made is None:
                    continue
                world.inputs.append(made)
                name = f"{n}:{kind}@w{worker}"
                jobs[name], made_for[name] = world.job(worker, *made), (worker, made)
            results = loop.run_until_complete(asyncio.wait_for(scheduler.run(jobs), 60))
            for client in clients:
                client.scheduler = None
            for name, result in results.items():
                if isinstance(result, WorkerDied):  # Kafka hands the input to the other worker
                    worker, made = made_for[name]
                    result = loop.run_until_complete(world.job(1 - worker, *made))
                world.absorb(result)
            check_books(world, load_records(world, loop))
    finally:
        for client in clients:
            loop.run_until_complete(client.aclose())
        loop.close()
        sync.close()


def test_paid_repush_racing_the_unpaid_timer_ships_from_the_books(model_base: Settings) -> None:
    """The reproduction of issue 13 item 1: an unpaid order is held; its paid re-push and the
    unpaid timer's expiry run at once. Both interleavings: the re-push runs up to its save, the
    expiry releases its stock and then either saves first or waits for the re-push's save.
    Whichever wins, the books must balance once the parcel ships."""
    ship: Step = ([("wms_shipped", 0, 0)], ([0], frozenset()), None)
    for changes in (frozenset({4, 6}), frozenset({4}), frozenset({2, 3}), frozenset({3, 5})):
        race: Step = ([("pay", 0, 0), ("expire", 0, 1)], ([1, 0], changes), None)
        run_model(model_base, [({"A": 1}, False)], [race, ship])


def test_short_pick_gives_the_channel_quota_back(model_base: Settings) -> None:
    """Issue 13 item 2: a short pick dropped the reservation but not its quota charge."""
    short: Step = ([("wms_short_pick", 0, 0)], ([0], frozenset()), None)
    cancel: Step = ([("cancel", 0, 0)], ([0], frozenset()), None)
    run_model(model_base, [({"A": 2}, True)], [short, cancel])


def test_a_worker_dying_after_a_gift_fallback_leaves_work_others_finish(
    model_base: Settings,
) -> None:
    """An order whose gift is out of stock: its decision's first request comes up short, the
    fallback (without the gift) reserves, and the deciding worker dies before saving the
    outcome. The other worker, carrying the same decision out again for the redelivered
    input, must conclude the same (it used to read 'superseded' and never finish)."""
    first, second = own_order("M0", {"B": 1}), own_order("M1", {"A": 1, "B": 1})
    pick = sorted([first.order_id, second.order_id]).index(second.order_id)
    for at in range(2, 20):  # the first order took the one gift; the second is paid now
        died: Step = ([("pay", pick, 0)], ([0], frozenset()), (0, at))
        run_model(model_base, [({"B": 1}, True), ({"A": 1, "B": 1}, False)], [died])
