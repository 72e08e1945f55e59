"""Order records in a given state, and the pure order rules to apply inputs to them, for unit
tests of the WMS loop and after-sales (order/wms.py, order/aftersales.py) without Redis: a
record is built directly (its parcels tracked as the pipeline would have sent them), the rules
are a ``Decisions`` over the repository's routing config with a fixed clock, and each input is
applied to a fresh ``Plan`` whose messages, stock effects and refusals the tests read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from order import aftersales, wms
from order.audit import AuditContext
from order.decisions import Decisions
from order.fulfil import outbound_commands
from order.lifecycle import record_event
from order.plan import BatchResult, Plan
from order.record import CommandRef, CommandStatus, OrderRecord, Then
from order.reservation import Reservation, ReserveStatus, StockEffect
from order.route import RoutingTable
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    Allocation,
    ChannelUpdate,
    CommandKind,
    EventKind,
    FulfilmentCommand,
    OrderEvent,
    OrderState,
    WmsEvent,
    WmsEventKind,
    make_id,
)
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
T0 = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
CLOCK_S = 1_800_000_000.0  # what the fixed clock says (unix seconds)
CLOSE_AFTER_S = 7 * 86400.0
PRICE = Decimal("10.00")  # every unit; a line pays PRICE x its quantity
SKUS = frozenset({"A", "B", "C"})


@cache
def routing() -> RoutingTable:
    return RoutingTable.load(CONFIG / "warehouses.toml")


def decisions() -> Decisions:
    """The repository's routing, no promotions, a clock that does not move."""
    return Decisions(routing=routing(), clock=lambda: CLOCK_S, close_after_s=CLOSE_AFTER_S)


def audit_context() -> AuditContext:
    return AuditContext(known_skus=SKUS)


def address(
    province: str = "浙江省", code: str = "ZJ", city: str = "杭州市", street: str = "文三路 1 号"
) -> Address:
    return Address(
        province=province,
        province_code=code,
        city=city,
        street=street,
        name="张三",
        phone="13800000000",
    )


def make_order(
    lines: Mapping[str, int], *, ext: str = "W1", paid_total: Decimal | None = None, **kw: Any
) -> Order:
    """An own-shop order, line L<i> per sku in ``lines``, each unit paid PRICE."""
    order_lines = [
        OrderLine(
            line_id=f"L{i}",
            sku=sku,
            quantity=qty,
            unit_price=PRICE,
            paid_amount=PRICE * qty,
        )
        for i, (sku, qty) in enumerate(lines.items(), start=1)
    ]
    total = sum((ln.paid_amount for ln in order_lines), Decimal("0"))
    return Order(
        order_id=make_order_id("own", "shop1", ext),
        channel=Channel.OWN,
        shop_id="shop1",
        external_id=ext,
        channel_status=ChannelStatus.PAID,
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        buyer=Buyer(id="b1", name="张三"),
        address=kw.pop("address", address()),
        lines=order_lines,
        payment=Payment(
            status=PaymentStatus.PAID, paid_total=total if paid_total is None else paid_total
        ),
        total=kw.pop("total", total),
        **kw,
    )


def record_in(
    state: OrderState,
    lines: Mapping[str, int],
    *,
    parcels: Mapping[str, Mapping[str, int]] | None = None,
    status: CommandStatus = CommandStatus.SENT,
    order: Order | None = None,
) -> OrderRecord:
    """An order in ``state``, reserved over ``parcels`` (warehouse -> sku -> units; default:
    everything in WH-SH), with one outbound per warehouse tracked in ``status`` unless the
    state is before release. Its trail has begun, so every move is checked."""
    order = order or make_order(lines)
    parcels = parcels or {"WH-SH": dict(lines)}
    record = OrderRecord(
        order_id=order.order_id,
        state=OrderState.RECEIVED,
        order=order,
        fingerprint=order.fingerprint(),
        warehouse="+".join(sorted(parcels)),
        carrier="SF",
        allocations=[
            Allocation(sku=sku, warehouse=wh, quantity=qty)
            for wh, units in sorted(parcels.items())
            for sku, qty in units.items()
        ],
    )
    record_event(record, EventKind.RECEIVED, T0)
    if state not in (OrderState.RECEIVED, OrderState.AUDITED, OrderState.HELD):
        if state not in (OrderState.RESERVED, OrderState.ROUTED):
            outbound_commands(record, T0)
            for ref in record.commands:
                ref.status = status
    else:
        record.allocations = []
        record.warehouse = ""
    record.state = state
    return record


def outbound(record: OrderRecord, warehouse: str = "WH-SH") -> CommandRef:
    """The order's newest outbound from ``warehouse``."""
    return [
        c for c in record.commands if c.kind is CommandKind.OUTBOUND and c.warehouse == warehouse
    ][-1]


def commands_of(record: OrderRecord, kind: CommandKind) -> list[CommandRef]:
    return [c for c in record.commands if c.kind is kind]


