"""Pure mapping from pipeline messages to ClickHouse rows (no I/O, so it is cheap to unit-test).

Each table's rows are tuples in the order of ``COLUMNS[table]``, typed exactly as
clickhouse-driver expects for the column (str, int, Decimal, unix seconds for DateTime, list), which
is what lets the sink insert with ``types_check=False``.

Replay safety: every row carries its fact's deterministic id and ends with ``rev``
(``revision``: seq, then emission time). The tables are sorted by the id alone and replaced by
rev (migration 0006), so a redelivery (same rev) and a fact emitted again with other content
(a later rev) both leave one row per id: the latest emission.

Privacy: only region-level address fields (country, province code, city) and a keyed hash of
the buyer's identity are kept; names, phones, streets, remarks and DLQ payloads never leave
the pipeline. Free text that does reach a column (event reasons, DLQ details) is scrubbed of
quoted values, e-mail addresses and phone-like digit runs, and a reason a person wrote (an
after-sales request's) is replaced by its code (docs/decisions/0012).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analytics.fact_decode import (
    BuyerFact,
    CommandFact,
    CommandLineFact,
    DlqFact,
    EventFact,
    EventsFact,
    HotFact,
    OrderFact,
    as_fact,
)
from core.privacy import phone_parts, scrub_free_text
from core.settings import Settings, secret_value
from streams.messages import (
    AfterSalesRequest,
    CommandLine,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OrderEvent,
    OrderEvents,
    WmsEvent,
)
from streams.models import Buyer

ORDER_EVENTS = "order_events"
ORDERS = "orders"
ORDER_LINES = "order_lines"
DLQ = "dlq"
STOCK_MOVEMENTS = "stock_movements"
FULFILMENT_COMMANDS = "fulfilment_commands"
WMS_EVENTS = "wms_events"
AFTERSALES_REQUESTS = "aftersales_requests"

COLUMNS: dict[str, tuple[str, ...]] = {
    ORDER_EVENTS: (
        "event_id",
        "order_id",
        "seq",
        "kind",
        "from_state",
        "to_state",
        "reason",
        "at",
        "channel",
        "shop_id",
        "external_id",
        "warehouse",
        "actor",
        "alloc_sku",
        "alloc_warehouse",
        "alloc_qty",
        "rev",  # added by migration 0006: which row of one id wins (revision())
    ),
    ORDERS: (
        "order_id",
        "version",
        "event_id",
        "channel",
        "shop_id",
        "external_id",
        "channel_status",
        "payment_status",
        "created_at",
        "updated_at",
        "paid_at",
        "currency",
        "total",
        "paid_total",
        "shipping_fee",
        "discount_total",
        "country",
        "province_code",
        "city",
        "line_count",
        "units",
        "buyer_hash",
        "rev",  # added by migration 0006: which row of one id wins (revision())
        "phone_hash",  # added by migration 0008: keyed hashes of the phone (phone_keys())
        "phone_key",
    ),
    ORDER_LINES: (
        "order_id",
        "line_id",
        "version",
        "sku",
        "channel_sku",
        "quantity",
        "unit_price",
        "discount",
        "paid_amount",
        "is_gift",
        "currency",
        "channel",
        "shop_id",
        "created_at",
        "province_code",
        "rev",  # added by migration 0006: which row of one id wins (revision())
        "bundle",  # added by migration 0007: the bundle code a component line came from
        "bundle_line_id",  # and the bundle's line id at the channel ('' for neither)
    ),
    DLQ: (
        "dlq_id",
        "reason",
        "detail",
        "source_topic",
        "source_partition",
        "source_offset",
        "channel",
        "received_at",
        "rev",  # added by migration 0006: which row of one id wins (revision())
    ),
    STOCK_MOVEMENTS: (
        "movement_id",
        "sku",
        "warehouse",
        "kind",
        "on_hand_delta",
        "reserved_delta",
        "ref",
        "at",
        "inbound_delta",  # added by migration 0003 (18.16 cannot place columns: appended)
        "sit_delta",
        "actor",  # added by migration 0005
        "reason",
    ),
    FULFILMENT_COMMANDS: (
        "command_id",
        "kind",
        "order_id",
        "channel",
        "shop_id",
        "warehouse",
        "carrier",
        "attempt",
        "shipment",
        "refers_to",
        "merged_orders",
        "line_count",
        "units",
        "weight_g",
        "created_at",
        "rev",  # added by migration 0006: which row of one id wins (revision())
    ),
    WMS_EVENTS: (
        "event_id",
        "command_id",
        "order_id",
        "kind",
        "warehouse",
        "carrier",
        "tracking_number",
        "sellable",
        "line_count",
        "units",
        "at",
        "rev",  # added by migration 0006: which row of one id wins (revision())
    ),
    AFTERSALES_REQUESTS: (
        "request_id",
        "order_id",
        "kind",
        "line_ids",
        "amount",
        "exchange_sku",
        "requested_by",
        "new_province_code",
        "new_city",
        "at",
        "rev",  # added by migration 0006: which row of one id wins (revision())
    ),
}

# Keyed-hash salt for buyer identities. A deployment overrides it (FactSink(salt=...)); changing
# it breaks repeat-buyer analysis across the change, which is the point when a salt leaks.
DEFAULT_BUYER_SALT = "oms-analytics-buyer-v1"

DLQ_DETAIL_MAX = 500  # enough to tell parse errors apart; a long detail may quote payload data

# ClickHouse DateTime is an unsigned 32-bit epoch: values outside it cannot be stored, and a
# bad channel clock must not wedge the sink, so they are clamped (the last second of 2105).
_EPOCH_MAX = int(datetime(2105, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

# lines_changed: customer service added a gift or changed a line (order/edits.py)
_SNAPSHOT_KINDS = frozenset({EventKind.RECEIVED, EventKind.UPDATED, EventKind.LINES_CHANGED})

# Events whose reason is the free text of an after-sales request (order/aftersales.py): a
# customer-service agent's words about a buyer. ClickHouse gets the kind's code instead.
_WRITTEN_REASONS: dict[EventKind, str] = {
    EventKind.RETURN_REQUESTED: "return",
    EventKind.EXCHANGE_REQUESTED: "exchange",
}


def epoch_s(value: datetime) -> int:
    """A time as the unix seconds a DateTime column stores (naive means UTC), clamped to the
    column's range. clickhouse-driver takes the int as it is; a datetime it would convert
    through pytz, row by row (about half of its serialisation time)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return min(max(int(value.timestamp()), 0), _EPOCH_MAX)


