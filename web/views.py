"""Read models for the CLI and the worker's order API: an order as operators see it, held
orders, the DLQ by reason.

The order reads take an optional long-lived Redis client: the CLI runs one call per process and
lets them open and close their own, a worker's HTTP API passes the client it already holds."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from analytics.client import connect as connect_clickhouse
from analytics.facts import analytics_salt
from analytics.search import OrderSearch, search_orders
from core.kafka import Record, produce, read_topic
from core.privacy import (
    mask_address_dict,
    mask_order_dict,
    mask_phone,
    mask_text,
    scrub_free_text,
)
from core.settings import Settings
from order.audit import AuditRules
from order.record import OrderRecord
from order.reservation import to_allocations
from state.keys import Keys
from state.orders import OrderStore
from state.redis import connect_async, texts
from state.reservations import StockEngine
from state.stock import operation_id
from streams import topics
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    DlqRecord,
    EventKind,
    OperatorAction,
    OperatorActionKind,
    OrderEvent,
)
from streams.models import ShopKey
from streams.normalise import REPLAY_INPUT_HEADER, REPLAY_OF_HEADER
from streams.signing import OPERATOR, signer_for

HELD_PAGE = 1000  # held orders read per round trip by list_held


@asynccontextmanager
async def redis_for(
    settings: Settings, client: aioredis.Redis | None = None
) -> AsyncIterator[aioredis.Redis]:
    """The caller's long-lived client untouched, else a client for this call only (closed after):
    one read path whether a CLI process or a worker's API asks."""
    if client is not None:
        yield client
        return
    own = connect_async(settings)
    try:
        yield own
    finally:
        await own.aclose()


async def find_orders(
    settings: Settings, ref: str, *, client: aioredis.Redis | None = None
) -> list[tuple[OrderRecord, dict[str, Any]]]:
    """The orders ``ref`` names (OMS id or ``CHANNEL:EXTERNAL_ID``) with their live reservation."""
    async with redis_for(settings, client) as redis_client:
        keys = Keys(settings.redis_prefix)
        records = await OrderStore(redis_client, keys).find(ref)
        engine = StockEngine(redis_client, keys)
        return [(record, await reservation_of(engine, record)) for record in records]


async def reservation_of(engine: StockEngine, record: OrderRecord) -> dict[str, Any]:
    """What the stock engine holds for the order now: reserved, closed (all given back or
    shipped) or none, with the open allocations."""
    # Gift lines are reserved with the order: ask for every sku that ships.
    fields = await engine.reservation(record.order_id, list(record.quantities))
    active = {sku: v for sku, v in fields.items() if v != "-"}
    status = "reserved" if active else ("closed" if fields else "none")
    return {"status": status, "allocations": [a.model_dump() for a in to_allocations(active)]}


LINE_FIELDS = (
    "line_id",
    "sku",
    "channel_sku",
    "title",
    "quantity",
    "unit_price",
    "paid_amount",
    "is_gift",
)
# Record fields shown as they are (JSON mode): what happened to the order after intake.
LIFE_FIELDS = {
    "carrier",
    "commands",
    "merge_group",
    "merged_with",
    "excluded_warehouses",
    "aftersales",
    "refunded",
}