def answer(record: OrderRecord, ref: CommandRef, kind: WmsEventKind, **fields: Any) -> WmsEvent:
    """What the WMS says about a command (``n`` tells two answers of one kind apart)."""
    n = fields.pop("n", 1)
    return WmsEvent(
        event_id=make_id("W", ref.command_id, kind.value, n),
        command_id=ref.command_id,
        order_id=record.order_id,
        kind=kind,
        warehouse=ref.warehouse,
        at=T0,
        **fields,
    )


def request(
    record: OrderRecord, kind: AfterSalesKind, n: int = 1, **fields: Any
) -> AfterSalesRequest:
    return AfterSalesRequest(
        request_id=f"R-{kind.value}-{n}",
        order_id=record.order_id,
        kind=kind,
        requested_by="cs:bob",
        at=T0,
        **fields,
    )


@dataclass
class Desk:
    """Inputs applied one at a time to one record, as the pipeline would, without Redis: each
    gets a fresh plan (``last``) and its own counters; ``effects`` gathers every stock effect
    saved so far."""

    record: OrderRecord
    steps: Decisions = field(default_factory=decisions)
    last: Plan | None = None
    result: BatchResult = field(default_factory=BatchResult)
    effects: list[StockEffect] = field(default_factory=list)
    inputs: int = 0

    def _plan(self, actor: str = "system") -> Plan:
        self.inputs += 1
        self.result = BatchResult()
        plan = Plan(None, f"in-{self.inputs}", self.record, self.record.version, actor=actor)
        self.last = plan
        return plan

    def _done(self, plan: Plan) -> Plan:
        self.effects.extend(plan.effects)
        return plan

    def wms(self, ref: CommandRef, kind: WmsEventKind, **fields: Any) -> Plan:
        """The WMS answers about ``ref``."""
        return self.hear(answer(self.record, ref, kind, **fields))

    def hear(self, event: WmsEvent, keyed: CommandRef | None = None) -> Plan:
        plan = self._plan("wms")
        wms.apply_event(self.steps, plan, event, keyed, T0, self.result)
        return self._done(plan)

    def ask(self, kind: AfterSalesKind, n: int = 1, **fields: Any) -> Plan:
        """The buyer asks (``n`` tells two requests of one kind apart)."""
        return self.submit(request(self.record, kind, n, **fields))

    def submit(self, req: AfterSalesRequest) -> Plan:
        plan = self._plan(req.requested_by)
        aftersales.apply_request(self.steps, plan, req, audit_context(), T0, self.result)
        return self._done(plan)

    def resend(self, actor: str = "ops:ann") -> Plan:
        """A person cleared a WMS exception: the failed parcels go out again."""
        plan = self._plan(actor)
        wms.resend_outbound(self.steps, plan, T0)
        return self._done(plan)

    def release_hold(self, actor: str = "ops:ann") -> Plan:
        """A person checked a held order: audited again, holds overridden."""
        plan = self._plan(actor)
        self.steps.decide(plan, audit_context(), T0, override_holds=True)
        return self._done(plan)

    def reserved(self, plan: Plan, reservation: Reservation) -> Plan:
        """The continuation of ``plan``'s saved wish to reserve, now that it is known: route
        the order, or ship the exchange (agents/pipeline.py does the same)."""
        intent = plan.reserve
        assert intent is not None
        follow = Plan(None, plan.input_id, self.record, self.record.version, actor=plan.actor)
        self.last = follow
        if intent.then is Then.EXCHANGE:
            aftersales.exchange_reserved(self.steps, follow, intent, reservation, T0, self.result)
        else:
            self.steps.route(follow, reservation, T0, self.result)
        return self._done(follow)


def granted(shipment: str, units: Mapping[str, Mapping[str, int]]) -> Reservation:
    """A reservation that got ``units`` (warehouse -> sku -> units)."""
    return Reservation(
        shipment,
        ReserveStatus.RESERVED,
        [
            Allocation(sku=sku, warehouse=wh, quantity=qty)
            for wh, per_sku in sorted(units.items())
            for sku, qty in sorted(per_sku.items())
        ],
    )


def short(shipment: str) -> Reservation:
    return Reservation(shipment, ReserveStatus.SHORTAGE)


def events(plan: Plan) -> list[OrderEvent]:
    return [m for m in plan.messages if isinstance(m, OrderEvent)]


def kinds(plan: Plan) -> list[EventKind]:
    return [e.kind for e in events(plan)]


def sent(plan: Plan) -> list[FulfilmentCommand]:
    return [m for m in plan.messages if isinstance(m, FulfilmentCommand)]


def updates(plan: Plan) -> list[ChannelUpdate]:
    return [m for m in plan.messages if isinstance(m, ChannelUpdate)]


def lines_of(command: FulfilmentCommand | CommandRef) -> list[tuple[str, int]]:
    return sorted((ln.sku, ln.quantity) for ln in command.lines)