def buyer_hash(buyer: Buyer | BuyerFact, salt: str = DEFAULT_BUYER_SALT) -> str:
    """Stable pseudonym for repeat-buyer analysis; keyed so ids cannot be brute-forced back."""
    if buyer.id:
        ident = f"id:{buyer.id}"
    elif buyer.email:
        ident = f"email:{buyer.email.strip().lower()}"
    elif buyer.phone:
        ident = f"phone:{buyer.phone.strip()}"
    else:
        return ""
    return _keyed(ident, salt)


def buyer_id_hash(buyer_id: str, salt: str = DEFAULT_BUYER_SALT) -> str:
    """The ``buyer_hash`` of orders whose buyer has this id (how customer service finds them)."""
    return buyer_hash(BuyerFact(id=buyer_id), salt)


def phone_keys(phone: str, salt: str = DEFAULT_BUYER_SALT) -> tuple[str, str]:
    """(phone_hash, phone_key) of an order's phone (migration 0008): keyed hashes of the whole
    number when it came plain, and of its 3 + 4 digits a mask keeps; ('', '') when it cannot be
    matched (ciphertext, none)."""
    parts = phone_parts(phone)
    if parts is None:
        return "", ""
    full = _keyed(f"phone:{parts.full}", salt) if parts.full else ""
    return full, _keyed(f"phone-part:{parts.partial}", salt)