def order_view(
    found: tuple[OrderRecord, dict[str, Any]], *, reveal: bool = False
) -> dict[str, Any]:
    """An order's whole life as one JSON-ready dict: what the channel sent, its state, stock,
    WMS commands, after-sales and history. Personal data is masked unless ``reveal``: the
    order's (``mask_order_dict``: buyer, ship-to, remarks, raw extras), an after-sales
    ship-to's, and whatever a person typed into a reason of the history."""
    record, reservation = found
    order = record.order.model_dump(mode="json")
    ship_to = record.ship_to.model_dump(mode="json") if record.ship_to else None
    history = [h.model_dump(mode="json") for h in record.history]
    if not reveal:
        order = mask_order_dict(order)
        ship_to = mask_address(ship_to)
        history = [{**h, "reason": scrub_free_text(h["reason"])} for h in history]
    life = record.model_dump(mode="json", include=LIFE_FIELDS)
    return {
        "order_id": record.order_id,
        "channel": order["channel"],
        "shop_id": order["shop_id"],
        "external_id": order["external_id"],
        "state": record.state.value,
        "hold_reason": record.hold_reason,
        "reject_reason": record.reject_reason,
        "warehouse": record.warehouse,
        "tags": record.tags,
        "reservation": reservation,
        "duplicates": record.duplicates,
        "paid_total": order["payment"]["paid_total"],
        "total": order["total"],
        "currency": order["currency"],
        "lines": [pick_line(line) for line in order["lines"]],
        "gift_lines": [pick_line(line.model_dump(mode="json")) for line in record.gift_lines],
        "ship_to": ship_to,
        **{field: life[field] for field in sorted(LIFE_FIELDS)},
        "order": order,
        "history": history,
    }


def pick_line(line: dict[str, Any]) -> dict[str, Any]:
    return {k: line[k] for k in LINE_FIELDS}


def mask_address(address: dict[str, Any] | None) -> dict[str, Any] | None:
    """An after-sales ship-to masked exactly like the order's own address (same helper)."""
    return mask_address_dict(address) if address else None


def render_order(view: dict[str, Any]) -> str:
    out = [
        f"{view['order_id']}  {view['channel']}:{view['external_id']}  shop {view['shop_id']}",
        f"  state      {view['state']}"
        + (
            f" ({view['hold_reason'] or view['reject_reason']})"
            if view["hold_reason"] or view["reject_reason"]
            else ""
        ),
        f"  paid       {view['paid_total']} {view['currency']}  (order total {view['total']})"
        + (f"  refunded {view['refunded']}" if Decimal(view["refunded"]) else ""),
        f"  warehouse  {view['warehouse'] or '-'}   reservation {view['reservation']['status']}"
        + (f"   carrier {view['carrier']}" if view["carrier"] else ""),
    ]
    if view["tags"]:
        out.append(f"  tags       {' '.join(view['tags'])}")
    if view["merged_with"]:
        out.append(f"  merged     {', '.join(view['merged_with'])}")
    out += render_lines("lines", view["lines"])
    if view["gift_lines"]:
        out += render_lines("gifts", view["gift_lines"])
    if view["commands"]:
        out += ["  commands:", *map(render_command, view["commands"])]
    if view["aftersales"]:
        out += ["  after-sales:", *map(render_aftersales, view["aftersales"])]
    out.append("  history:")
    out += [
        f"    #{h['seq']:<3} {h['at'][:19]} {h['kind']:<10} "
        f"{(h['from_state'] or '-')}->{(h['to_state'] or '-')} {h['reason']}"
        for h in view["history"]
    ]
    return "\n".join(out)


def render_command(c: dict[str, Any]) -> str:
    return (
        f"    {c['command_id']:<24} {c['kind']:<14} {c['warehouse']:<8} {c['status']:<10} "
        f"{c['carrier']} {c['tracking_number']}"
    ).rstrip()


def render_aftersales(a: dict[str, Any]) -> str:
    return (
        f"    {a['request_id']:<24} {a['kind']:<14} {a['status']:<8} {a['amount'] or ''}".rstrip()
    )


def render_lines(title: str, lines: list[dict[str, Any]]) -> list[str]:
    return [f"  {title}:"] + [
        f"    {ln['line_id']:<14} {ln['sku']:<20} x{ln['quantity']:<4} {ln['paid_amount']}"
        for ln in lines
    ]


