"""Timers: unpaid orders are cancelled, and their stock released, after OMS_UNPAID_TIMEOUT_S.

The timer only decides *which* orders are due; the cancel itself is an `expire_unpaid` operator
action on `oms.operator`, applied by the pipeline like any input, so a payment that arrives
between the scan and the action wins (the action is refused, not applied) and a timer firing
twice cancels once (the action id is derived from the order and its hold).
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import faust
import redis.asyncio as aioredis

from agents.guard import guarded
from agents.intake import send_all
from ops.settings import Settings
from state.keys import Keys
from state.lock import AsyncDistributedLock
from state.orders import OrderStore
from streams import topics
from streams.messages import OperatorAction, OperatorActionKind, make_id

SCAN_EVERY_S = 5.0
SCAN_LIMIT = 2000
TIMER_ACTOR = "system:unpaid-timer"


async def due_unpaid(
    client: aioredis.Redis, keys: Keys, *, timeout_s: float, now: float | None = None
) -> list[OperatorAction]:
    """Expire actions for orders held as unpaid since before now - timeout."""
    now = time.time() if now is None else now
    ids = await client.zrangebyscore(keys.held, "-inf", now - timeout_s, start=0, num=SCAN_LIMIT)
    if not ids:
        return []
    loaded = await OrderStore(client, keys).load_many(list(ids))
    actions = []
    for oid in ids:
        record = loaded[oid].record
        if record is None or record.hold_reason != "unpaid":
            continue
        held_seq = next((h.seq for h in reversed(record.history) if h.kind.value == "held"), 0)
        actions.append(
            OperatorAction(
                action_id=make_id("X", oid, "expire_unpaid", held_seq),
                order_id=oid,
                kind=OperatorActionKind.EXPIRE_UNPAID,
                actor=TIMER_ACTOR,
                reason=f"unpaid for more than {timeout_s:.0f} s",
                at=datetime.now(UTC),
            )
        )
    return actions


def register_unpaid_timer(app: faust.App, settings: Settings, counters: Counter[str]) -> None:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = Keys(settings.redis_prefix)
    lock = AsyncDistributedLock(client, keys, "unpaid-timer", ttl_ms=int(SCAN_EVERY_S * 4000))
    operator_topic = topics.OPERATOR.name(settings)

    async def tick() -> None:
        if await lock.try_acquire() is None:
            return
        try:
            actions = await due_unpaid(client, keys, timeout_s=settings.unpaid_timeout_s)
            await send_all(
                app, [(operator_topic, a.order_id, a.model_dump_json()) for a in actions]
            )
            counters["unpaid_expiry_sent"] += len(actions)
        finally:
            await lock.release()

    @app.timer(SCAN_EVERY_S)
    async def expire_unpaid() -> None:
        """One worker scans per tick (lock)."""
        await guarded(counters, "unpaid_timer_errors", "unpaid timer", tick)