def _keyed(ident: str, salt: str) -> str:
    return hashlib.blake2b(ident.encode(), key=_hash_key(salt), digest_size=16).hexdigest()


def analytics_salt(settings: Settings) -> str:
    """The key of every pseudonym in ClickHouse: OMS_ANALYTICS_SALT, else the public default."""
    return secret_value(getattr(settings, "analytics_salt", None)) or DEFAULT_BUYER_SALT


@functools.cache
def _hash_key(salt: str) -> bytes:
    """Derived once per salt, not once per order row."""
    return hashlib.blake2b(salt.encode(), digest_size=32).digest()


def _version(seq: int) -> int:
    return seq if seq > 0 else 0


_SEQ_BITS = 20  # up to about a million events per order
_MS_BITS = 44  # milliseconds since 1970: good for five centuries


def revision(at: datetime, seq: int = 0) -> int:
    """Which of two rows under one fact id wins (the ReplacingMergeTree version, the argMax key
    of every query): the higher seq, then the later emission, to the millisecond.

    A redelivered message carries the same value, so its row collapses with the first one. A
    fact emitted again with other content under the same id (a worker that decided the input
    again after its first result was lost) carries a later ``at`` and replaces the first
    emission instead of standing beside it. For order snapshots seq is the event's, so a newer
    version of the order always wins over an older one, whatever the clocks of the workers.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # naive means UTC, as everywhere in the facts
    ms = min(max(int(at.timestamp() * 1000), 0), (1 << _MS_BITS) - 1)
    return (min(_version(seq), (1 << _SEQ_BITS) - 1) << _MS_BITS) | ms


def fact_reason(event: EventFact) -> str:
    """The event's reason as ClickHouse keeps it: codes and ids as they are, a person's words
    as the kind's code, and anything else scrubbed (it may be a WMS's or a channel's text)."""
    written = _WRITTEN_REASONS.get(event.kind)
    if written is not None:
        return written
    return scrub_free_text(event.reason)


def event_row(event: EventFact, rev: int) -> tuple[Any, ...]:
    """``rev``: the event's revision (:func:`revision`), computed once per event."""
    allocs = event.allocations
    return (
        event.event_id,
        event.order_id,
        _version(event.seq),
        event.kind.value,
        event.from_state.value if event.from_state else "",
        event.to_state.value if event.to_state else "",
        fact_reason(event),
        epoch_s(event.at),
        event.channel.value,
        event.shop_id,
        event.external_id,
        event.warehouse,
        event.actor,
        [a.sku for a in allocs],
        [a.warehouse for a in allocs],
        [a.quantity for a in allocs],
        rev,
    )


def order_row(
    event: EventFact, order: OrderFact, rev: int, salt: str = DEFAULT_BUYER_SALT
) -> tuple[Any, ...]:
    paid_at = order.payment.paid_at
    return (
        order.order_id,
        _version(event.seq),
        event.event_id,
        order.channel.value,
        order.shop_id,
        order.external_id,
        order.channel_status.value,
        order.payment.status.value,
        epoch_s(order.created_at),
        epoch_s(order.updated_at),
        epoch_s(paid_at) if paid_at is not None else None,
        order.currency,
        order.total,
        order.payment.paid_total,
        order.shipping_fee,
        order.discount_total,
        order.address.country,
        order.address.province_code,
        order.address.city,
        len(order.lines),
        sum(line.quantity for line in order.lines),
        buyer_hash(order.buyer, salt),
        rev,
        *phone_keys(order.address.phone or order.buyer.phone, salt),
    )