async def list_dlq(settings: Settings) -> tuple[list[DlqRecord], dict[str, int]]:
    records = [
        DlqRecord.model_validate_json(r.value)
        for r in await read_topic(settings, topics.DLQ.name(settings.topic_prefix))
    ]
    # A redelivered input is DLQ'd again with the same id: show it once.
    unique = list({r.dlq_id: r for r in sorted(records, key=lambda r: r.received_at)}.values())
    return unique, dict(Counter(r.reason.value for r in unique))


@dataclass(frozen=True)
class ReplayResult:
    selected: int
    sent: int
    skipped_already_replayed: int
    skipped_truncated: int = 0  # only part of the payload was kept: replaying it would mislead
    skipped_not_raw: int = 0  # not from a raw channel topic: its producer re-sends it

    def to_dict(self) -> dict[str, int]:
        return {
            "selected": self.selected,
            "sent": self.sent,
            "skipped_already_replayed": self.skipped_already_replayed,
            "skipped_truncated": self.skipped_truncated,
            "skipped_not_raw": self.skipped_not_raw,
        }


def replay_records(records: list[DlqRecord]) -> list[Record]:
    """DLQ records -> the original raw messages, to their source topic with their key, marked
    with the DLQ id they replay and the position of the input they were made from: a worker
    treats a replay as that input, so one applied already is a redelivery (its outputs are
    sent again) and a new one is applied."""
    out: list[Record] = []
    for r in records:
        value = (
            base64.b64decode(r.payload) if r.payload_encoding == "base64" else r.payload.encode()
        )
        headers = [(REPLAY_OF_HEADER, r.dlq_id.encode())]
        if r.partition >= 0 and r.offset >= 0:
            position = f"{r.source_topic}:{r.partition}:{r.offset}"
            headers.append((REPLAY_INPUT_HEADER, position.encode()))
        out.append((r.source_topic, r.key.encode() or None, value, headers))
    return out


async def replay_dlq(
    settings: Settings, *, reason: str = "", channel: str = "", again: bool = False
) -> ReplayResult:
    """Send DLQ'd inputs back through the pipeline (after a fix to config or code). Each record
    is replayed once unless ``again``; a still-bad input simply lands in the DLQ again."""
    records, _ = await list_dlq(settings)
    client = connect_async(settings)
    try:
        key = Keys(settings.redis_prefix).dlq_replayed
        done = set() if again else set(await client.smembers(key))
        raw_topics = {spec.name(settings.topic_prefix) for spec in topics.RAW_TOPICS}
        todo, result = select_replay(
            records, done, reason=reason, channel=channel, raw_topics=raw_topics
        )
        sent = await produce(settings, replay_records(todo)) if todo else 0
        if todo:
            await client.sadd(key, *(r.dlq_id for r in todo))
    finally:
        await client.aclose()
    return replace(result, sent=sent)


def select_replay(
    records: list[DlqRecord],
    done: set[str],
    *,
    reason: str = "",
    channel: str = "",
    raw_topics: set[str] | None = None,
) -> tuple[list[DlqRecord], ReplayResult]:
    """The records to send (matching the filters, not replayed before, payload whole, from a
    raw channel topic) and the counts of what was left out; ``sent`` is what will be sent. A
    truncated payload is never replayed: its first megabyte is not the input. Only raw channel
    topics (``raw_topics``) are replay targets: the DLQ is writable by whoever may write it,
    and a forged record must not make an operator write to the command topic; control inputs
    (operator, WMS, after-sales) are signed by their producer, who re-sends them (their ids
    make that safe)."""
    chosen = [
        r
        for r in records
        if (not reason or r.reason.value == reason) and (not channel or r.channel == channel)
    ]
    ours = [r for r in chosen if raw_topics is None or r.source_topic in raw_topics]
    foreign = len(chosen) - len(ours)
    whole = [r for r in ours if not r.payload_truncated]
    todo = [r for r in whole if r.dlq_id not in done]
    return todo, ReplayResult(
        len(chosen), len(todo), len(whole) - len(todo), len(ours) - len(whole), foreign
    )


