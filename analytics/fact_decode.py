"""The hot facts as the sink reads them: compiled, typed decoding of only what becomes a row.

Order events (an order's batch of transitions per message, the first often with the whole order
snapshot), fulfilment commands and DLQ records
are most of what the sink reads, and parsing them into the full pydantic messages cost more
than building and inserting their rows (124 µs per order with pydantic, most of the sink's own
work). These msgspec structs declare the fields the rows need, with the messages' own names,
types and bounds; everything else in a message (addresses, names, titles, the snapshot's raw
channel fields, a DLQ payload) is skipped by the decoder without being built. A message that is
not valid JSON of its kind fails here as it would fail pydantic, and the caller counts it.

The control topics' facts (WMS events, after-sales requests) are few and come from outside
the OMS, so they keep the full pydantic models and the same checks as the workers apply.
Docs: docs/decisions/0018-lean-fact-sink.md.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from streams.messages import (
    MAX_ACTOR_CHARS,
    MAX_ALLOCATIONS,
    MAX_ATTEMPT,
    MAX_CARRIER_CHARS,
    MAX_COMMAND_LINES,
    MAX_DLQ_DETAIL_CHARS,
    MAX_EVENTS_PER_MESSAGE,
    MAX_MEMBERS,
    MAX_OFFSET,
    MAX_PARTITION,
    MAX_REASON_CHARS,
    MAX_SEQ,
    MAX_STOCK_UNITS,
    MAX_TOPIC_CHARS,
    MAX_WEIGHT_G,
    CommandKind,
    DlqReason,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OrderEvent,
    OrderEvents,
    OrderState,
)
from streams.models import (
    MAX_CODE_CHARS,
    MAX_LINE_QUANTITY,
    MAX_ORDER_LINES,
    MAX_PROVINCE_CODE_CHARS,
    MAX_TEXT_CHARS,
    Channel,
    ChannelStatus,
    PaymentStatus,
    check_money,
)

log = logging.getLogger(__name__)

Id = Annotated[str, Meta(min_length=1, max_length=MAX_CODE_CHARS)]
Ref = Annotated[str, Meta(max_length=MAX_CODE_CHARS)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_CHARS)]
Units = Annotated[int, Meta(gt=0, le=MAX_LINE_QUANTITY)]


def check_amounts(*amounts: Decimal) -> None:
    """The orders' money rules (streams/models.py check_money, and not negative): a value the
    Decimal columns cannot hold would fail every insert of its batch, again and again."""
    for amount in amounts:
        check_money(amount)
        if amount < 0:
            raise ValueError("money must not be negative")


class AllocationFact(Struct, frozen=True):
    sku: Id
    warehouse: Id
    quantity: Annotated[int, Meta(gt=0, le=MAX_STOCK_UNITS)]


class BuyerFact(Struct, frozen=True):
    id: Annotated[str, Meta(max_length=256)] = ""
    email: Annotated[str, Meta(max_length=320)] = ""
    phone: Annotated[str, Meta(max_length=64)] = ""


class AddressFact(Struct, frozen=True):
    country: Annotated[str, Meta(min_length=2, max_length=2)] = "CN"
    province_code: Annotated[str, Meta(max_length=MAX_PROVINCE_CODE_CHARS)] = ""
    city: Text = ""
    phone: Annotated[str, Meta(max_length=256)] = ""  # only ever stored as keyed hashes


class PaymentFact(Struct, frozen=True):
    status: PaymentStatus
    paid_total: Decimal
    paid_at: datetime | None = None

    def __post_init__(self) -> None:
        check_amounts(self.paid_total)


class BundleFact(Struct, frozen=True):
    code: Id
    line_id: Id
    quantity: Units


class LineFact(Struct, frozen=True):
    line_id: Id
    sku: Id
    quantity: Units
    unit_price: Decimal
    paid_amount: Decimal
    channel_sku: Ref = ""
    discount: Decimal = Decimal("0")
    is_gift: bool = False
    bundle: BundleFact | None = None

    def __post_init__(self) -> None:
        check_amounts(self.unit_price, self.paid_amount, self.discount)


class OrderFact(Struct, frozen=True):
    """The order snapshot of a received/updated event: what the orders and order_lines rows
    keep (region, not address; a keyed hash of the buyer, not the buyer)."""

    order_id: Id
    channel: Channel
    shop_id: Id
    external_id: Id
    channel_status: ChannelStatus
    created_at: datetime
    updated_at: datetime
    currency: Annotated[str, Meta(min_length=3, max_length=3)]
    buyer: BuyerFact
    address: AddressFact
    lines: Annotated[list[LineFact], Meta(min_length=1, max_length=MAX_ORDER_LINES)]
    payment: PaymentFact
    total: Decimal
    shipping_fee: Decimal = Decimal("0")
    discount_total: Decimal = Decimal("0")

    def __post_init__(self) -> None:
        check_amounts(self.total, self.shipping_fee, self.discount_total)


class EventFact(Struct, frozen=True):
    event_id: Id
    order_id: Id
    seq: Annotated[int, Meta(ge=0, le=MAX_SEQ)]
    kind: EventKind
    at: datetime
    channel: Channel
    shop_id: Ref
    external_id: Ref
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    reason: Annotated[str, Meta(max_length=MAX_REASON_CHARS)] = ""
    warehouse: Ref = ""
    allocations: Annotated[list[AllocationFact], Meta(max_length=MAX_ALLOCATIONS)] = []
    order: OrderFact | None = None
    actor: Annotated[str, Meta(min_length=1, max_length=MAX_ACTOR_CHARS)] = "system"


class EventsFact(Struct, frozen=True):
    """An OrderEvents message: one order's transitions of one batch."""

    order_id: Id
    events: Annotated[list[EventFact], Meta(min_length=1, max_length=MAX_EVENTS_PER_MESSAGE)]