def line_rows(event: EventFact, order: OrderFact, rev: int) -> list[tuple[Any, ...]]:
    version = _version(event.seq)
    created_at = epoch_s(order.created_at)
    return [
        (
            order.order_id,
            line.line_id,
            version,
            line.sku,
            line.channel_sku,
            line.quantity,
            line.unit_price,
            line.discount,
            line.paid_amount,
            1 if line.is_gift else 0,
            order.currency,
            order.channel.value,
            order.shop_id,
            created_at,
            order.address.province_code,
            rev,
            line.bundle.code if line.bundle else "",
            line.bundle.line_id if line.bundle else "",
        )
        for line in order.lines
    ]


def dlq_row(record: DlqFact) -> tuple[Any, ...]:
    """Where and why, never what: the payload (and the key, a channel order id only worth
    something with it) stay on the Kafka DLQ topic for replay; the detail is scrubbed, since
    a parser's message may quote the input."""
    return (
        record.dlq_id,
        record.reason.value,
        scrub_free_text(record.detail)[:DLQ_DETAIL_MAX],
        record.source_topic,
        record.partition,
        record.offset,
        record.channel,
        epoch_s(record.received_at),
        revision(record.received_at),
    )


@dataclass(frozen=True, slots=True)
class StockMovement:
    """One stock ledger entry, as the stock layer reports it; ``movement_id`` is deterministic
    (the ledger shipper uses ``<sku>/<stream entry id>``)."""

    movement_id: str
    sku: str
    warehouse: str
    kind: str  # load, adjust, snapshot, reserve, release, undo, commit, delivered, returned, ...
    on_hand_delta: int
    reserved_delta: int
    at: datetime
    ref: str = ""  # what caused it: order id, operation id (never who or why: below)
    inbound_delta: int = 0  # purchase in transit
    sit_delta: int = 0  # sales in transit (shipped, not yet signed for)
    actor: str = ""  # an operator's change: who (state.stock.movement_note bounds it)
    reason: str = ""  # and why, scrubbed of what may name a person


def stock_movement_rows(
    items: Iterable[StockMovement | Mapping[str, Any]],
) -> list[tuple[Any, ...]]:
    """Rows for ``stock_movements``; mappings with the same keys are accepted too."""
    rows: list[tuple[Any, ...]] = []
    seen: set[str] = set()
    for item in items:
        m = item if isinstance(item, StockMovement) else StockMovement(**dict(item))
        if m.movement_id in seen:
            continue
        seen.add(m.movement_id)
        rows.append(
            (
                m.movement_id,
                m.sku,
                m.warehouse,
                m.kind,
                int(m.on_hand_delta),
                int(m.reserved_delta),
                m.ref,
                epoch_s(m.at),
                int(m.inbound_delta),
                int(m.sit_delta),
                m.actor,
                m.reason,
            )
        )
    return rows


def _units(lines: Sequence[CommandLine] | Sequence[CommandLineFact]) -> int:
    return sum(line.quantity for line in lines)


def command_row(command: CommandFact) -> tuple[Any, ...]:
    """What the warehouse was asked to do; ship_to and the buyer's remark never leave."""
    return (
        command.command_id,
        command.kind.value,
        command.order_id,
        command.channel.value,
        command.shop_id,
        command.warehouse,
        command.carrier,
        max(0, command.attempt),
        command.shipment,
        command.refers_to,
        len(command.merged_order_ids),
        len(command.lines),
        _units(command.lines),
        command.weight_g,
        epoch_s(command.created_at),
        revision(command.created_at),
    )


def wms_event_row(event: WmsEvent) -> tuple[Any, ...]:
    """The warehouse's answer; ``detail`` is free text from another system, so it stays out."""
    return (
        event.event_id,
        event.command_id,
        event.order_id,
        event.kind.value,
        event.warehouse,
        event.carrier,
        event.tracking_number,
        1 if event.sellable else 0,
        len(event.lines),
        _units(event.lines),
        epoch_s(event.at),
        revision(event.at),
    )


