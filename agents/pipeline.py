"""The order path for a batch of inputs: normalise -> dedupe -> audit -> reserve -> route ->
(merge window) -> fulfil, and everything after: operator actions, WMS answers, after-sales
requests. Redis is the only state; Kafka outputs are returned to the caller.

No Faust here: the agents hand a batch in and send what comes out, so the whole life of an
order is tested against a real Redis without a broker.

Decide, save, then do (docs/decisions/0013-decide-then-do.md). An input's plan is made on the
order record as loaded and saved with a compare-and-set on its version; its stock effects and
its wish to reserve travel in the saved record (``pending``) and are carried out only after the
save, fenced by the saved version in every sku's script. A plan that loses the race has done
nothing. A reservation's outcome decides what comes next (release to the WMS, or hold), so it
is followed by a second save: the continuation. Whoever loads a record with pending work
carries it out before deciding anything else about that order; a worker that dies in between
leaves it to the redelivery of its input, to any later input, or to the pending sweeper.

Round trips per round: one to load the records, one pipelined CAS save, then for the plans with
stock work one for their effects, two for a reservation saga and one for the continuation's
save. An order touched twice in one batch is processed in a later round, so its inputs apply
in order; an input that touches several orders (a merged shipment) saves them all or none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis

from agents.counting import count_kinds, count_outputs
from core.settings import Settings
from order import aftersales, wms
from order.allocation import ShortagePolicy
from order.audit import (
    AuditContext,
    AuditRules,
    Velocity,
    load_audit_rules,
)
from order.decisions import Decisions
from order.dedupe import Intake, classify
from order.edits import EDIT_KINDS, apply_edit, with_edits
from order.gates import GATE_REASONS, release_gate
from order.lifecycle import AT_WMS, BEFORE_WMS, CLOSABLE, TERMINAL, record_event
from order.merge import merged_command, waiting_members
from order.plan import BatchResult, Message, Plan
from order.promotions import Promotions, load_promotions
from order.reasons import Reason
from order.record import (
    OrderRecord,
    Output,
    Pending,
    Then,
    effect_seq,
)
from order.reservation import Reservation, ReserveStatus
from order.route import RoutingTable
from order.shops import load_shop_rules
from order.tags import TAG_KINDS, apply_tags
from state.keys import Keys
from state.orders import LoadedRecord, OrderStore, Save
from state.reservations import StockEngine
from state.velocity import record_recent
from streams import topics
from streams.channels import ClosedAtChannel
from streams.channels.base import AdapterContext
from streams.messages import (
    AfterSalesRequest,
    ChannelUpdate,
    DlqReason,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OperatorAction,
    OperatorActionKind,
    OrderState,
    WmsEvent,
)
from streams.models import ChannelStatus, Order, json_with_order
from streams.normalise import RawInput, normalise, to_dlq

log = logging.getLogger(__name__)

SKU_CACHE_SECONDS = 2.0
MAX_CAS_ROUNDS = 5
# How long a DLQ record's first emission time is kept for its redeliveries: a week, the
# retention of the raw topics (a replay from further back finds no input to redeliver).
DLQ_SEEN_TTL_S = 7 * 24 * 3600
T = TypeVar("T")
PlanFor = Callable[[T, dict[str, LoadedRecord], AuditContext, datetime, "BatchResult"], list[Plan]]


@dataclass
class Settled:
    """What carrying out pending stock work came to: orders whose continuation someone else
    saved first, and the outputs of each decision finished here, by order id."""

    lost: set[str] = field(default_factory=set)
    outputs: dict[str, list[Output]] = field(default_factory=dict)


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
        self.audit_rules = load_rules(settings.config_dir)
        self.decisions = Decisions(
            routing=routing,
            shops=load_shop_rules(settings.config_dir / "shops.toml"),
            promotions=load_gift_rules(settings.config_dir),
            shortage_policy=ShortagePolicy(settings.shortage_policy),
            merge_window_s=settings.merge_window_s,
            close_after_s=settings.close_after_s,
            clock=time.time,
        )
        self.events_topic = topics.ORDER_EVENTS.name(settings.topic_prefix)
        self.commands_topic = topics.FULFILMENT_COMMANDS.name(settings.topic_prefix)
        self.updates_topic = topics.CHANNEL_UPDATES.name(settings.topic_prefix)
        self.dlq_topic = topics.DLQ.name(settings.topic_prefix)
        self._skus: frozenset[str] = frozenset()
        self._skus_at = 0.0

    # --- inputs ---------------------------------------------------------------------------

    async def process(self, raws: Sequence[RawInput]) -> BatchResult:
        """Raw channel payloads: DLQ what cannot be parsed, orders through intake, the
        platform's own after-sales through the after-sales path (the same one as
        ``apply_aftersales``: same CAS, outbox and input id), all in one round loop keyed by
        order id, so an order and its refund in one batch apply in their topic order. An
        after-sale of an order not seen yet is dead-lettered as ``unknown_order``, for
        ``./oms dlq replay`` once the order came (docs/decisions/0023-platform-aftersales.md)."""
        result = BatchResult()
        pending: list[RawItem] = []
        rejected: list[tuple[RawInput, DlqRecord]] = []
        for raw in raws:
            result.counts["inputs"] += 1
            parsed = normalise(raw, self.adapter_ctx)
            if isinstance(parsed, DlqRecord):
                rejected.append((raw, parsed))
            elif isinstance(parsed, ClosedAtChannel):
                note_closed(parsed, result)
            else:
                pending.append((raw, parsed))
        async with self._deadline():
            velocity = await self._record_velocity(
                [item for _, item in pending if isinstance(item, Order)]
            )
            unknown: list[tuple[RawInput, DlqRecord]] = []
            await self._apply_in_rounds(
                pending,
                lambda item: [item[1].order_id],
                lambda item, loaded, ctx, now, res: self._raw_plans(
                    item, loaded, ctx, now, res, unknown
                ),
                result,
                velocity,
            )
            await self._dead_letter([*rejected, *unknown], result)
        return result

    async def _dead_letter(
        self, rejected: list[tuple[RawInput, DlqRecord]], result: BatchResult
    ) -> None:
        """DLQ records out, each as first emitted, counted by reason."""
        firsts = await self.as_first_seen([record for _, record in rejected])
        for (raw, _), record in zip(rejected, firsts, strict=True):
            result.counts["dlq"] += 1
            result.counts[f"dlq_{record.reason.value}"] += 1
            result.outputs.append(
                (self.dlq_topic, raw.key or raw.input_id, record.model_dump_json())
            )

    async def apply_actions(self, actions: Sequence[OperatorAction]) -> BatchResult:
        """Operator decisions and timer actions, applied like any input: same CAS, same
        outbox, so a redelivered action is applied once and lands in the trail with its actor."""
        result = BatchResult()
        async with self._deadline():
            await self._apply_in_rounds(
                list(actions),
                lambda action: sorted(set(action.members)) or [action.order_id],
                self._action_plans,
                result,
            )
        return result

    async def apply_wms_events(self, events: Sequence[WmsEvent]) -> BatchResult:
        """WMS answers. An answer about a merged shipment applies to every order in it."""
        result = BatchResult()
        async with self._deadline():
            keyed = await self.orders.load_many(sorted({e.order_id for e in events}))
            members = {
                oid: sorted(set(lr.record.merged_with)) or [oid]
                for oid, lr in keyed.items()
                if lr.record is not None
            }
            await self._apply_in_rounds(
                list(events),
                lambda event: members.get(event.order_id, [event.order_id]),
                self._wms_plans,
                result,
            )
        return result

    async def apply_aftersales(self, requests: Sequence[AfterSalesRequest]) -> BatchResult:
        result = BatchResult()
        async with self._deadline():
            await self._apply_in_rounds(
                list(requests), lambda req: [req.order_id], self._aftersales_plans, result
            )
        return result

    async def as_first_seen(self, records: list[DlqRecord]) -> list[DlqRecord]:
        """Each DLQ record as it was first emitted: a redelivered malformed input gets the
        same dlq_id but a new ``received_at``, and ``received_at`` is in the dlq table's sort
        key, so its fact would be a second row that no merge collapses (found by ./oms chaos:
        a worker killed mid-flood left 16 DLQ rows under FINAL for 14 ids). One SET NX GET per
        record, in one round trip, remembers the first time for DLQ_SEEN_TTL_S."""
        if not records:
            return []
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            pipe.set(
                self.keys.dlq_seen(record.dlq_id),
                record.received_at.isoformat(),
                nx=True,
                get=True,
                ex=DLQ_SEEN_TTL_S,
            )
        seen = await pipe.execute()
        return [
            record
            if not first
            else record.model_copy(update={"received_at": datetime.fromisoformat(first)})
            for record, first in zip(records, seen, strict=True)
        ]

    def _deadline(self) -> asyncio.Timeout:
        """One bound for a batch's every round trip (the hot-path client has no timer per
        reply, state/redis.py connect_batched): a hung Redis fails the batch, which is then
        redelivered, instead of stalling its partitions for good."""
        return asyncio.timeout(self.settings.batch_timeout_s)

    # --- the round loop -------------------------------------------------------------------

    async def _audit_context(self, velocity: Mapping[str, Velocity] | None = None) -> AuditContext:
        now = time.monotonic()
        if now - self._skus_at > SKU_CACHE_SECONDS:
            self._skus = frozenset(await self.client.smembers(self.keys.skus))
            self._skus_at = now
        return make_audit_context(self._skus, self.settings, self.audit_rules, velocity or {})

    async def _record_velocity(self, orders: list[Order]) -> dict[str, Velocity]:
        """Orders per buyer and address in the scalper window: one round trip per batch."""
        window = scalper_window(self.audit_rules)
        if not orders or window <= 0:
            return {}
        return await record_recent(self.client, self.keys, orders, window_s=window, now=time.time())

    async def _apply_in_rounds(
        self,
        items: list[T],
        targets_of: Callable[[T], list[str]],
        plan_for: PlanFor[T],
        result: BatchResult,
        velocity: Mapping[str, Velocity] | None = None,
    ) -> None:
        """The one loop for every kind of input: each order at most once per round (so its
        inputs apply in order), one load and one CAS save per round, and inputs that lost a
        race go again on the fresh records. An order whose record carries pending stock work
        has it carried out first; its inputs go in the next round."""
        ctx = await self._audit_context(velocity)
        pending = list(items)
        for _ in range(MAX_CAS_ROUNDS + len(items)):
            if not pending:
                return
            batch, later = first_per_order(pending, targets_of)
            wanted = sorted({oid for item in batch for oid in targets_of(item)})
            loaded = await self.orders.load_many(wanted)
            unsettled = [lr for lr in loaded.values() if lr.unsettled]
            deferred: list[T] = []
            if unsettled:
                blocked = {lr.record.order_id for lr in unsettled if lr.record}
                deferred = [item for item in batch if blocked.intersection(targets_of(item))]
                batch = [item for item in batch if not blocked.intersection(targets_of(item))]
                await self._settle([(lr.record, lr.version) for lr in unsettled if lr.record])
                result.counts["pending_settled"] += len(unsettled)
            now = datetime.fromtimestamp(self.decisions.clock(), UTC)
            steps = [
                (item, plans)
                for item in batch
                if (plans := plan_for(item, loaded, ctx, now, result))
            ]
            pending = await self._finish(steps, now, result) + deferred + later
            await self._send_again(result)
        raise RuntimeError("order records keep changing under this worker; giving up batch")

    async def _finish(
        self, steps: list[tuple[Any, list[Plan]]], now: datetime, result: BatchResult
    ) -> list[Any]:
        """CAS-save every plan with its pending stock work, carry that work out, emit; returns
        the inputs to process again (lost a race: nothing of them was done)."""
        for _, group in steps:
            for plan in group:
                result.counts["illegal_transitions"] += plan.illegal_moves
        saved = await self._save([group for _, group in steps])
        again: dict[int, Any] = {}
        kept = [(item, group) for (item, group), ok in zip(steps, saved, strict=True) if ok]
        for (item, _), ok in zip(steps, saved, strict=True):
            if not ok:
                result.counts["cas_conflicts"] += 1
                again[id(item)] = item
        settling = [plan for _, group in kept for plan in group if plan.record.pending]
        waited = {id(plan) for plan in settling}
        settled = await self._settle(
            [(plan.record, plan.expected_version + 1) for plan in settling], result, now
        )
        for item, group in kept:  # outputs in input order
            for plan in group:
                count_kinds(plan.messages, result.counts)
                oid = plan.record.order_id
                if id(plan) not in waited:
                    result.outputs.extend(plan.outputs)
                elif oid in settled.lost:  # someone else finished it: its redelivery re-emits
                    again[id(item)] = item
                else:  # what it decided, then what its continuation added
                    result.outputs.extend([*plan.outputs, *settled.outputs.get(oid, [])])
        return list(again.values())

    async def _save(self, groups: Sequence[Sequence[Plan]]) -> list[bool]:
        """Stage each plan in its record (outputs kept for redeliveries, stock work as
        ``pending`` fenced by the version the save gives it) and CAS-save the groups in one
        round trip."""
        for group in groups:
            for plan in group:
                stage(plan, [self._output(m) for m in plan.messages])
        return await self.orders.save_groups(
            [
                [
                    Save(p.record, p.expected_version, p.input_id, p.outputs, p.dropped)
                    for p in group
                ]
                for group in groups
            ]
        )

    async def _settle(
        self,
        records: Sequence[tuple[OrderRecord, int]],
        result: BatchResult | None = None,
        now: datetime | None = None,
    ) -> Settled:
        """Carry out the pending stock work of (record, saved version) pairs: effects in one
        round trip, reservations in one saga, then each reservation's continuation saved.
        Idempotent: the fences make a second run change nothing. ``result``: the deciding
        inputs' own run, counted there (a record merely found unfinished is finished
        silently; its input's redelivery re-emits)."""
        settled = Settled()
        if not records:
            return settled
        now = now or datetime.fromtimestamp(self.decisions.clock(), UTC)
        sink = result if result is not None else BatchResult()
        await self.stock.apply([e for r, _ in records if r.pending for e in r.pending.effects])
        plain = [(r, v) for r, v in records if r.pending and r.pending.reserve is None]
        await self.orders.mark_settled([(r.order_id, v) for r, v in plain])
        intents = [(r, v) for r, v in records if r.pending and r.pending.reserve is not None]
        plans: list[Plan] = []
        for (record, version), (reservation, fallback) in zip(
            intents, await self._reserve_intents(intents), strict=True
        ):
            if reservation.status is ReserveStatus.SUPERSEDED:
                # Normal when the record moved on since it was loaded (its next save loses);
                # if it did not, stock is ahead of the record (a hand edit, a partial restore)
                # and this decision cannot finish: say so, the batch will give up and retry.
                log.warning(
                    "%s: decision of version %s overtaken in stock; reloading",
                    record.order_id,
                    version,
                )
                sink.counts["superseded"] += 1
                settled.lost.add(record.order_id)
            else:
                plans.append(self._continue(record, version, reservation, fallback, now, sink))
        more: list[tuple[OrderRecord, int]] = []
        for plan, ok in zip(plans, await self._save([[p] for p in plans]), strict=True):
            if not ok:
                sink.counts["cas_conflicts"] += 1
                settled.lost.add(plan.record.order_id)
                continue
            count_kinds(plan.messages, sink.counts)
            if plan.record.pending is not None:  # the continuation decided more stock work
                more.append((plan.record, plan.expected_version + 1))
            else:
                settled.outputs[plan.record.order_id] = plan.outputs
        if more:
            added = {plan.record.order_id: plan.outputs for plan in plans}
            deeper = await self._settle(more, result, now)
            settled.lost |= deeper.lost
            for record, _ in more:
                oid = record.order_id
                if oid not in deeper.lost:  # what the continuation said, then what followed
                    settled.outputs[oid] = [*added[oid], *deeper.outputs.get(oid, [])]
        return settled

    async def _reserve_intents(
        self, intents: Sequence[tuple[OrderRecord, int]]
    ) -> list[tuple[Reservation, bool]]:
        """One saga for every saved wish to reserve, then the fallbacks (the order without its
        gifts) of those that came up short: per intent, the reservation and whether it is the
        fallback's."""
        if not intents:
            return []
        requests = [
            r.pending.reserve.requests(v) for r, v in intents if r.pending and r.pending.reserve
        ]
        first = await self.stock.reserve_many([req for req, _ in requests])
        retry = [
            n
            for n, ((_, fallback), res) in enumerate(zip(requests, first, strict=True))
            if res.status is ReserveStatus.SHORTAGE and fallback is not None
        ]
        second = await self.stock.reserve_many([f for n in retry if (f := requests[n][1])])
        out = [(res, False) for res in first]
        for n, res in zip(retry, second, strict=True):
            out[n] = (res, True)
        return out

    def _continue(
        self,
        record: OrderRecord,
        version: int,
        reservation: Reservation,
        fallback: bool,
        now: datetime,
        result: BatchResult,
    ) -> Plan:
        """The rest of a saved decision, now that its reservation is known: a plan on the
        record as saved (pending cleared; changed in place: the saved record is not read
        again, a lost race reloads it) that adds to the same input's outputs."""
        pending = record.pending
        assert pending is not None and pending.reserve is not None
        record.pending = None
        plan = Plan(None, pending.input_id, record, version, actor=pending.actor)
        if fallback:
            skipped = ", ".join(f"{g.sku} x{g.quantity}" for g in record.gift_lines)
            record.gift_lines = []
            result.counts["gifts_skipped"] += 1
            self.decisions.note(
                plan, EventKind.GIFT_SKIPPED, now, reason=Reason.OUT_OF_STOCK, detail=skipped
            )
        if pending.reserve.then is Then.EXCHANGE:
            aftersales.exchange_reserved(
                self.decisions, plan, pending.reserve, reservation, now, result
            )
        else:
            self.decisions.route(plan, reservation, now, result)
        return plan

    # --- channel inputs -------------------------------------------------------------------

    def _raw_plans(
        self,
        item: RawItem,
        loaded: dict[str, LoadedRecord],
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
        unknown: list[tuple[RawInput, DlqRecord]],
    ) -> list[Plan]:
        """An order through intake; a platform after-sale through the after-sales path, or
        into ``unknown`` (a DLQ record) when its order is not known."""
        raw, parsed = item
        if isinstance(parsed, Order):
            return self._intake((raw, parsed), loaded, ctx, now, result)
        current = loaded.get(parsed.order_id)
        if current is None or current.record is None:
            result.counts["aftersales_unknown_order"] += 1
            detail = f"{parsed.kind.value} {parsed.request_id}: no order {parsed.order_id} yet"
            unknown.append((raw, to_dlq(raw, DlqReason.UNKNOWN_ORDER, detail)))
            return []
        result.counts["aftersales_from_channel"] += 1
        return self._aftersales_plans(parsed, loaded, ctx, now, result)

    def _intake(
        self,
        item: tuple[RawInput, Order],
        loaded: dict[str, LoadedRecord],
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> list[Plan]:
        raw, order = item
        current = loaded[order.order_id]
        input_id = f"{raw.input_id}:{order.fingerprint()[:12]}"
        earlier_id = (  # as a release before Order.LATER_FIELDS named it
            f"{raw.input_id}:{order.v1_fingerprint()[:12]}" if current.record is not None else ""
        )
        intake = classify(current.record, order, input_id, earlier_id)
        result.counts[intake.value] += 1
        if intake is Intake.REDELIVERY:
            assert current.record is not None
            self._re_emit(current.record, input_id, result)
            return []
        if current.record is None:
            record = OrderRecord(
                order_id=order.order_id,
                state=OrderState.RECEIVED,
                order=order,
                fingerprint=order.fingerprint(),
            )
        else:
            record = current.private_copy()
        plan = Plan(item, input_id, record, current.version)
        if intake is Intake.NEW:
            self.decisions.schedule(record)
            plan.messages.append(
                record_event(
                    record,
                    EventKind.RECEIVED,
                    now,
                    to_state=OrderState.RECEIVED,
                    with_snapshot=True,
                )
            )
            self.decisions.decide(plan, ctx, now)
        elif intake is Intake.DUPLICATE:
            record.duplicates += 1
            self.decisions.note(plan, EventKind.DUPLICATE, now, reason="same content pushed again")
        elif intake is Intake.STALE:
            self.decisions.note(plan, EventKind.STALE, now, reason="older than the version held")
        else:
            self._apply_update(plan, order, ctx, now, result)
        return [plan]

    def _apply_update(
        self, plan: Plan, order: Order, ctx: AuditContext, now: datetime, result: BatchResult
    ) -> None:
        record = plan.record
        record.order = with_edits(order, record.line_edits)  # a person's line edits stay
        record.fingerprint = order.fingerprint()  # the channel's version, for dedupe
        self.decisions.schedule(record)
        plan.messages.append(record_event(record, EventKind.UPDATED, now, with_snapshot=True))
        if record.state in TERMINAL:
            return
        if order.channel_status is ChannelStatus.CANCELLED:
            self.decisions.cancel(plan, Reason.CANCELLED_AT_CHANNEL, now, result)
        elif record.state is OrderState.HELD:
            self.decisions.decide(plan, ctx, now)
        elif record.state is OrderState.ROUTED and (
            record.hold_reason in GATE_REASONS or release_gate(order, now) is not None
        ):
            # the balance paid or the hold lifted (released), or a hold the update brought
            self.decisions.release_waiting(plan, now)

    # --- operator and timer actions -------------------------------------------------------

    def _action_plans(
        self,
        action: OperatorAction,
        loaded: dict[str, LoadedRecord],
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> list[Plan]:
        result.counts[f"action_{action.kind.value}"] += 1
        input_id = f"action:{action.action_id}"
        if action.kind is OperatorActionKind.SETTLE:
            return []  # the round loop carried out the order's pending work before planning
        if action.kind is OperatorActionKind.RELEASE_MERGED:
            return self._release_group(action, input_id, loaded, now, result)
        current = self._known(loaded, action.order_id, "action", input_id, result)
        if current is None or self._replayed([current], input_id, result):
            return []
        plan = fresh_plan(action, input_id, current, actor=action.actor)
        record, state, kind = plan.record, plan.record.state, action.kind
        if kind in TAG_KINDS:
            apply_tags(self.decisions, plan, action, now, result)
        elif kind in EDIT_KINDS:
            apply_edit(self.decisions, plan, action, ctx, now, result)
        elif kind is OperatorActionKind.RELEASE_HOLD and state is OrderState.HELD:
            self.decisions.note(
                plan,
                EventKind.HOLD_RELEASED,
                now,
                reason=record.hold_reason,
                detail=action.reason,
            )
            self.decisions.decide(plan, ctx, now, override_holds=True)
        elif (
            kind is OperatorActionKind.RETRY_BACKORDER
            and state is OrderState.HELD
            and record.hold_reason == Reason.OUT_OF_STOCK
        ):
            # it passed the audit (or a person let it through) before it ran out of stock
            self.decisions.note(plan, EventKind.BACKORDER_RETRIED, now, detail=action.reason)
            self.decisions.decide(plan, ctx, now, override_holds=True)
        elif kind is OperatorActionKind.RELEASE_HOLD and state is OrderState.EXCEPTION:
            self.decisions.note(
                plan, EventKind.HOLD_RELEASED, now, reason=record.hold_reason, detail=action.reason
            )
            wms.resend_outbound(self.decisions, plan, now)
        elif (
            kind is OperatorActionKind.EXPIRE_UNPAID
            and state is OrderState.HELD
            and record.hold_reason == Reason.UNPAID
        ):
            self.decisions.cancel(plan, Reason.UNPAID_TIMEOUT, now, result)
        elif kind is OperatorActionKind.CANCEL and state in BEFORE_WMS | AT_WMS:
            self.decisions.cancel(plan, Reason.CANCELLED_BY_OPERATOR, now, result)
        elif kind is OperatorActionKind.CLOSE and state in CLOSABLE:
            self.decisions.move(
                plan, EventKind.CLOSED, now, OrderState.CLOSED, reason="after-sales window ended"
            )
        else:
            self.decisions.refuse(
                plan,
                EventKind.ACTION_REFUSED,
                now,
                kind.value,
                f"not applicable to a {state.value} order",
                result,
            )
        return [plan]

    def _release_group(
        self,
        action: OperatorAction,
        input_id: str,
        loaded: dict[str, LoadedRecord],
        now: datetime,
        result: BatchResult,
    ) -> list[Plan]:
        """A merge window closed: every member still waiting is released in one outbound
        (or alone, when it is the only one left)."""
        group = action.order_id
        current = [lr for oid in action.members if (lr := loaded[oid]).record]
        if self._replayed(current, input_id, result):
            return []
        waiting = waiting_members([lr.private_copy() for lr in current], group)
        if not waiting:
            return []
        all_plans = [
            Plan(action, input_id, m, loaded[m.order_id].version, actor=action.actor)
            for m in waiting
        ]
        # A member behind a release gate (order/gates.py) is checked again, not merged; one
        # left alone is released by itself.
        plans: list[Plan] = []
        gated: list[Plan] = []
        for plan in all_plans:
            (plans if release_gate(plan.record.order, now) is None else gated).append(plan)
        for plan in gated + (plans if len(plans) <= 1 else []):
            self.decisions.release_waiting(plan, now)
        if len(plans) <= 1:
            return all_plans
        members = [p.record for p in plans]
        result.counts["merged_orders"] += len(members)
        result.counts["merged_shipments"] += 1
        lines = [line for m in members for line in m.lines]
        warehouse = members[0].allocations[0].warehouse
        weight = self.routing.weight_g(lines)
        carrier = self.routing.choose_carrier(warehouse, members[0].address, weight).code
        command = merged_command(members, now, carrier, weight)
        others = ", ".join(m.order_id for m in members)
        for plan in plans:
            plan.record.hold_reason = ""
            plan.record.carrier = carrier
            self.decisions.note(
                plan,
                EventKind.MERGED,
                now,
                reason=command.command_id,
                detail=f"ships with {others}",
            )
            if plan.record is members[0]:
                plan.messages.append(command)
            self.decisions.move(
                plan,
                EventKind.RELEASED,
                now,
                OrderState.RELEASED,
                reason=f"outbound {command.command_id}",
            )
        return all_plans

    # --- WMS answers and after-sales requests ---------------------------------------------

    def _wms_plans(
        self,
        event: WmsEvent,
        loaded: dict[str, LoadedRecord],
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> list[Plan]:
        result.counts[f"wms_{event.kind.value}"] += 1
        input_id = f"wms:{event.event_id}"
        keyed = self._known(loaded, event.order_id, "wms", input_id, result)
        if keyed is None or keyed.record is None:
            return []
        targets = sorted(set(keyed.record.merged_with)) or [event.order_id]
        current = [lr for oid in targets if (lr := loaded.get(oid)) and lr.record]
        if self._replayed(current, input_id, result):
            return []
        plans = [fresh_plan(event, input_id, lr, actor="wms") for lr in current]
        keyed_ref = keyed.record.command(event.command_id)
        for plan in plans:
            wms.apply_event(self.decisions, plan, event, keyed_ref, now, result)
        return plans

    def _aftersales_plans(
        self,
        request: AfterSalesRequest,
        loaded: dict[str, LoadedRecord],
        ctx: AuditContext,
        now: datetime,
        result: BatchResult,
    ) -> list[Plan]:
        result.counts[f"aftersales_{request.kind.value}"] += 1
        input_id = f"aftersales:{request.request_id}"
        current = self._known(loaded, request.order_id, "aftersales", input_id, result)
        if current is None or self._replayed([current], input_id, result):
            return []
        plan = fresh_plan(request, input_id, current, actor=request.requested_by)
        aftersales.apply_request(self.decisions, plan, request, ctx, now, result)
        return [plan]

    def _known(
        self,
        loaded: dict[str, LoadedRecord],
        order_id: str,
        what: str,
        input_id: str,
        result: BatchResult,
    ) -> LoadedRecord | None:
        """The loaded record an input is about; an unknown order is logged and counted."""
        current = loaded.get(order_id)
        if current is None or current.record is None:
            result.counts[f"{what}_unknown_order"] += 1
            log.warning("%s for unknown order %s", input_id, order_id)
            return None
        return current

    def _replayed(
        self, current: Sequence[LoadedRecord], input_id: str, result: BatchResult
    ) -> bool:
        """A redelivered input: re-emit what it produced the first time (same ids), decide
        nothing. A group is saved whole, so either every record has it or none."""
        done = [lr.record for lr in current if lr.record and lr.record.has_applied(input_id)]
        for record in done:
            self._re_emit(record, input_id, result)
        return bool(done)

    def _re_emit(self, record: OrderRecord, input_id: str, result: BatchResult) -> None:
        """A redelivered input: its kept outputs are sent again, read at the end of the round
        (``_send_again``)."""
        result.reemit.append((record.order_id, input_id))

    async def _send_again(self, result: BatchResult) -> None:
        """Outputs kept beside the records, sent again and counted like new ones (from their
        JSON: only the first emission had the messages at hand). An input applied so long ago
        that its outputs were dropped is recognised, counted, and neither applied again nor
        re-sent."""
        wanted, result.reemit = result.reemit, []
        for (order_id, input_id), outputs in zip(
            wanted, await self.orders.outputs(wanted), strict=True
        ):
            if outputs is None:
                result.counts["redelivery_expired"] += 1
                log.warning(
                    "%s: applied long ago to %s, outputs no longer kept", input_id, order_id
                )
                continue
            result.outputs.extend(outputs)
            count_outputs(
                outputs,
                result.counts,
                events_topic=self.events_topic,
                commands_topic=self.commands_topic,
            )

    def _output(self, message: Message) -> Output:
        if isinstance(message, FulfilmentCommand):
            topic = self.commands_topic
        elif isinstance(message, ChannelUpdate):
            topic = self.updates_topic
        else:
            topic = self.events_topic
        return (topic, message.order_id, json_with_order(message))


RawItem = tuple[RawInput, Order | AfterSalesRequest]


def note_closed(closed: ClosedAtChannel, result: BatchResult) -> None:
    """A platform after-sale that asks nothing (withdrawn, refused, closed): counted and
    logged by ids and the platform's status, nothing applied."""
    result.counts["aftersales_closed_at_channel"] += 1
    log.info(
        "%s: %s after-sale %s is %s at the channel: nothing to do",
        closed.order_id,
        closed.channel.value,
        closed.request_id,
        closed.status,
    )


def stage(plan: Plan, outputs: list[Output]) -> None:
    """Put a plan's outputs and its stock work into its record, for the save. The work is
    fenced by the version the save gives the record (``expected_version + 1``)."""
    record = plan.record
    plan.outputs = outputs
    plan.dropped = record.remember_outputs(plan.input_id)
    if not plan.effects and plan.reserve is None:
        record.pending = None
        return
    version = plan.expected_version + 1
    effects = [
        effect.model_copy(update={"seq": effect_seq(version, n)})
        for n, effect in enumerate(plan.effects)
    ]
    record.pending = Pending(
        input_id=plan.input_id, actor=plan.actor, effects=effects, reserve=plan.reserve
    )


def save_of(plan: Plan) -> Save:
    return Save(plan.record, plan.expected_version, plan.input_id, plan.outputs, plan.dropped)


def fresh_plan(source: Any, input_id: str, current: LoadedRecord, *, actor: str) -> Plan:
    """A plan on a private copy of the record (a lost race leaves the loaded one intact)."""
    return Plan(source, input_id, current.private_copy(), current.version, actor=actor)


def make_audit_context(
    skus: frozenset[str], settings: Settings, rules: AuditRules, velocity: Mapping[str, Velocity]
) -> AuditContext:
    return AuditContext(skus, settings.max_line_quantity, rules=rules, velocity=velocity)


def load_rules(config_dir: Path) -> AuditRules:
    """config/audit.toml, validated (a bad file stops the worker with a clear error)."""
    return load_audit_rules(config_dir / "audit.toml")


def scalper_window(rules: AuditRules) -> float:
    return rules.scalper.window_s if rules.scalper.enabled else 0.0


def load_gift_rules(config_dir: Path) -> Promotions | None:
    path = config_dir / "promotions.toml"
    return load_promotions(path) if path.exists() else None


def first_per_order(
    items: list[T], targets_of: Callable[[T], list[str]]
) -> tuple[list[T], list[T]]:
    """Items whose orders no earlier item of the round touches now, the rest in a later round,
    order kept: an order's inputs apply one at a time, in order."""
    seen: set[str] = set()
    now: list[T] = []
    later: list[T] = []
    for item in items:
        targets = targets_of(item)
        (later if seen.intersection(targets) else now).append(item)
        seen.update(targets)
    return now, later
