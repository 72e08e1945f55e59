"""The decisions an input leads to, as one pure object: audit then hold, reject or ask for a
reservation; route and release to the WMS (or wait in a merge window); cancel before or at the
WMS. Built from configuration and a clock, so every rule runs in a unit test without Redis or
Kafka; the pipeline (agents/pipeline.py) saves what a plan decided and carries it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from order.allocation import ShortagePolicy
from order.audit import PASS, AuditContext, Verdict, audit
from order.deadlines import priority_of, ship_by
from order.fulfil import Parcel, lines_by_warehouse, next_attempt, outbound_commands, stop_command
from order.gates import Gate, awaits_balance, release_gate, solo_group
from order.lifecycle import AT_WMS, BEFORE_WMS, IllegalTransition, record_event
from order.merge import merge_group
from order.plan import BatchResult, Plan
from order.promotions import Promotions, gift_lines
from order.reasons import Reason
from order.record import CommandStatus, OrderRecord, ReserveIntent
from order.reservation import EffectKind, Reservation, ReserveStatus, StockEffect
from order.route import RoutingTable
from order.shops import PresaleReserve, ShopRules
from streams.messages import EventKind, OrderState
from streams.models import ChannelStatus, Order, OrderLine, ShopKey

log = logging.getLogger(__name__)


@dataclass
class Decisions:
    """The order rules of one worker: routing, per-shop rules, promotions, defaults, a clock."""

    routing: RoutingTable
    clock: Callable[[], float]  # unix seconds (merge windows, after-sales windows)
    shops: dict[ShopKey, ShopRules] = field(default_factory=dict)  # config/shops.toml
    promotions: Promotions | None = None
    shortage_policy: ShortagePolicy = ShortagePolicy.HOLD
    merge_window_s: float = 0.0
    close_after_s: float = 0.0

    def close_due(self) -> float:
        """When an after-sales window opened now ends (unix seconds)."""
        return self.clock() + self.close_after_s

    def note(self, plan: Plan, kind: EventKind, now: datetime, **kw: Any) -> None:
        """An event in the trail that moves no state."""
        plan.messages.append(record_event(plan.record, kind, now, actor=plan.actor, **kw))

    def move(self, plan: Plan, kind: EventKind, now: datetime, to: OrderState, **kw: Any) -> bool:
        """One transition; an illegal one is refused (logged, counted, in the trail), never
        applied. Returns whether it moved."""
        try:
            plan.messages.append(
                record_event(plan.record, kind, now, to_state=to, actor=plan.actor, **kw)
            )
            return True
        except IllegalTransition as exc:
            log.warning("refused: %s", exc)
            plan.refused = True
            plan.illegal_moves += 1
            self.note(plan, EventKind.TRANSITION_REFUSED, now, reason=kind.value, detail=str(exc))
            return False

    def refuse(
        self,
        plan: Plan,
        kind: EventKind,
        now: datetime,
        reason: str,
        detail: str,
        result: BatchResult,
    ) -> None:
        result.counts["refused"] += 1
        plan.refused = True
        self.note(plan, kind, now, reason=reason, detail=detail)

    def decide(
        self, plan: Plan, ctx: AuditContext, now: datetime, *, override_holds: bool = False
    ) -> None:
        """Audit, then either hold/reject or ask for a reservation. An operator's release
        overrides holds (a person checked the order); rejects still apply."""
        record, order = plan.record, plan.record.order
        if order.channel_status is ChannelStatus.CANCELLED:
            self.move(
                plan,
                EventKind.CANCELLED,
                now,
                OrderState.CANCELLED,
                reason=Reason.CANCELLED_AT_CHANNEL,
            )
            return
        if record.ship_to is not None:  # an after-sales address change is what ships
            order = order.model_copy(update={"address": record.ship_to})
        verdict = audit(order, ctx)
        if verdict.verdict is Verdict.HOLD and override_holds:
            verdict = PASS
        if verdict.verdict is Verdict.PASS and self.reserves_later(order):
            self.hold(
                plan, Reason.AWAITING_BALANCE, "deposit paid; reserved once the balance is", now
            )
        elif verdict.verdict is Verdict.PASS and order.fulfilled_by:
            self.move(plan, EventKind.AUDITED, now, OrderState.AUDITED)
            self.move(plan, EventKind.FULFILLED_ELSEWHERE, now, OrderState.FULFILLED_ELSEWHERE,
                      reason=order.fulfilled_by)
        elif verdict.verdict is Verdict.PASS:
            self.move(plan, EventKind.AUDITED, now, OrderState.AUDITED)
            self.request_reservation(plan)
        elif verdict.verdict is Verdict.HOLD and verdict.reason:
            self.hold(plan, verdict.reason, verdict.detail, now)
        else:
            record.reject_reason = verdict.reason
            self.move(
                plan,
                EventKind.REJECTED,
                now,
                OrderState.REJECTED,
                reason=verdict.reason,
                detail=verdict.detail,
            )

    def decide_again(
        self, plan: Plan, ctx: AuditContext, now: datetime, held: Sequence[str]
    ) -> None:
        """An order whose lines changed before release (order/edits.py): what it holds is
        given back (undo: it may reserve again) and it is audited and reserved again like a
        new order. It leaves its merge window (the save sees it out of ``routed``); a person's
        earlier release of a hold does not carry over to new lines, an out-of-stock hold is
        tried again at once. ``held``: the skus the order had before its lines changed."""
        record = plan.record
        given_back = tuple(sorted({*held, *(a.sku for a in record.allocations)}))
        if given_back:
            plan.effects.append(
                StockEffect(kind=EffectKind.UNDO, shipment=record.order_id, skus=given_back)
            )
        record.allocations = []
        record.warehouse = ""
        record.carrier = ""
        retry = record.state is OrderState.HELD and record.hold_reason == Reason.OUT_OF_STOCK
        self.decide(plan, ctx, now, override_holds=retry)

    def schedule(self, record: OrderRecord) -> None:
        """The order's ship-by deadline and priority under its channel's and shop's rules, set
        again whenever the order changes (a payment starts the clock)."""
        rules = self.shops.get(record.order.shop_key)
        deadline = ship_by(record.order, rules)
        record.ship_by = deadline.timestamp() if deadline is not None else 0.0
        record.priority = priority_of(record.order, rules)

    def hold(self, plan: Plan, reason: Reason, detail: str, now: datetime) -> None:
        record = plan.record
        if record.state is OrderState.HELD and record.hold_reason == reason:
            return  # still held for the same reason: nothing new to say
        record.hold_reason = reason
        self.move(plan, EventKind.HELD, now, OrderState.HELD, reason=reason, detail=detail)

    def request_reservation(self, plan: Plan) -> None:
        """Ask for the order's lines (gifts the promotions add included) to be reserved once
        the decision is saved; a gift that does not fit the stock is dropped rather than
        blocking the order (the fallback)."""
        record = plan.record
        gifts = self.gifts_for(record.order)
        record.gift_lines = gifts
        candidates = [
            wh
            for wh in self.routing.candidates(record.order, record.address)
            if wh not in record.excluded_warehouses
        ]
        plan.reserve = ReserveIntent(
            shipment=record.order_id,
            quantities=record.quantities,
            warehouses=candidates,
            policy=self.policy_for(record.order),
            together=record.order.has_bundles,  # a bundle's components ship as one parcel
            shop=record.order.shop_key,  # its channel quotas apply
            fallback=record.order.quantity_by_sku if gifts else None,
        )

    def route(
        self, plan: Plan, reservation: Reservation, now: datetime, result: BatchResult
    ) -> None:
        record = plan.record
        if reservation.status is ReserveStatus.SHORTAGE:
            result.counts["shortage"] += 1
            if self.policy_for(record.order) is ShortagePolicy.REJECT:
                record.reject_reason = Reason.OUT_OF_STOCK
                self.move(
                    plan, EventKind.REJECTED, now, OrderState.REJECTED, reason=Reason.OUT_OF_STOCK
                )
            else:
                self.hold(plan, Reason.OUT_OF_STOCK, "no warehouse can serve every line", now)
            return
        if not reservation.active:
            self.hold(plan, Reason.RESERVATION_RELEASED, "stock was released earlier", now)
            return
        for gift in record.gift_lines:
            result.counts["gifts_added"] += 1
            self.note(
                plan,
                EventKind.GIFT_ADDED,
                now,
                reason=gift.line_id,
                detail=f"{gift.sku} x{gift.quantity}",
            )
        record.warehouse = "+".join(reservation.warehouses)
        record.allocations = list(reservation.allocations)
        record.hold_reason = ""
        if len(reservation.warehouses) > 1:
            result.counts["split"] += 1
        self.move(
            plan, EventKind.RESERVED, now, OrderState.RESERVED, allocations=record.allocations
        )
        self.release_to_wms(plan, now)

    def release_to_wms(self, plan: Plan, now: datetime) -> None:
        """Carrier per parcel, then release at once, or wait: behind a release gate (a
        pre-sale's balance or date, a channel's hold) or in the merge window."""
        record = plan.record
        parcels = self.parcels(record)
        record.carrier = parcels[min(parcels)].carrier if parcels else ""
        detail = ", ".join(f"{wh}: {p.carrier}" for wh, p in sorted(parcels.items()))
        gate = release_gate(record.order, now)
        if gate is not None:
            if self.move(
                plan, EventKind.ROUTED, now, OrderState.ROUTED, reason=record.carrier, detail=detail
            ):
                self.wait_at_gate(plan, gate, now)
            return
        window = self.merge_window_for(record.order)
        first_release = next_attempt(record) == 1 and not record.merged_with
        group = merge_group(record, record.warehouse) if window > 0 and len(parcels) == 1 else ""
        waits = bool(group) and first_release
        if waits:
            record.merge_group = group
            record.merge_due = self.clock() + window
            detail += f"; waits up to {window:.0f} s to merge"
        if (
            self.move(
                plan, EventKind.ROUTED, now, OrderState.ROUTED, reason=record.carrier, detail=detail
            )
            and not waits
        ):
            self.send_outbound(plan, now, parcels)

    def wait_at_gate(self, plan: Plan, gate: Gate, now: datetime) -> None:
        """A routed order that may not ship yet keeps its stock and waits: for its date in a
        merge group of its own (the merge timer releases it), else until an update opens the
        gate. It leaves any merge window it was in."""
        record = plan.record
        if record.hold_reason == gate.reason and record.merge_due == (
            gate.until.timestamp() if gate.until else 0.0
        ):
            return  # waiting already, for the same reason
        record.hold_reason = gate.reason
        if gate.until is not None:
            # In a shared window already (a date set by an update) it stays there: each time
            # the group's timer fires its gated members are checked again (release_waiting).
            record.merge_group = record.merge_group or solo_group(record.order_id)
            record.merge_due = gate.until.timestamp()
        else:
            record.merge_due = 0.0  # out of any window (the save leaves the group)
        self.note(plan, EventKind.RELEASE_WAITS, now, reason=gate.reason, detail=gate.detail)

    def release_waiting(self, plan: Plan, now: datetime) -> None:
        """A routed order's wait may be over (its date came, its window closed, an update
        arrived): released when no gate stands, else it waits on."""
        record = plan.record
        gate = release_gate(record.order, now)
        if gate is not None:
            self.wait_at_gate(plan, gate, now)
            return
        record.hold_reason = ""
        self.send_outbound(plan, now)

    def send_outbound(
        self, plan: Plan, now: datetime, parcels: dict[str, Parcel] | None = None
    ) -> None:
        record = plan.record
        parcels = self.parcels(record) if parcels is None else parcels
        commands = outbound_commands(record, now, parcels, attempt=next_attempt(record))
        plan.messages.extend(commands)
        self.move(
            plan,
            EventKind.RELEASED,
            now,
            OrderState.RELEASED,
            reason="outbound " + " ".join(c.command_id for c in commands),
        )

    def parcels(self, record: OrderRecord) -> dict[str, Parcel]:
        """The order's lines shared out over its reservation, weighed, with a carrier each:
        computed once per release (this is the hot path)."""
        out = {}
        for wh, lines in lines_by_warehouse(record).items():
            weight = self.routing.weight_g(lines)
            carrier = self.routing.choose_carrier(wh, record.address, weight).code
            out[wh] = Parcel(lines, weight, carrier)
        return out

    def cancel(self, plan: Plan, reason: Reason, now: datetime, result: BatchResult) -> None:
        """Before the WMS has the order: stock back at once. After: ask the WMS to stop it
        (cancel, or intercept once picked) and give stock back only when it confirms, since
        the parcel may already be gone."""
        record = plan.record
        if record.state is OrderState.FULFILLED_ELSEWHERE:  # no stock, no WMS: only the record
            if self.move(plan, EventKind.CANCELLED, now, OrderState.CANCELLED, reason=reason):
                result.counts["cancelled"] += 1
            return
        if record.state in BEFORE_WMS:
            self.cancel_now(plan, reason, now, result)
            return
        live = record.live_commands()
        # A parcel already with the buyer cannot be cancelled: a person decides about the rest.
        shipped = record.has_shipped()
        if record.state is OrderState.EXCEPTION and not live and not shipped:  # nothing worked on
            failed = [c for c in record.commands if c.status is CommandStatus.FAILED]
            plan.messages.extend(stop_command(record, ref, now) for ref in failed)
            self.cancel_now(plan, reason, now, result)
            return
        if record.state in AT_WMS and live:
            stops = [stop_command(record, ref, now) for ref in live]
            plan.messages.extend(stops)
            record.hold_reason = reason
            self.move(
                plan,
                EventKind.INTERCEPT_REQUESTED,
                now,
                OrderState.INTERCEPTING,
                reason=reason,
                detail=" ".join(c.command_id for c in stops),
            )
            result.counts["intercepts"] += 1
            return
        self.refuse(
            plan,
            EventKind.ACTION_REFUSED,
            now,
            "cancel",
            f"not applicable to a {record.state.value} order"
            + (" with a parcel shipped" if shipped else ""),
            result,
        )

    def cancel_now(self, plan: Plan, reason: Reason, now: datetime, result: BatchResult) -> None:
        record = plan.record
        moved = self.move(
            plan,
            EventKind.CANCELLED,
            now,
            OrderState.CANCELLED,
            reason=reason,
            allocations=record.allocations,
        )
        if moved:
            plan.effects.append(
                StockEffect(
                    kind=EffectKind.RELEASE,
                    shipment=record.order_id,
                    skus=tuple(record.quantities),
                )
            )
            result.counts["cancelled"] += 1

    # --- configuration --------------------------------------------------------------------

    def gifts_for(self, order: Order) -> list[OrderLine]:
        return gift_lines(order, self.promotions) if self.promotions is not None else []

    def policy_for(self, order: Order) -> ShortagePolicy:
        """Per-shop shortage policy from config/shops.toml, else the global default."""
        rules = self.shops.get(order.shop_key)
        if rules and rules.shortage_policy:
            return rules.shortage_policy
        return self.shortage_policy

    def reserves_later(self, order: Order) -> bool:
        """A pre-sale with its deposit paid, of a shop that reserves only at the balance."""
        rules = self.shops.get(order.shop_key)
        return (
            awaits_balance(order)
            and rules is not None
            and rules.presale_reserve is PresaleReserve.BALANCE
        )

    def merge_window_for(self, order: Order) -> float:
        rules = self.shops.get(order.shop_key)
        if rules and rules.merge_window_s is not None:
            return rules.merge_window_s
        return self.merge_window_s


@dataclass
class Step:
    """One input being applied to one order: the pipeline's shared steps bound to its plan,
    so the WMS and after-sales handlers say ``move``/``note`` and not all of this each time."""

    steps: Decisions
    plan: Plan
    now: datetime
    result: BatchResult

    @property
    def record(self) -> OrderRecord:
        return self.plan.record

    def move(self, kind: EventKind, to: OrderState, **kw: Any) -> bool:
        return self.steps.move(self.plan, kind, self.now, to, **kw)

    def note(self, kind: EventKind, **kw: Any) -> None:
        self.steps.note(self.plan, kind, self.now, **kw)
