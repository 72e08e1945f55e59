"""Read models for the CLI: an order as operators see it, the DLQ by reason."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.kafka import Record, produce, read_topic
from ops.settings import Settings
from state.keys import Keys
from state.orders import OrderRecord, OrderStore
from state.redis import connect_async
from state.reservations import StockEngine, to_allocations
from streams import topics
from streams.messages import DlqRecord, OperatorAction, OperatorActionKind
from streams.privacy import mask_order_dict

REPLAY_HEADER = "oms-replay-of"


async def find_orders(settings: Settings, ref: str) -> list[tuple[OrderRecord, dict[str, Any]]]:
    client = connect_async(settings)
    try:
        keys = Keys(settings.redis_prefix)
        records = await OrderStore(client, keys).find(ref)
        out = []
        engine = StockEngine(client, keys)
        for record in records:
            fields = await engine.reservation(record.order_id, list(record.order.quantity_by_sku))
            active = {sku: v for sku, v in fields.items() if v != "-"}
            status = "reserved" if active else ("closed" if fields else "none")
            allocations = [a.model_dump() for a in to_allocations(active)]
            out.append((record, {"status": status, "allocations": allocations}))
        return out
    finally:
        await client.aclose()


def order_view(
    found: tuple[OrderRecord, dict[str, Any]], *, reveal: bool = False
) -> dict[str, Any]:
    record, reservation = found
    order = record.order.model_dump(mode="json")
    if not reveal:
        order = mask_order_dict(order)
    return {
        "order_id": record.order_id,
        "channel": order["channel"],
        "shop_id": order["shop_id"],
        "external_id": order["external_id"],
        "state": record.state.value,
        "hold_reason": record.hold_reason,
        "reject_reason": record.reject_reason,
        "warehouse": record.warehouse,
        "reservation": reservation,
        "duplicates": record.duplicates,
        "paid_total": order["payment"]["paid_total"],
        "total": order["total"],
        "currency": order["currency"],
        "lines": [
            {
                k: line[k]
                for k in (
                    "line_id",
                    "sku",
                    "channel_sku",
                    "title",
                    "quantity",
                    "unit_price",
                    "paid_amount",
                    "is_gift",
                )
            }
            for line in order["lines"]
        ],
        "order": order,
        "history": [h.model_dump(mode="json") for h in record.history],
    }


def render_order(view: dict[str, Any]) -> str:
    out = [
        f"{view['order_id']}  {view['channel']}:{view['external_id']}  shop {view['shop_id']}",
        f"  state      {view['state']}"
        + (
            f" ({view['hold_reason'] or view['reject_reason']})"
            if view["hold_reason"] or view["reject_reason"]
            else ""
        ),
        f"  paid       {view['paid_total']} {view['currency']}  (order total {view['total']})",
        f"  warehouse  {view['warehouse'] or '-'}   reservation {view['reservation']['status']}",
        "  lines:",
    ]
    out += [
        f"    {ln['line_id']:<14} {ln['sku']:<20} x{ln['quantity']:<4} {ln['paid_amount']}"
        for ln in view["lines"]
    ]
    out.append("  history:")
    out += [
        f"    #{h['seq']:<3} {h['at'][:19]} {h['kind']:<10} "
        f"{(h['from_state'] or '-')}->{(h['to_state'] or '-')} {h['reason']}"
        for h in view["history"]
    ]
    return "\n".join(out)


async def list_dlq(settings: Settings) -> tuple[list[DlqRecord], dict[str, int]]:
    records = [
        DlqRecord.model_validate_json(r.value)
        for r in await read_topic(settings, topics.DLQ.name(settings))
    ]
    # A redelivered input is DLQ'd again with the same id: show it once.
    unique = list({r.dlq_id: r for r in sorted(records, key=lambda r: r.received_at)}.values())
    return unique, dict(Counter(r.reason.value for r in unique))


@dataclass(frozen=True)
class ReplayResult:
    selected: int
    sent: int
    skipped_already_replayed: int

    def to_dict(self) -> dict[str, int]:
        return {
            "selected": self.selected,
            "sent": self.sent,
            "skipped_already_replayed": self.skipped_already_replayed,
        }


def replay_records(records: list[DlqRecord]) -> list[Record]:
    """DLQ records -> the original raw messages, to their source topic with their key, marked
    with the DLQ id they replay (workers treat them like any other input)."""
    out: list[Record] = []
    for r in records:
        value = (
            base64.b64decode(r.payload) if r.payload_encoding == "base64" else r.payload.encode()
        )
        out.append(
            (r.source_topic, r.key.encode() or None, value, [(REPLAY_HEADER, r.dlq_id.encode())])
        )
    return out


async def replay_dlq(
    settings: Settings, *, reason: str = "", channel: str = "", again: bool = False
) -> ReplayResult:
    """Send DLQ'd inputs back through the pipeline (after a fix to config or code). Each record
    is replayed once unless ``again``; a still-bad input simply lands in the DLQ again."""
    records, _ = await list_dlq(settings)
    chosen = [
        r
        for r in records
        if (not reason or r.reason.value == reason) and (not channel or r.channel == channel)
    ]
    client = connect_async(settings)
    try:
        key = Keys(settings.redis_prefix).dlq_replayed
        done = set() if again else set(await client.smembers(key))
        todo = [r for r in chosen if r.dlq_id not in done]
        sent = await produce(settings, replay_records(todo)) if todo else 0
        if todo:
            await client.sadd(key, *(r.dlq_id for r in todo))
    finally:
        await client.aclose()
    return ReplayResult(len(chosen), sent, len(chosen) - len(todo))


async def list_held(
    settings: Settings, limit: int = 1000, since: float = 0.0
) -> list[dict[str, Any]]:
    """Held orders, oldest hold first, with the reason a person has to work on."""
    client = connect_async(settings)
    try:
        store = OrderStore(client, Keys(settings.redis_prefix))
        ids = await store.held_ids(limit, since)
        loaded = await store.load_many(ids)
        out = []
        for oid in ids:
            record = loaded[oid].record
            if record is None:
                continue
            held_at = next((h.at for h in reversed(record.history) if h.kind.value == "held"), None)
            out.append(
                {
                    "order_id": oid,
                    "channel": record.order.channel.value,
                    "shop_id": record.order.shop_id,
                    "external_id": record.order.external_id,
                    "reason": record.hold_reason,
                    "held_at": held_at.isoformat() if held_at else "",
                    "total": str(record.order.total),
                }
            )
        return out
    finally:
        await client.aclose()


async def submit_action(
    settings: Settings, ref: str, kind: str, *, actor: str, reason: str = "", wait_s: float = 30.0
) -> tuple[OrderRecord, OrderRecord | None]:
    """Put an operator action on ``oms.operator`` for the one order ``ref`` names, then wait
    (bounded) until a worker has applied it; returns (before, after or None on timeout)."""
    found = await find_orders(settings, ref)
    if len(found) != 1:
        raise LookupError(f"{ref!r} names {len(found)} orders; use the OMS order id")
    before = found[0][0]
    action = OperatorAction(
        action_id=uuid.uuid4().hex,
        order_id=before.order_id,
        kind=OperatorActionKind(kind),
        actor=actor,
        reason=reason,
        at=datetime.now(UTC),
    )
    await produce(
        settings,
        [
            (
                topics.OPERATOR.name(settings),
                before.order_id.encode(),
                action.model_dump_json().encode(),
                [],
            )
        ],
    )
    input_id = f"action:{action.action_id}"
    client = connect_async(settings)
    try:
        store = OrderStore(client, Keys(settings.redis_prefix))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            after = await store.load(before.order_id)
            if after is not None and input_id in after.outbox:
                return before, after
            await asyncio.sleep(0.2)
        return before, None
    finally:
        await client.aclose()