async def list_held(
    settings: Settings,
    limit: int = 1000,
    since: float = 0.0,
    *,
    reason: str = "",
    keep: Callable[[dict[str, Any]], bool] | None = None,
    client: aioredis.Redis | None = None,
) -> list[dict[str, Any]]:
    """Held orders, oldest hold first, with the reason a person has to work on: up to ``limit``
    rows with that ``reason`` that ``keep`` (the API's shop scope) lets through. The index is
    read page by page until the rows are there, so a filter never hides holds behind others."""
    wanted = limit if limit > 0 else None
    rows: list[dict[str, Any]] = []
    async with redis_for(settings, client) as redis_client:
        store = OrderStore(redis_client, Keys(settings.redis_prefix))
        offset = 0
        while wanted is None or len(rows) < wanted:
            page = max(HELD_PAGE, (wanted or 0) - len(rows))
            ids = await store.held_ids(page, since, offset=offset)
            offset += len(ids)
            loaded = await store.load_many(ids)
            found = [held_row(oid, lr.record) for oid, lr in loaded.items() if lr.record]
            rows += [
                r
                for r in found
                if (not reason or r["reason"] == reason) and (keep is None or keep(r))
            ]
            if len(ids) < page:
                break
    return rows[:wanted]


def held_row(order_id: str, record: OrderRecord) -> dict[str, Any]:
    held_at = next((h.at for h in reversed(record.history) if h.kind.value == "held"), None)
    return {
        "order_id": order_id,
        "channel": record.order.channel.value,
        "shop_id": record.order.shop_id,
        "external_id": record.order.external_id,
        "reason": record.hold_reason,
        "held_at": held_at.isoformat() if held_at else "",
        "total": str(record.order.total),
        "skus": sorted(record.quantities),
        "tags": record.tags,
    }


async def find_matching(
    settings: Settings,
    search: OrderSearch,
    *,
    shops: frozenset[str] | None = None,
    client: aioredis.Redis | None = None,
) -> list[dict[str, Any]]:
    """The orders ``search`` finds in the ClickHouse facts (analytics/search.py; ``shops``: a
    token's scope), newest first, each with its state, hold reason and tags from its record
    (an order whose record has expired keeps what the facts say). No personal data: ids,
    shop, time, total."""

    def query() -> list[dict[str, Any]]:
        ch = connect_clickhouse(settings)
        try:
            db, salt = settings.clickhouse_database, analytics_salt(settings)
            return search_orders(ch, db, search, salt, shops)
        finally:
            ch.disconnect()

    rows = await asyncio.to_thread(query)
    async with redis_for(settings, client) as redis_client:
        store = OrderStore(redis_client, Keys(settings.redis_prefix))
        loaded = await store.load_many([r["order_id"] for r in rows])
    for row in rows:
        record = loaded[row["order_id"]].record if row["order_id"] in loaded else None
        row["state"] = record.state.value if record else ""
        row["reason"] = record.hold_reason if record else ""
        row["tags"] = record.tags if record else []
    return rows


LATE_PAGE = 200  # deadline-index entries read per round trip


async def list_late(
    settings: Settings,
    *,
    within_s: float = 0.0,
    limit: int = 1000,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    client: aioredis.Redis | None = None,
    now: float | None = None,
    scan_budget: int | None = None,
) -> list[dict[str, Any]]:
    """Orders still to ship whose ship-by deadline has passed or comes within ``within_s``,
    earliest deadline first (then higher priority): up to ``limit`` rows ``keep`` (the API's
    shop scope) lets through. Reads the deadline index page by page, never every order, and
    no more than ``scan_budget`` entries of it when given (the API's bound per request)."""
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    async with redis_for(settings, client) as redis_client:
        keys = Keys(settings.redis_prefix)
        store = OrderStore(redis_client, keys)
        offset = 0
        while len(rows) < limit and (scan_budget is None or offset < scan_budget):
            ids = texts(
                await redis_client.zrangebyscore(
                    keys.deadlines, "-inf", now + within_s, offset, LATE_PAGE
                )
            )
            offset += len(ids)
            loaded = await store.load_many(ids)
            found = [late_row(oid, lr.record, now) for oid, lr in loaded.items() if lr.record]
            rows += [r for r in found if keep is None or keep(r)]
            if len(ids) < LATE_PAGE:
                break
    rows.sort(key=lambda r: (r["ship_by"], -r["priority"]))
    return rows[:limit]


