"""Timers: unpaid orders are cancelled (stock released) after OMS_UNPAID_TIMEOUT_S; merge
windows close and their orders ship as one; delivered orders close when their after-sales
window (OMS_CLOSE_AFTER_S) ends; a saved decision whose stock work its worker never finished
is finished; orders held out of stock are tried again, first queued first, when stock they
wait for is available (a load, an adjustment, a snapshot, a return, a cancel's release).

A timer only decides *which* orders are due; the change itself is an operator action on
`oms.operator`, applied by the pipeline like any input, so an input that arrives between the
scan and the action wins (the action is refused, not applied) and a timer firing twice acts
once (the action id is derived from what is due). One worker scans per tick (a lock).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import faust
import redis.asyncio as aioredis

from agents.control import send_signed
from agents.guard import guarded
from core.settings import Settings
from order.backorders import choose_retries
from order.reasons import Reason
from order.record import PENDING_GRACE_S
from state.backorders import available_units, queued
from state.keys import Keys
from state.lock import AsyncDistributedLock
from state.orders import OrderStore
from state.redis import connect_async
from streams import topics
from streams.messages import OperatorAction, OperatorActionKind, make_id
from streams.signing import WORKER, signer_for

SCAN_EVERY_S = 5.0
MERGE_SCAN_EVERY_S = 1.0  # windows are seconds to minutes: close them promptly
SCAN_LIMIT = 2000
# The unpaid index is kept by every save; this sweep files orders a save did not (records saved
# by a version before the index, during a rolling upgrade), reading every held record, rarely.
INDEX_UNPAID_EVERY_S = 600.0
# A closed window's group is sent once, then left alone this long: the pipeline removes it when
# the release lands, so sending it again every tick only floods the operator topic while the
# operator agent is behind (a 200k-order bench found 7,000 groups re-sent each second). If the
# action were lost, the group comes due again after this.
MERGE_RESEND_AFTER_S = 30.0


async def due_unpaid(
    client: aioredis.Redis, keys: Keys, *, timeout_s: float, now: float | None = None
) -> list[OperatorAction]:
    """Expire actions for orders held as unpaid since before now - timeout. Reads the unpaid
    index (state/keys.py), so orders held for other reasons cost nothing here; the record of
    each due order is read for the hold it expires."""
    now = time.time() if now is None else now
    ids = await client.zrangebyscore(keys.unpaid, "-inf", now - timeout_s, start=0, num=SCAN_LIMIT)
    if not ids:
        return []
    loaded = await OrderStore(client, keys).load_many(list(ids))
    actions = []
    for oid in ids:
        record = loaded[oid].record
        if record is None or record.hold_reason != Reason.UNPAID:
            continue
        held_seq = next((h.seq for h in reversed(record.history) if h.kind.value == "held"), 0)
        why = f"unpaid for more than {timeout_s:.0f} s"
        kind = OperatorActionKind.EXPIRE_UNPAID
        actions.append(timer_action(oid, kind, "unpaid-timer", why, held_seq))
    return actions


async def index_unpaid(client: aioredis.Redis, keys: Keys) -> list[OperatorAction]:
    """No actions: files held orders missing from the unpaid and backorder indexes (saved by a
    release before them), which ``due_unpaid`` and ``due_backorders`` then see."""
    await OrderStore(client, keys).index_unpaid()
    return []


async def due_merges(
    client: aioredis.Redis, keys: Keys, *, now: float | None = None
) -> list[OperatorAction]:
    """One release_merged action per merge group whose window has closed; each group found is
    claimed (its due time moved MERGE_RESEND_AFTER_S on, only if it is still there) in the same
    round trip that reads its members."""
    now = time.time() if now is None else now
    groups = await client.zrangebyscore(keys.merge_due, "-inf", now, start=0, num=SCAN_LIMIT)
    if not groups:
        return []
    pipe = client.pipeline(transaction=False)
    for group in groups:
        pipe.smembers(group)
    pipe.zadd(keys.merge_due, dict.fromkeys(groups, now + MERGE_RESEND_AFTER_S), xx=True)
    *found, _ = await pipe.execute()
    actions = []
    for group_key, members in zip(groups, found, strict=True):
        if not members:
            await client.zrem(keys.merge_due, group_key)
            continue
        group = group_key.rsplit("{", 1)[-1].rstrip("}")
        ordered = sorted(members)
        actions.append(
            OperatorAction(
                action_id=make_id("X", group, "release_merged", *ordered),
                order_id=group,
                kind=OperatorActionKind.RELEASE_MERGED,
                actor="system:merge-timer",
                reason="merge window closed",
                at=datetime.now(UTC),
                members=ordered,
            )
        )
    return actions


async def due_closes(
    client: aioredis.Redis, keys: Keys, *, now: float | None = None
) -> list[OperatorAction]:
    """Close actions for delivered orders whose after-sales window has ended."""
    now = time.time() if now is None else now
    ids = await client.zrangebyscore(keys.closing, "-inf", now, start=0, num=SCAN_LIMIT)
    return [
        timer_action(oid, OperatorActionKind.CLOSE, "close-timer", "after-sales window ended")
        for oid in ids
    ]


async def due_pending(
    client: aioredis.Redis, keys: Keys, *, now: float | None = None, gate: ResendGate | None = None
) -> list[OperatorAction]:
    """Settle actions for orders whose saved decision's stock work has been left unfinished for
    PENDING_GRACE_S (the deciding worker died and no input of the order came since): the
    pipeline carries the work out before it looks at the action (docs/decisions/0013). One
    action id per order and pending episode, and an order is asked again only after
    PENDING_RESEND_S: a decision that cannot be finished (a bug) costs one DLQ record a
    minute, not one per tick."""
    now = time.time() if now is None else now
    gate = SETTLES_SENT if gate is None else gate
    due = await OrderStore(client, keys).pending_since(now - PENDING_GRACE_S, SCAN_LIMIT)
    why = "stock work of a saved decision left unfinished"
    return [
        timer_action(oid, OperatorActionKind.SETTLE, "pending-sweeper", why, int(since))
        for oid, since in due
        if gate.send(oid, now)
    ]


async def due_backorders(
    client: aioredis.Redis, keys: Keys, *, gate: ChangeGate | None = None
) -> list[OperatorAction]:
    """Retry actions for the backorders at the head of the queue that the stock now available
    can serve (order/backorders.py). An order is asked again only after a stock movement of
    one of its skus since it was last asked: a retry that loses the race, or stock in a
    warehouse that does not serve the order, costs one retry per movement, not one a tick.
    The action id is derived from the hold (its queue score) and those movements."""
    gate = RETRIES_SENT if gate is None else gate
    queue = await queued(client, keys, SCAN_LIMIT)
    if not queue:
        return []
    stock = await available_units(client, keys, {s for b in queue for s in b.units})
    available = {sku: units for sku, (units, _) in stock.items()}
    actions = []
    for backorder in choose_retries(queue, available):
        skus = sorted(backorder.units)
        versions = tuple(stock[sku][1] for sku in skus)
        if not gate.send(backorder.order_id, versions):
            continue
        why = "stock available: " + ", ".join(f"{sku} {available[sku]}" for sku in skus)
        kind = OperatorActionKind.RETRY_BACKORDER
        parts = (f"{backorder.queued_at:.3f}", *versions)
        actions.append(timer_action(backorder.order_id, kind, "backorder-timer", why, *parts))
    return actions


class ChangeGate:
    """What each order was last asked about, so it is asked again only when that changed (kept
    in the worker: another worker's scans may ask once more, no harm)."""

    def __init__(self) -> None:
        self.sent: dict[str, object] = {}

    def send(self, order_id: str, about: object) -> bool:
        if self.sent.get(order_id) == about:
            return False
        if len(self.sent) > 4 * SCAN_LIMIT:  # forget the oldest half
            self.sent = dict(list(self.sent.items())[2 * SCAN_LIMIT :])
        self.sent[order_id] = about
        return True


RETRIES_SENT = ChangeGate()


class ResendGate:
    """When each order was last asked about, so it is asked again only after ``every``
    seconds (kept in the worker: another worker's scans may ask once more, no harm)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.sent: dict[str, float] = {}

    def send(self, order_id: str, now: float) -> bool:
        if now - self.sent.get(order_id, float("-inf")) < self.every:
            return False
        self.sent[order_id] = now
        if len(self.sent) > 4 * SCAN_LIMIT:  # forget what is long past
            self.sent = {k: t for k, t in self.sent.items() if now - t < self.every}
        return True


PENDING_RESEND_S = 60.0
SETTLES_SENT = ResendGate(PENDING_RESEND_S)


def timer_action(
    order_id: str, kind: OperatorActionKind, timer: str, reason: str, *id_parts: object
) -> OperatorAction:
    """An action a timer sends about one order, as ``system:<timer>``; its id is derived from
    what is due, so a timer firing twice acts once."""
    return OperatorAction(
        action_id=make_id("X", order_id, kind.value, *id_parts),
        order_id=order_id,
        kind=kind,
        actor=f"system:{timer}",
        reason=reason,
        at=datetime.now(UTC),
    )


Scan = Callable[[aioredis.Redis, Keys, Settings], Awaitable[list[OperatorAction]]]

SCANS: dict[str, tuple[float, Scan]] = {
    "unpaid": (SCAN_EVERY_S, lambda c, k, s: due_unpaid(c, k, timeout_s=s.unpaid_timeout_s)),
    "unpaid_index": (INDEX_UNPAID_EVERY_S, lambda c, k, s: index_unpaid(c, k)),
    "merge": (MERGE_SCAN_EVERY_S, lambda c, k, s: due_merges(c, k)),
    "close": (SCAN_EVERY_S, lambda c, k, s: due_closes(c, k)),
    "pending": (SCAN_EVERY_S, lambda c, k, s: due_pending(c, k)),
    "backorder": (SCAN_EVERY_S, lambda c, k, s: due_backorders(c, k)),
}


def register_timers(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    client = connect_async(settings)  # with the configured Redis user, password and TLS
    keys = Keys(settings.redis_prefix)
    for name, (every, scan) in SCANS.items():
        _register_timer(app, settings, counters, client, keys, name, every, scan)


def _register_timer(
    app: faust.App,
    settings: Settings,
    counters: Counter[str],
    client: aioredis.Redis,
    keys: Keys,
    name: str,
    every: float,
    scan: Scan,
) -> None:
    lock = AsyncDistributedLock(client, keys, f"{name}-timer", ttl_ms=int(every * 4000))
    operator_topic = topics.OPERATOR.name(settings.topic_prefix)
    signer = signer_for(settings, WORKER)  # the workers sign what their timers send

    async def tick() -> None:
        if await lock.try_acquire() is None:
            return
        try:
            actions = await scan(client, keys, settings)
            await send_signed(
                app, signer, [(operator_topic, a.order_id, a.model_dump_json()) for a in actions]
            )
            counters[f"{name}_actions_sent"] += len(actions)
        finally:
            await lock.release()

    async def timer() -> None:
        await guarded(counters, f"{name}_timer_errors", f"{name} timer", tick)

    timer.__name__ = f"{name}_timer"
    app.timer(every, name=f"{name}_timer")(timer)