def aftersales_row(request: AfterSalesRequest) -> tuple[Any, ...]:
    """Of a new address only the region is kept; the free-text reason may name people."""
    address = request.new_address
    return (
        request.request_id,
        request.order_id,
        request.kind.value,
        list(request.line_ids),
        request.amount,
        request.exchange_sku,
        request.requested_by,
        address.province_code if address is not None else "",
        address.city if address is not None else "",
        epoch_s(request.at),
        revision(request.at),
    )


# What the sink writes: the hot facts as it decodes them (analytics/fact_decode.py), the
# control topics' messages, and hot messages a caller holds (read as the sink would read them).
Fact = (
    HotFact
    | OrderEvents
    | OrderEvent
    | DlqRecord
    | FulfilmentCommand
    | WmsEvent
    | AfterSalesRequest
)

# Single-row facts: message type -> (table, its id, its row). OrderEvent is handled apart
# because one event can also carry an order snapshot (orders + order_lines rows).
_SIMPLE_FACTS: dict[type, tuple[str, Callable[[Any], str], Callable[[Any], tuple[Any, ...]]]] = {
    DlqFact: (DLQ, lambda m: m.dlq_id, dlq_row),
    CommandFact: (FULFILMENT_COMMANDS, lambda m: m.command_id, command_row),
    WmsEvent: (WMS_EVENTS, lambda m: m.event_id, wms_event_row),
    AfterSalesRequest: (AFTERSALES_REQUESTS, lambda m: m.request_id, aftersales_row),
}

FACT_TABLES: tuple[str, ...] = (
    ORDER_EVENTS,
    ORDERS,
    ORDER_LINES,
    DLQ,
    FULFILMENT_COMMANDS,
    WMS_EVENTS,
    AFTERSALES_REQUESTS,
)


def rows_for(
    items: Sequence[Fact], *, salt: str = DEFAULT_BUYER_SALT
) -> dict[str, list[tuple[Any, ...]]]:
    """Rows per table for a batch. A redelivery inside the batch (same id, same revision) is
    dropped, which is only cheaper; two emissions of one id with different revisions are both
    kept, since dropping the later one would lose it (the tables and queries keep the latest).

    Only RECEIVED/UPDATED events with an order snapshot produce ``orders``/``order_lines`` rows,
    one version per event seq.
    """
    out: dict[str, list[tuple[Any, ...]]] = {table: [] for table in FACT_TABLES}
    seen: set[tuple[str, Any, int]] = set()
    for item in items:
        if isinstance(item, OrderEvents | OrderEvent | FulfilmentCommand | DlqRecord):
            item = as_fact(item)
        if isinstance(item, EventsFact):
            for event in item.events:
                _add_event(event, out, seen, salt)
            continue
        if isinstance(item, EventFact):
            _add_event(item, out, seen, salt)
            continue
        spec = _SIMPLE_FACTS.get(type(item))
        if spec is None:
            raise TypeError(f"no ClickHouse fact for {type(item).__name__}")
        table, fact_id, to_row = spec
        row = to_row(item)
        key = (table, fact_id(item), row[-1])  # every row ends with its revision
        if key not in seen:
            seen.add(key)
            out[table].append(row)
    return out


def _add_event(
    event: EventFact,
    out: dict[str, list[tuple[Any, ...]]],
    seen: set[tuple[str, Any, int]],
    salt: str,
) -> None:
    rev = revision(event.at, event.seq)
    if (ORDER_EVENTS, event.event_id, rev) in seen:
        return
    seen.add((ORDER_EVENTS, event.event_id, rev))
    out[ORDER_EVENTS].append(event_row(event, rev))
    order = event.order
    if order is None or event.kind not in _SNAPSHOT_KINDS:
        return
    key = (ORDERS, order.order_id, rev)
    if key in seen:
        return
    seen.add(key)
    out[ORDERS].append(order_row(event, order, rev, salt))
    out[ORDER_LINES].extend(line_rows(event, order, rev))
