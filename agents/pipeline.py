"""The order path for a batch of raw inputs: normalise -> dedupe -> audit -> reserve/route ->
fulfil, with Redis as the only state and Kafka outputs returned to the caller.

No Faust here: the intake agent hands a batch in and sends what comes out, so the whole path
is tested against a real Redis without a broker. Round trips per batch: one to load records,
one pipelined Lua call per order for reservations, one pipelined CAS save. An order that
appears twice in one batch is processed in a later round, so its inputs apply in order.
"""

from __future__ import annotations

import logging
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis

from agents.audit import PASS, AuditContext, Verdict, audit
from agents.dedupe import Intake, classify
from agents.fulfil import cancel_commands, outbound_commands
from agents.lifecycle import TERMINAL, IllegalTransition, can_move, record_event
from agents.normalise import RawInput, normalise
from agents.route import RoutingTable
from ops.settings import Settings
from state.allocation import ShortagePolicy
from state.keys import Keys
from state.orders import LoadedRecord, OrderRecord, OrderStore
from state.reservations import Reservation, ReserveRequest, ReserveStatus, StockEngine
from streams import topics
from streams.adapters.base import AdapterContext
from streams.messages import (
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OperatorAction,
    OperatorActionKind,
    OrderEvent,
    OrderState,
)
from streams.models import ChannelStatus, Order

log = logging.getLogger(__name__)

Output = tuple[str, str, str]  # topic, key, JSON value
SKU_CACHE_SECONDS = 2.0
MAX_CAS_ROUNDS = 5
T = TypeVar("T")


@dataclass
class Plan:
    """What one input does to one order, built up across the batch's phases."""

    source: Any  # what to process again after a lost race: (RawInput, Order) or an action
    input_id: str
    record: OrderRecord
    expected_version: int
    messages: list[OrderEvent | FulfilmentCommand] = field(default_factory=list)
    reserve: ReserveRequest | None = None
    release: bool = False
    release_reason: str = "cancelled_at_channel"
    actor: str = "system"
    busy: bool = False  # another delivery of this order holds its reservation saga: redo later