def late_row(order_id: str, record: OrderRecord, now: float) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "channel": record.order.channel.value,
        "shop_id": record.order.shop_id,
        "external_id": record.order.external_id,
        "state": record.state.value,
        "reason": record.hold_reason,
        "priority": record.priority,
        "ship_by": datetime.fromtimestamp(record.ship_by, UTC).isoformat(),
        "overdue_s": round(now - record.ship_by),  # < 0: time left
    }


@dataclass(frozen=True)
class HeldFilter:
    """Which held orders a bulk release or cancel works on (``./oms held release|cancel``
    without an order): every given part must match."""

    reason: str = ""
    shop: str = ""  # CHANNEL/SHOP
    sku: str = ""
    held_before: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.reason or self.shop or self.sku or self.held_before)

    def keeps(self, row: dict[str, Any]) -> bool:
        return (
            (not self.shop or ShopKey.of(row["channel"], row["shop_id"]) == self.shop)
            and (not self.sku or self.sku in row["skus"])
            and (
                self.held_before is None
                or (
                    bool(row["held_at"])
                    and datetime.fromisoformat(row["held_at"]) < self.held_before
                )
            )
        )


@dataclass(frozen=True)
class BulkOutcome:
    """One order of a bulk action: its state after (None: not applied within the wait) and
    whether the worker refused the action (an order no longer held, say)."""

    order_id: str
    before: str
    after: str | None
    refused: bool


async def act_on_held(
    settings: Settings,
    rows: list[dict[str, Any]],
    kind: str,
    *,
    actor: str,
    reason: str,
    batch_id: str,
    wait_s: float = 60.0,
) -> list[BulkOutcome]:
    """One operator action per selected held order, all sent in one produce (signed as the
    operator, ids ``<batch_id>.<order id>``: a retry with the same batch id applies each once),
    then every record polled until the worker applied its action or ``wait_s`` passed."""
    topic = topics.OPERATOR.name(settings.topic_prefix)
    signer = signer_for(settings, OPERATOR)
    records: list[Record] = []
    input_ids: dict[str, str] = {}
    for row in rows:
        action = OperatorAction(
            action_id=operation_id(f"{batch_id}.{row['order_id']}"),
            order_id=row["order_id"],
            kind=OperatorActionKind(kind),
            actor=actor,
            reason=reason,
            at=datetime.now(UTC),
        )
        key, value = action.order_id.encode(), action.model_dump_json().encode()
        records.append((topic, key, value, signer.headers(topic, key, value)))
        input_ids[action.order_id] = f"action:{action.action_id}"
    await produce(settings, records)
    found: dict[str, BulkOutcome] = {}
    async with redis_for(settings, None) as client:
        store = OrderStore(client, Keys(settings.redis_prefix))
        for oid, after in (await wait_applied(store, input_ids, wait_s)).items():
            events = await events_of(store, oid, input_ids[oid])
            refused = any(e.kind is EventKind.ACTION_REFUSED for e in events)
            found[oid] = BulkOutcome(oid, "held", after.state.value, refused)
    return [found.get(r["order_id"], BulkOutcome(r["order_id"], "held", None, False)) for r in rows]


@dataclass(frozen=True)
class Applied:
    """An order input sent from the CLI and what became of it: the record before, the record
    once a worker applied it (None: not within the wait), and the events it produced."""

    before: OrderRecord
    after: OrderRecord | None
    events: list[OrderEvent]
    repeated: bool = False  # its id was applied before: nothing sent, nothing changed

    @property
    def refused(self) -> OrderEvent | None:
        kinds = (EventKind.ACTION_REFUSED, EventKind.TRANSITION_REFUSED)
        return next((e for e in self.events if e.kind in kinds), None)