class CommandLineFact(Struct, frozen=True):
    quantity: Units


class CommandFact(Struct, frozen=True):
    command_id: Id
    kind: CommandKind
    order_id: Id
    channel: Channel
    shop_id: Ref
    warehouse: Id
    lines: Annotated[list[CommandLineFact], Meta(max_length=MAX_COMMAND_LINES)]
    created_at: datetime
    carrier: Annotated[str, Meta(max_length=MAX_CARRIER_CHARS)] = ""
    attempt: Annotated[int, Meta(ge=1, le=MAX_ATTEMPT)] = 1
    shipment: Ref = ""
    refers_to: Ref = ""
    merged_order_ids: Annotated[list[Id], Meta(max_length=MAX_MEMBERS)] = []
    weight_g: Annotated[int, Meta(ge=0, le=MAX_WEIGHT_G)] = 0


class DlqFact(Struct, frozen=True):
    dlq_id: Id
    reason: DlqReason
    detail: Annotated[str, Meta(max_length=MAX_DLQ_DETAIL_CHARS)]
    source_topic: Annotated[str, Meta(max_length=MAX_TOPIC_CHARS)]
    received_at: datetime
    partition: Annotated[int, Meta(ge=-1, le=MAX_PARTITION)] = -1
    offset: Annotated[int, Meta(ge=-1, le=MAX_OFFSET)] = -1
    channel: Annotated[str, Meta(max_length=MAX_TOPIC_CHARS)] = ""


HotFact = EventsFact | EventFact | CommandFact | DlqFact

# The pydantic message each struct reads, for callers that hold messages (tests, replays).
_STRUCT_OF: dict[type, type[HotFact]] = {
    OrderEvents: EventsFact,
    OrderEvent: EventFact,
    FulfilmentCommand: CommandFact,
    DlqRecord: DlqFact,
}
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    struct: msgspec.json.Decoder(struct) for struct in _STRUCT_OF.values()
}


def decoder_for(message: type) -> msgspec.json.Decoder[Any] | None:
    """The compiled decoder of a hot message type, or None for the others."""
    struct = _STRUCT_OF.get(message)
    return _DECODERS[struct] if struct is not None else None


def decode_or_none(decoder: msgspec.json.Decoder[Any], value: bytes, where: str) -> HotFact | None:
    """A record no OMS writer produced: logged (bounded: the decoder's message names a path
    and a rule, never a value) and None, counted by the caller; never a crash."""
    try:
        fact: HotFact = decoder.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.error("unparseable record on %s (%d bytes): %s", where, len(value), str(exc)[:300])
        return None
    return fact


def as_fact(message: OrderEvents | OrderEvent | FulfilmentCommand | DlqRecord) -> HotFact:
    """A message the caller holds, read as the sink reads it off the topic."""
    return _DECODERS[_STRUCT_OF[type(message)]].decode(message.model_dump_json())  # type: ignore[no-any-return]