@dataclass
class BatchResult:
    outputs: list[Output] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class OrderPipeline:
    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        routing: RoutingTable,
        adapter_ctx: AdapterContext,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.client = client
        self.orders = OrderStore(client, self.keys)
        self.stock = StockEngine(client, self.keys)
        self.routing = routing
        self.adapter_ctx = adapter_ctx
        self.shop_policies: dict[str, ShortagePolicy] = load_shop_policies(settings)
        self.events_topic = topics.ORDER_EVENTS.name(settings)
        self.commands_topic = topics.FULFILMENT_COMMANDS.name(settings)
        self.dlq_topic = topics.DLQ.name(settings)
        self._skus: frozenset[str] = frozenset()
        self._skus_at = 0.0

    async def process(self, raws: Sequence[RawInput]) -> BatchResult:
        result = BatchResult()
        pending: list[tuple[RawInput, Order]] = []
        for raw in raws:
            result.counts["inputs"] += 1
            parsed = normalise(raw, self.adapter_ctx)
            if isinstance(parsed, DlqRecord):
                result.counts["dlq"] += 1
                result.outputs.append(
                    (self.dlq_topic, raw.key or raw.input_id, parsed.model_dump_json())
                )
            else:
                pending.append((raw, parsed))
        await self._apply_in_rounds(pending, lambda item: item[1].order_id, self._intake, result)
        return result

    async def _audit_context(self) -> AuditContext:
        now = time.monotonic()
        if now - self._skus_at > SKU_CACHE_SECONDS:
            self._skus = frozenset(await self.client.smembers(self.keys.skus))
            self._skus_at = now
        return AuditContext(self._skus, self.settings.max_line_quantity)

    async def _apply_in_rounds(
        self,
        items: list[T],
        order_of: Callable[[T], str],
        plan_for: Callable[[T, LoadedRecord, AuditContext, datetime, BatchResult], Plan | None],
        result: BatchResult,
    ) -> None:
        """The one loop for every kind of input: each order at most once per round (so its
        inputs apply in order), one load and one CAS save per round, and inputs that lost a
        race go again on the fresh record."""
        ctx = await self._audit_context()
        pending = list(items)
        for _ in range(MAX_CAS_ROUNDS + len(items)):
            if not pending:
                return
            batch, later = first_per_order(pending, order_of)
            loaded = await self.orders.load_many([order_of(item) for item in batch])
            now = datetime.now(UTC)
            plans = [
                plan
                for item in batch
                if (plan := plan_for(item, loaded[order_of(item)], ctx, now, result))
            ]
            pending = await self._finish(plans, now, result) + later
        raise RuntimeError("order records keep changing under this worker; giving up batch")

    async def _finish(self, plans: list[Plan], now: datetime, result: BatchResult) -> list[Any]:
        """Reserve, release, CAS-save and emit; returns the sources to process again (lost a
        CAS race or found the order's saga busy)."""
        await self._reserve(plans, now, result)
        await self._release(plans, now, result)
        again: list[Any] = []
        for plan in [p for p in plans if p.busy]:
            result.counts["saga_busy"] += 1
            again.append(plan.source)
        plans = [p for p in plans if not p.busy]
        for plan in plans:
            plan.record.remember_outputs(plan.input_id, [self._output(m) for m in plan.messages])
        saved = await self.orders.save_many([(p.record, p.expected_version) for p in plans])
        for plan, ok in zip(plans, saved, strict=True):
            if ok:
                result.outputs.extend(plan.record.outbox[plan.input_id])
            else:
                result.counts["cas_conflicts"] += 1
                again.append(plan.source)
        return again

    async def apply_actions(self, actions: Sequence[OperatorAction]) -> BatchResult:
        """Operator decisions (release a hold, cancel), applied like any input: same CAS, same
        outbox, so a redelivered action is applied once and lands in the trail with its actor."""
        result = BatchResult()
        await self._apply_in_rounds(
            list(actions), lambda action: action.order_id, self._action_plan, result
        )
        return result

    def _action_plan(
        self,
        action: OperatorAction,
        loaded: LoadedRecord,
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> Plan | None:
        result.counts[f"action_{action.kind.value}"] += 1
        if loaded.record is None:
            result.counts["action_unknown_order"] += 1
            log.warning(
                "operator action %s for unknown order %s", action.action_id, action.order_id
            )
            return None
        input_id = f"action:{action.action_id}"
        if input_id in loaded.record.outbox:
            result.outputs.extend(loaded.record.outbox[input_id])
            return None
        record = loaded.record.model_copy(deep=True)
        plan = Plan(action, input_id, record, loaded.version, actor=action.actor)
        state = record.state
        if action.kind is OperatorActionKind.RELEASE_HOLD and state is OrderState.HELD:
            plan.messages.append(
                record_event(
                    record,
                    EventKind.HOLD_RELEASED,
                    now,
                    reason=record.hold_reason,
                    detail=action.reason,
                    actor=action.actor,
                )
            )
            self._decide(plan, ctx, now, override_holds=True)
        elif (
            action.kind is OperatorActionKind.EXPIRE_UNPAID
            and state is OrderState.HELD
            and record.hold_reason == "unpaid"
        ):
            plan.release = True
            plan.release_reason = "unpaid_timeout"
        elif action.kind is OperatorActionKind.CANCEL and can_move(state, OrderState.CANCELLED):
            plan.release = True
            plan.release_reason = "cancelled_by_operator"
        else:
            result.counts["action_refused"] += 1
            plan.messages.append(
                record_event(
                    record,
                    EventKind.ACTION_REFUSED,
                    now,
                    reason=action.kind.value,
                    detail=f"not applicable to a {state.value} order",
                    actor=action.actor,
                )
            )
        return plan

    def _intake(
        self,
        item: tuple[RawInput, Order],
        loaded: LoadedRecord,
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> Plan | None:
        raw, order = item
        input_id = f"{raw.input_id}:{order.fingerprint()[:12]}"
        intake = classify(loaded.record, order, input_id)
        result.counts[intake.value] += 1
        if intake is Intake.REDELIVERY:
            assert loaded.record is not None
            result.outputs.extend(loaded.record.outbox[input_id])
            return None
        if loaded.record is None:
            record = OrderRecord(
                order_id=order.order_id,
                state=OrderState.RECEIVED,
                order=order,
                fingerprint=order.fingerprint(),
            )
        else:
            record = loaded.record.model_copy(deep=True)
        plan = Plan(item, input_id, record, loaded.version)
        if intake is Intake.NEW:
            plan.messages.append(
                record_event(
                    record,
                    EventKind.RECEIVED,
                    now,
                    to_state=OrderState.RECEIVED,
                    with_snapshot=True,
                )
            )
            self._decide(plan, ctx, now)
        elif intake is Intake.DUPLICATE:
            record.duplicates += 1
            plan.messages.append(
                record_event(record, EventKind.DUPLICATE, now, reason="same content pushed again")
            )
        elif intake is Intake.STALE:
            plan.messages.append(
                record_event(record, EventKind.STALE, now, reason="older than the version held")
            )
        else:
            self._apply_update(plan, order, ctx, now)
        return plan

    def _apply_update(self, plan: Plan, order: Order, ctx: AuditContext, now: datetime) -> None:
        record = plan.record
        record.order = order
        record.fingerprint = order.fingerprint()
        plan.messages.append(record_event(record, EventKind.UPDATED, now, with_snapshot=True))
        if record.state in TERMINAL:
            return
        if order.channel_status is ChannelStatus.CANCELLED:
            plan.release = True
        elif record.state is OrderState.HELD:
            self._decide(plan, ctx, now)

    def _decide(
        self, plan: Plan, ctx: AuditContext, now: datetime, *, override_holds: bool = False
    ) -> None:
        """Audit, then either hold/reject or ask for a reservation. An operator's release
        overrides holds (a person checked the order); rejects still apply."""
        record, order = plan.record, plan.record.order
        if order.channel_status is ChannelStatus.CANCELLED:
            plan.messages.append(
                record_event(
                    record,
                    EventKind.CANCELLED,
                    now,
                    to_state=OrderState.CANCELLED,
                    reason="cancelled_at_channel",
                )
            )
            return
        verdict = audit(order, ctx)
        if verdict.verdict is Verdict.HOLD and override_holds:
            verdict = PASS
        if verdict.verdict is Verdict.PASS:
            plan.reserve = ReserveRequest(
                order.order_id,
                order.quantity_by_sku,
                self.routing.candidates(order),
                self.policy_for(order),
                shop=f"{order.channel.value}/{order.shop_id}",  # its channel quotas apply
            )
        elif verdict.verdict is Verdict.HOLD:
            self._hold(plan, verdict.reason, verdict.detail, now)
        else:
            record.reject_reason = verdict.reason
            plan.messages.append(
                record_event(
                    record,
                    EventKind.REJECTED,
                    now,
                    to_state=OrderState.REJECTED,
                    reason=verdict.reason,
                    detail=verdict.detail,
                )
            )

    def _hold(self, plan: Plan, reason: str, detail: str, now: datetime) -> None:
        record = plan.record
        if record.state is OrderState.HELD and record.hold_reason == reason:
            return  # still held for the same reason: nothing new to say
        record.hold_reason = reason
        plan.messages.append(
            record_event(
                record, EventKind.HELD, now, to_state=OrderState.HELD, reason=reason, detail=detail
            )
        )

    async def _reserve(self, plans: list[Plan], now: datetime, result: BatchResult) -> None:
        wanted = [p for p in plans if p.reserve is not None]
        reservations = await self.stock.reserve_many([p.reserve for p in wanted if p.reserve])
        for plan, reservation in zip(wanted, reservations, strict=True):
            self._after_reserve(plan, reservation, now, result)

    def _after_reserve(
        self, plan: Plan, reservation: Reservation, now: datetime, result: BatchResult
    ) -> None:
        record = plan.record
        if reservation.status is ReserveStatus.BUSY:
            plan.busy = True
            return
        if reservation.status is ReserveStatus.SHORTAGE:
            result.counts["shortage"] += 1
            if self.policy_for(record.order) is ShortagePolicy.REJECT:
                record.reject_reason = "out_of_stock"
                plan.messages.append(
                    record_event(
                        record,
                        EventKind.REJECTED,
                        now,
                        to_state=OrderState.REJECTED,
                        reason="out_of_stock",
                    )
                )
            else:
                self._hold(plan, "out_of_stock", "no warehouse can serve every line", now)
            return
        if not reservation.active:
            self._hold(plan, "reservation_released", "stock was released earlier", now)
            return
        record.warehouse = "+".join(reservation.warehouses)
        record.allocations = list(reservation.allocations)
        record.hold_reason = ""
        if len(reservation.warehouses) > 1:
            result.counts["split"] += 1
        plan.messages.append(
            record_event(
                record,
                EventKind.RESERVED,
                now,
                to_state=OrderState.RESERVED,
                allocations=record.allocations,
            )
        )
        commands = outbound_commands(record, now)
        plan.messages.extend(commands)
        plan.messages.append(
            record_event(
                record,
                EventKind.RELEASED,
                now,
                to_state=OrderState.RELEASED,
                reason="outbound " + " ".join(c.command_id for c in commands),
            )
        )

    async def _release(self, plans: list[Plan], now: datetime, result: BatchResult) -> None:
        """Cancellations (channel or operator): give stock back, tell the WMS if it already
        knew."""
        for plan in (p for p in plans if p.release):
            record = plan.record
            released = await self.stock.release(record.order_id, list(record.order.quantity_by_sku))
            was_released_to_wms = record.state is OrderState.RELEASED
            try:
                plan.messages.append(
                    record_event(
                        record,
                        EventKind.CANCELLED,
                        now,
                        to_state=OrderState.CANCELLED,
                        reason=plan.release_reason,
                        allocations=released,
                        actor=plan.actor,
                    )
                )
            except IllegalTransition as exc:
                result.counts["illegal_transitions"] += 1
                log.warning("refused: %s", exc)
                continue
            if was_released_to_wms:
                plan.messages.extend(cancel_commands(record, now))
            result.counts["cancelled"] += 1

    def policy_for(self, order: Order) -> ShortagePolicy:
        """Per-shop shortage policy from config/shops.toml, else the global default."""
        return self.shop_policies.get(
            f"{order.channel.value}/{order.shop_id}", ShortagePolicy(self.settings.shortage_policy)
        )

    def _output(self, message: OrderEvent | FulfilmentCommand) -> Output:
        topic = self.commands_topic if isinstance(message, FulfilmentCommand) else self.events_topic
        return (topic, message.order_id, message.model_dump_json())


def load_shop_policies(settings: Settings) -> dict[str, ShortagePolicy]:
    """``[shops."CHANNEL/SHOP"] shortage_policy = "split"`` entries of config/shops.toml."""
    path = settings.config_dir / "shops.toml"
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {
        shop: ShortagePolicy(entry["shortage_policy"])
        for shop, entry in data.get("shops", {}).items()
        if "shortage_policy" in entry
    }


def first_per_order(items: list[T], order_of: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """First occurrence of each order id now, later ones in a later round, order kept."""
    seen: set[str] = set()
    now: list[T] = []
    later: list[T] = []
    for item in items:
        oid = order_of(item)
        (later if oid in seen else now).append(item)
        seen.add(oid)
    return now, later