def applied_summary(applied: Applied, actor: str) -> dict[str, Any]:
    """What an applied (or still queued) order input did, as the CLI's --json and the API
    print it: state before and after, the last event, why, who, new commands, a refusal."""
    before, after = applied.before, applied.after
    if after is None:
        return {"order_id": before.order_id, "before": before.state.value, "actor": actor}
    last = applied.events[-1] if applied.events else None
    data: dict[str, Any] = {
        "order_id": after.order_id,
        "before": before.state.value,
        "state": after.state.value,
        "last_event": last.kind.value if last else "",
        "reason": after.hold_reason or after.reject_reason or (last.reason if last else ""),
        "actor": actor,
        "commands": [c.command_id for c in after.commands[len(before.commands) :]],
        "tags": after.tags,
    }
    if applied.refused is not None:
        data["refused"] = applied.refused.detail
    if applied.repeated:
        data["repeated"] = True
    return data


class InputIdReused(ValueError):
    """An after-sales request id given again for another kind of request on the same order:
    the worker would take it for the first one and do nothing, so it is refused here."""


async def submit_action(
    settings: Settings,
    ref: str,
    kind: str,
    *,
    actor: str,
    reason: str = "",
    wait_s: float = 30.0,
    signer: str = OPERATOR,
    action_id: str = "",
    tags: list[str] | None = None,
    **edit: Any,
) -> Applied:
    """Put an operator action on ``oms.operator`` for the one order ``ref`` names, signed as
    ``signer`` (the CLI's ``operator``, the API's ``api``: streams/signing.py), then wait (bounded)
    until a worker has applied it; returns (before, after or None on timeout). ``tags``: those
    a ``tag`` / ``untag`` action adds or removes (checked by the caller, ``parse_tags``);
    ``edit``: an ``add_gift`` / ``change_line`` action's ``line_id``, ``sku``, ``quantity``
    (checked by the caller, streams/edits.py, and by the message model).

    ``action_id`` (checked like a stock op id, ``state.stock.operation_id``; new when empty)
    makes a retry safe: the worker applies an action id once per order."""
    before = await find_one(settings, ref)
    action = OperatorAction(
        action_id=operation_id(action_id),
        order_id=before.order_id,
        kind=OperatorActionKind(kind),
        actor=actor,
        reason=reason,
        at=datetime.now(UTC),
        tags=tags or [],
        **edit,
    )
    input_id = f"action:{action.action_id}"
    return await applied_before(settings, before, input_id) or await send_and_wait(
        settings,
        topics.OPERATOR.name(settings.topic_prefix),
        before,
        action,
        input_id,
        wait_s,
        signer,
    )


async def submit_aftersales(
    settings: Settings,
    ref: str,
    kind: AfterSalesKind,
    *,
    requested_by: str,
    wait_s: float = 30.0,
    signer: str = OPERATOR,
    request_id: str = "",
    **fields: Any,
) -> Applied:
    """An after-sales request on ``oms.aftersales`` for the one order ``ref`` names, signed as
    ``signer``; waits (bounded) until a worker has applied it.

    ``request_id`` (checked like a stock op id; new when empty) makes a retry safe: the worker
    applies ``aftersales:<request_id>`` once per order, so a refund retried after a timeout
    refunds once. The id given again for another kind of request is ``InputIdReused``."""
    before = await find_one(settings, ref)
    request = AfterSalesRequest(
        request_id=operation_id(request_id),
        order_id=before.order_id,
        kind=kind,
        requested_by=requested_by,
        at=datetime.now(UTC),
        **fields,
    )
    first = next((e for e in before.aftersales if e.request_id == request.request_id), None)
    if first is not None and first.kind is not kind:
        raise InputIdReused(
            f"request id {request.request_id} was used for a {first.kind.value} request on "
            f"{before.order_id}: give a new --request-id for this {kind.value}"
        )
    input_id = f"aftersales:{request.request_id}"
    return await applied_before(settings, before, input_id) or await send_and_wait(
        settings,
        topics.AFTERSALES.name(settings.topic_prefix),
        before,
        request,
        input_id,
        wait_s,
        signer,
    )


