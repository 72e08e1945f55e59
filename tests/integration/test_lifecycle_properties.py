"""Property test of the order lifecycle on real Redis: random interleavings of WMS answers,
after-sales requests, operator actions and redeliveries over a few orders must never break
the stock (verify: figures = ledger, reserved = open reservations, in transit = shipments,
nothing negative), never move an order along a transition the state machine does not have,
and a redelivered input must change nothing."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.lifecycle import ALLOWED
from order.plan import BatchResult
from order.route import RoutingTable
from state.keys import Keys
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
from tests.integration.test_pipeline import Feed, own_order, wms_answer

pytestmark = pytest.mark.integration

WMS_KINDS = list(WmsEventKind)
ACTIONS = [OperatorActionKind.CANCEL, OperatorActionKind.RELEASE_HOLD]
IDLE = {OrderState.HELD, OrderState.REJECTED, OrderState.CANCELLED}
AFTERSALES = [
    AfterSalesKind.CANCEL,
    AfterSalesKind.RETURN,
    AfterSalesKind.REFUND,
    AfterSalesKind.EXCHANGE,
]


class Lifecycle(RuleBasedStateMachine):
    """A handful of orders over two warehouses, driven by whatever hypothesis picks."""

    base: Settings

    @initialize()
    def start(self) -> None:
        self.settings = self.base.model_copy(update={"redis_prefix": f"p{uuid.uuid4().hex[:8]}"})
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        routing = RoutingTable.load(self.settings.config_dir / "warehouses.toml")
        self.pipeline = OrderPipeline(self.settings, self.client, routing, AdapterContext())
        self.pipeline.decisions.promotions = None
        load_stock(
            connect(self.settings),
            Keys(self.settings.redis_prefix),
            [StockRow("A", "WH-SH", 6), StockRow("A", "WH-BJ", 6), StockRow("B", "WH-SH", 4)],
        )
        self.orders: list[str] = []
        self.commands: list[FulfilmentCommand] = []
        self.inputs: list[Any] = []  # everything applied, for redeliveries
        self.feed = Feed()

    def run(self, coro: Any) -> BatchResult:
        return self.loop.run_until_complete(coro)

    def absorb(self, result: BatchResult) -> None:
        for topic, _, value in result.outputs:
            if topic.endswith("fulfilment.commands"):
                self.commands.append(FulfilmentCommand.model_validate_json(value))

    @rule(a=st.integers(1, 4), b=st.integers(0, 2))
    def new_order(self, a: int, b: int) -> None:
        lines = {"A": a} | ({"B": b} if b else {})
        order = own_order(f"P{len(self.orders)}", lines)
        raw = self.feed.raw(order)
        self.orders.append(order.order_id)
        self.inputs.append(("raw", raw))
        self.absorb(self.run(self.pipeline.process([raw])))

    @rule(data=st.data(), kind=st.sampled_from(WMS_KINDS))
    def wms_answers(self, data: st.DataObject, kind: WmsEventKind) -> None:
        if not self.commands:
            return
        command = data.draw(st.sampled_from(self.commands))
        lines = command.lines[:1]
        if kind is WmsEventKind.SHORT_PICK and lines:
            lines = [CommandLine(line_id=lines[0].line_id, sku=lines[0].sku, quantity=1)]
        event = wms_answer(
            command,
            kind,
            lines=lines,
            carrier="SF",
            tracking_number="SF1" if kind is WmsEventKind.SHIPPED else "",
            sellable=data.draw(st.booleans()),
        )
        self.inputs.append(("wms", event))
        self.absorb(self.run(self.pipeline.apply_wms_events([event])))

    @rule(data=st.data(), kind=st.sampled_from(AFTERSALES))
    def customer_asks(self, data: st.DataObject, kind: AfterSalesKind) -> None:
        if not self.orders:
            return
        request = AfterSalesRequest(
            request_id=uuid.uuid4().hex,
            order_id=data.draw(st.sampled_from(self.orders)),
            kind=kind,
            exchange_sku=data.draw(st.sampled_from(["", "A", "B"])),
            at=datetime.now(UTC),
        )
        self.inputs.append(("aftersales", request))
        self.absorb(self.run(self.pipeline.apply_aftersales([request])))

    @rule(
        data=st.data(),
        kind=st.sampled_from([OperatorActionKind.CANCEL, OperatorActionKind.RELEASE_HOLD]),
    )
    def operator_acts(self, data: st.DataObject, kind: OperatorActionKind) -> None:
        if not self.orders:
            return
        action = OperatorAction(
            action_id=uuid.uuid4().hex,
            order_id=data.draw(st.sampled_from(self.orders)),
            kind=kind,
            actor="prop",
            at=datetime.now(UTC),
        )
        self.inputs.append(("action", action))
        self.absorb(self.run(self.pipeline.apply_actions([action])))

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """Kafka hands an input over again: the same outputs, and no figure moves."""
        if not self.inputs:
            return
        kind, item = data.draw(st.sampled_from(self.inputs))
        keys = Keys(self.settings.redis_prefix)
        before = {sku: connect(self.settings).hgetall(keys.stock(sku)) for sku in ("A", "B")}
        apply = {
            "raw": self.pipeline.process,
            "wms": self.pipeline.apply_wms_events,
            "aftersales": self.pipeline.apply_aftersales,
            "action": self.pipeline.apply_actions,
        }[kind]
        self.run(apply([item]))
        after = {sku: connect(self.settings).hgetall(keys.stock(sku)) for sku in ("A", "B")}
        assert after == before

    @invariant()
    def stock_reconciles(self) -> None:
        if not hasattr(self, "settings"):
            return
        check = verify(connect(self.settings), Keys(self.settings.redis_prefix))
        assert check.ok, check.violations[:3]

    @invariant()
    def every_move_is_in_the_table(self) -> None:
        if not getattr(self, "orders", None):
            return
        loaded = self.loop.run_until_complete(self.pipeline.orders.load_many(self.orders))
        for lr in loaded.values():
            assert lr.record is not None
            moves = [h for h in lr.record.history if h.to_state is not None]
            for prev, nxt in itertools.pairwise(moves):
                assert nxt.to_state in ALLOWED[prev.to_state], (prev.to_state, nxt.to_state)
            seqs = [h.seq for h in lr.record.history]
            assert seqs == sorted(set(seqs)) and seqs[-1] <= lr.record.last_seq
            trail = len(seqs) + sum(h.repeats for h in lr.record.history)
            assert trail + lr.record.history_dropped == lr.record.last_seq
            outbound = [c for c in lr.record.commands if c.kind is CommandKind.OUTBOUND]
            assert len({c.command_id for c in outbound}) == len(outbound)

    @invariant()
    def nothing_waiting_or_ended_holds_stock(self) -> None:
        """A held, rejected or cancelled order keeps no units from other buyers."""
        if not getattr(self, "orders", None):
            return
        loaded = self.loop.run_until_complete(self.pipeline.orders.load_many(self.orders))
        for oid, lr in loaded.items():
            assert lr.record is not None
            if lr.record.state in IDLE:
                held = self.loop.run_until_complete(
                    self.pipeline.stock.reservation(oid, list(lr.record.quantities))
                )
                assert set(held.values()) <= {"-"}, (lr.record.state, held)

    def teardown(self) -> None:
        if hasattr(self, "client"):
            self.loop.run_until_complete(self.client.aclose())
            self.loop.close()


def test_random_lifecycles_keep_stock_and_state_machine_intact(redis_settings: Settings) -> None:
    Lifecycle.base = redis_settings
    run = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )(Lifecycle).TestCase
    run().runTest()