async def applied_before(settings: Settings, before: OrderRecord, input_id: str) -> Applied | None:
    """A retry of an input the order applied already (same id): not sent again (the worker
    would only re-emit its outputs), reported as ``repeated`` with the events it caused."""
    if not before.has_applied(input_id):
        return None
    async with redis_for(settings, None) as client:
        store = OrderStore(client, Keys(settings.redis_prefix))
        events = await events_of(store, before.order_id, input_id)
    return Applied(before, before, events, repeated=True)


async def events_of(store: OrderStore, order_id: str, input_id: str) -> list[OrderEvent]:
    """The events one input produced, from the outputs kept beside the order's record."""
    suffix = topics.ORDER_EVENTS.suffix
    (outputs,) = await store.outputs([(order_id, input_id)])
    return [
        OrderEvent.model_validate_json(value)
        for topic, _, value in outputs or []
        if topic.endswith(suffix)
    ]


async def find_one(settings: Settings, ref: str) -> OrderRecord:
    found = await find_orders(settings, ref)
    if len(found) != 1:
        raise LookupError(f"{ref!r} names {len(found)} orders; use the OMS order id")
    return found[0][0]


async def send_and_wait(
    settings: Settings,
    topic: str,
    before: OrderRecord,
    message: Any,
    input_id: str,
    wait_s: float,
    signer: str,
) -> Applied:
    """Send one order-keyed message signed as ``signer`` and poll the order record until a
    worker has applied the input (``has_applied``: its outputs may have left the outbox), or
    give up after ``wait_s``."""
    order_id = message.order_id
    key, value = order_id.encode(), message.model_dump_json().encode()
    headers = signer_for(settings, signer).headers(topic, key, value)
    await produce(settings, [(topic, key, value, headers)])
    client = connect_async(settings)
    try:
        store = OrderStore(client, Keys(settings.redis_prefix))
        after = (await wait_applied(store, {order_id: input_id}, wait_s)).get(order_id)
        if after is None:
            return Applied(before, None, [])
        return Applied(before, after, await events_of(store, order_id, input_id))
    finally:
        await client.aclose()


async def wait_applied(
    store: OrderStore, input_ids: dict[str, str], wait_s: float
) -> dict[str, OrderRecord]:
    """Polls the orders' records until each has applied its input (``has_applied``: its
    outputs may have left the outbox) with no stock work pending, or ``wait_s`` passed; returns
    the records of those that did."""
    applied: dict[str, OrderRecord] = {}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        waiting = [oid for oid in input_ids if oid not in applied]
        for oid, loaded in (await store.load_many(waiting)).items():
            after = loaded.record
            if after is not None and after.has_applied(input_ids[oid]) and not loaded.unsettled:
                applied[oid] = after
        if len(applied) == len(input_ids):
            break
        await asyncio.sleep(0.2)
    return applied


# Audit rule settings that are lists of personal data: shown masked, and counted.
_MASKERS = {"phones": mask_phone, "addresses": mask_text}


def masked_rules(rules: AuditRules) -> dict[str, Any]:
    """The rules as JSON-ready data, blacklist entries masked and sorted for a stable view."""
    data = rules.model_dump(mode="json")
    for name, mask in _MASKERS.items():
        data["blacklist"][name] = sorted(mask(entry) for entry in data["blacklist"][name])
    data["blacklist"]["buyer_ids"] = sorted(data["blacklist"]["buyer_ids"])
    return data
