"""Every message that crosses a topic boundary, besides the canonical Order.

Ids are deterministic (derived from what caused the message), so a replay produces the same
ids and every consumer (ClickHouse, WMS, shops) can drop what it has already seen.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from streams.edits import parse_code
from streams.models import (
    MAX_CODE_CHARS,
    MAX_LINE_QUANTITY,
    SCHEMA_VERSION,
    Address,
    Channel,
    Code,
    Money,
    Order,
    Text,
)
from streams.tags import MAX_TAG_CHARS, MAX_TAGS, parse_tag

# --- bounds of every field a consumer reads -----------------------------------------------
# A consumer parses, stores, logs and copies onward what arrives on its topic, and a WMS or an
# operator tool is a producer outside this code base. Each bound is far above what the OMS or a
# real WMS writes (the list bounds above what even fits one Kafka message), so none refuses
# real traffic; they bound what a broken or hostile producer can make every consumer carry.
# Every producer of a topic, Kafka included, refuses a message above this (Faust's
# producer_max_request_size, the broker's message.max.bytes): no key or payload is longer.
MAX_MESSAGE_BYTES = 1_000_000
MAX_TOPIC_CHARS = 249  # Kafka's own limit on a topic name
MAX_DLQ_DETAIL_CHARS = 4000
MAX_REASON_CHARS = 200
MAX_CARRIER_CHARS = 64  # 'SF', 'ZTO', 'DHL Express'
MAX_TRACKING_CHARS = 128  # real tracking numbers are 10 to 40 characters
MAX_STATUS_CHARS = 64
MAX_ACTOR_CHARS = 128
MAX_EXTRA_ENTRIES = 32  # a channel update's connector hints (api, carrier code, amount)
MAX_EXTRA_VALUE_CHARS = 256
MAX_COMMAND_LINES = 10_000  # a merged command's lines: every member's, gifts included
MAX_REQUEST_LINES = 1_000  # lines an after-sales request names (an order has at most 500)
MAX_MEMBERS = 10_000  # orders one merged command ships for
MAX_ALLOCATIONS = 10_000
MAX_EVENTS_PER_MESSAGE = 1_000  # transitions of one order in one message (a batch makes < 20)
MAX_STOCK_UNITS = 10**9  # units of a sku in one warehouse (state/stock.py MAX_QTY)
MAX_SELLABLE = 10**12  # a shop's sellable units of a sku: every warehouse's stock
MAX_SEQ = 10**9  # events in one order's history
MAX_ATTEMPT = 1_000_000  # re-sends of one outbound
MAX_WEIGHT_G = 10**15  # a parcel: 10,000 lines of 1,000,000 units of a tonne each, and far less
MAX_OFFSET = 2**63 - 1  # Kafka offsets are int64
MAX_PARTITION = 2**31 - 1
MAX_VERSION = 2**63 - 1
# The times a message can carry: ClickHouse's DateTime starts at the unix epoch and ends in
# 2106; a time beyond (year 9999, milliseconds sent as seconds) would misfire every timer too.
EARLIEST_MESSAGE_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_MESSAGE_TIME = datetime(2100, 1, 1, tzinfo=UTC)


def _check_time(value: datetime) -> datetime:
    if not EARLIEST_MESSAGE_TIME <= value < LATEST_MESSAGE_TIME:
        raise ValueError("time out of range (1970-01-01 to 2100-01-01 UTC)")
    return value


MessageTime = Annotated[AwareDatetime, AfterValidator(_check_time)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_CODE_CHARS)]  # a message's own id
Ref = Annotated[str, Field(max_length=MAX_CODE_CHARS)]  # an id or code that may be ''
Carrier = Annotated[str, Field(max_length=MAX_CARRIER_CHARS)]
Tracking = Annotated[str, Field(max_length=MAX_TRACKING_CHARS)]
Actor = Annotated[str, Field(min_length=1, max_length=MAX_ACTOR_CHARS)]
TopicName = Annotated[str, Field(max_length=MAX_TOPIC_CHARS)]


def _check_tag(value: str) -> str:
    if parse_tag(value) != value:
        raise ValueError("a tag must be given in its one spelling (streams/tags.py parse_tag)")
    return value


Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS), AfterValidator(_check_tag)]


def _check_code(value: str) -> str:
    if value:
        parse_code(value, "code")  # streams/edits.py: no spaces or control characters
    return value


# A sku or line id a person typed ('' = not given), checked like the CLI and the API check it.
EditCode = Annotated[str, Field(max_length=MAX_CODE_CHARS), AfterValidator(_check_code)]
# Integers are strict: 2.0 or "2" is no quantity, and 1.9999999999999999999 would parse as 2.
Units = Annotated[int, Field(strict=True, gt=0, le=MAX_LINE_QUANTITY)]


def make_id(prefix: str, *parts: object) -> str:
    """Stable id from the parts that identify a fact; same parts, same id, on any worker."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=10)
    return f"{prefix}{digest.hexdigest()}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class DlqReason(StrEnum):
    """Machine-readable reasons; operators filter and replay by these."""

    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_CHANNEL = "unknown_channel"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    PROCESSING_ERROR = "processing_error"
    UNAUTHORIZED_CONTROL = "unauthorized_control"  # unsigned or not its writer's (signing.py)
    # A platform after-sale for an order the OMS has not seen (yet): replayed later with
    # ``./oms dlq replay --reason unknown_order`` (docs/decisions/0023-platform-aftersales.md).
    UNKNOWN_ORDER = "unknown_order"


class DlqRecord(_Message):
    """An input the OMS could not accept, kept whole so it can be fixed and replayed."""

    dlq_id: Id
    reason: DlqReason
    detail: Annotated[str, Field(max_length=MAX_DLQ_DETAIL_CHARS)]
    source_topic: TopicName
    partition: Annotated[int, Field(ge=-1, le=MAX_PARTITION)] = -1
    offset: Annotated[int, Field(ge=-1, le=MAX_OFFSET)] = -1
    channel: TopicName = ""  # the raw topic's suffix
    key: Annotated[str, Field(max_length=MAX_MESSAGE_BYTES)] = ""  # the source message's key
    # the original bytes: utf-8 text, or base64 when not valid utf-8
    payload: Annotated[str, Field(max_length=MAX_MESSAGE_BYTES)]
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    # Only the first bytes were kept (the input overflowed a Kafka message): never replayable.
    payload_truncated: bool = False
    received_at: MessageTime


class OrderState(StrEnum):
    """The order's life; ``order/lifecycle.py`` says which moves between these exist."""

    RECEIVED = "received"
    AUDITED = "audited"  # passed every audit rule
    HELD = "held"  # waits for a person or an event (payment, address fix, stock)
    REJECTED = "rejected"
    RESERVED = "reserved"  # stock reserved (warehouse chosen by the reserve script)
    ROUTED = "routed"  # carrier chosen; waits here while its merge window is open
    RELEASED = "released"  # fulfilment command sent to the WMS
    ACCEPTED = "accepted"  # the WMS took the command
    PICKED = "picked"
    PARTIALLY_SHIPPED = "partially_shipped"  # a split order: some warehouses shipped
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    EXCEPTION = "exception"  # the WMS reported a problem; an operator decides
    INTERCEPTING = "intercepting"  # cancel/intercept sent to the WMS, waiting for its answer
    RETURNING = "returning"  # a return is expected at the warehouse
    EXCHANGING = "exchanging"  # goods come back and a replacement goes out
    RETURNED = "returned"
    REFUNDED = "refunded"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    # The platform ships it, or nothing ships (virtual goods): recorded and counted, no stock
    # reserved, no command to the WMS (Order.fulfilled_by).
    FULFILLED_ELSEWHERE = "fulfilled_elsewhere"


class EventKind(StrEnum):
    RECEIVED = "received"
    DUPLICATE = "duplicate"  # re-push of known content: counted, nothing else changes
    UPDATED = "updated"  # changed content of a known order
    STALE = "stale"  # an older version than the one we hold: ignored
    HELD = "held"
    REJECTED = "rejected"
    RESERVED = "reserved"
    RELEASED = "released"
    RELEASE_STOCK = "stock_released"
    CANCELLED = "cancelled"
    HOLD_RELEASED = "hold_released"  # an operator released a hold: the order is audited again
    ACTION_REFUSED = "action_refused"  # an operator action that does not apply in this state
    TRANSITION_REFUSED = "transition_refused"  # an input that would break the state machine
    AUDITED = "audited"
    ROUTED = "routed"  # carrier chosen (detail: carrier, weight)
    RELEASE_WAITS = "release_waits"  # reserved, not released yet (reason: order/gates.py)
    BACKORDER_RETRIED = "backorder_retried"  # held out of stock, stock came back: tried again
    FULFILLED_ELSEWHERE = "fulfilled_elsewhere"  # by the platform or virtual (reason: which)
    MERGED = "merged"  # shipped as one with other orders of the same buyer and address
    GIFT_ADDED = "gift_added"
    GIFT_SKIPPED = "gift_skipped"  # out of stock: the order goes on without it
    WMS_ACCEPTED = "wms_accepted"
    PICKED = "picked"
    SHIPPED = "shipped"
    PARTIALLY_SHIPPED = "partially_shipped"
    DELIVERED = "delivered"
    SHORT_PICK = "short_pick"  # the warehouse lacked units: written off, order re-routed
    WMS_EXCEPTION = "wms_exception"
    INTERCEPT_REQUESTED = "intercept_requested"
    INTERCEPT_FAILED = "intercept_failed"  # already left the warehouse: becomes a return
    ADDRESS_CHANGED = "address_changed"
    RETURN_REQUESTED = "return_requested"
    RETURN_RECEIVED = "return_received"
    RETURNED = "returned"
    REFUNDED = "refunded"
    EXCHANGE_REQUESTED = "exchange_requested"
    CLOSED = "closed"
    STOP_CONFIRMED = "stop_confirmed"  # the WMS stopped a parcel; no move until all answered
    TAGS_CHANGED = "tags_changed"  # customer service tagged or untagged (reason: +tag -tag)
    # customer service added a gift or changed a line before release (reason: what changed);
    # carries the order as it ships now (a snapshot, like updated)
    LINES_CHANGED = "lines_changed"


class Allocation(BaseModel):
    """Units of one sku reserved in one warehouse for an order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Code
    warehouse: Code
    quantity: Annotated[int, Field(strict=True, gt=0, le=MAX_STOCK_UNITS)]


class OrderEvent(_Message):
    """One entry of the audit trail on ``oms.order-events``; also the source of ClickHouse facts."""

    event_id: Id
    order_id: Id
    # position in the order's history: orders events without trusting clocks
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    kind: EventKind
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] = ""
    detail: Text = ""
    at: MessageTime
    channel: Channel
    shop_id: Ref
    external_id: Ref
    warehouse: Ref = ""
    allocations: Annotated[list[Allocation], Field(max_length=MAX_ALLOCATIONS)] = Field(
        default_factory=list
    )
    order: Order | None = None  # snapshot on received/updated, so facts need no lookup
    actor: Actor = "system"


class OrderEvents(_Message):
    """The value of ``oms.order-events``: the transitions of one order that one batch of inputs
    caused, in order, in one message (streams/envelope.py packs them). One message per order
    and batch instead of one per transition: every Kafka hop costs a produce, the broker and a
    consume. Each event keeps its own id: consumers dedupe by ``event_id``, never by message."""

    order_id: Id
    events: Annotated[list[OrderEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_MESSAGE)]


class CommandKind(StrEnum):
    OUTBOUND = "outbound"  # pick, pack and ship these lines
    CANCEL = "cancel"  # drop an outbound the warehouse has not started
    INTERCEPT = "intercept"  # stop an outbound already being picked or handed to the carrier
    RETURN_INBOUND = "return_inbound"  # expect these units back from the buyer


class CommandLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_id: Code
    sku: Code
    quantity: Units
    order_id: Ref = ""  # the member order of a merged command ('' = the command's order)
    is_gift: bool = False


class FulfilmentCommand(_Message):
    """What the WMS must do, on ``oms.fulfilment.commands``; ``command_id`` dedupes on its side."""

    command_id: Id
    kind: CommandKind
    order_id: Id
    channel: Channel
    shop_id: Ref
    external_id: Ref
    warehouse: Code
    carrier: Carrier = ""
    ship_to: Address
    lines: Annotated[list[CommandLine], Field(max_length=MAX_COMMAND_LINES)]
    buyer_remark: Text = ""
    created_at: MessageTime
    # a re-sent outbound (after a short pick or exception) counts up
    attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPT)] = 1
    shipment: Ref = ""  # reservation it fulfils: '' the order's own, else e.g. an exchange
    # every order this ships for
    merged_order_ids: Annotated[list[Id], Field(max_length=MAX_MEMBERS)] = Field(
        default_factory=list
    )
    weight_g: Annotated[int, Field(ge=0, le=MAX_WEIGHT_G)] = 0
    refers_to: Ref = ""  # the outbound a cancel/intercept/return is about
    # Pick and pack by these: the channel's ship-by deadline (None: none runs) and the order's
    # priority, 0 normal to 9 (order/deadlines.py).
    ship_by: MessageTime | None = None
    priority: Annotated[int, Field(ge=0, le=9)] = 0


class WmsEventKind(StrEnum):
    ACCEPTED = "accepted"
    PICKED = "picked"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    SHORT_PICK = "short_pick"  # lines lists the units the warehouse could not find
    EXCEPTION = "exception"
    CANCELLED = "cancelled"  # a cancel or intercept succeeded: nothing left the warehouse
    INTERCEPT_FAILED = "intercept_failed"  # too late: the parcel is with the carrier
    RETURN_RECEIVED = "return_received"  # lines came back; ``sellable`` says if they restock


class WmsEvent(_Message):
    """What the WMS reports back on ``oms.wms.events``, keyed by order id."""

    event_id: Id
    command_id: Id
    order_id: Id
    kind: WmsEventKind
    warehouse: Code
    carrier: Carrier = ""
    tracking_number: Tracking = ""
    lines: Annotated[list[CommandLine], Field(max_length=MAX_COMMAND_LINES)] = Field(
        default_factory=list
    )
    detail: Text = ""
    sellable: bool = True
    at: MessageTime


class OperatorActionKind(StrEnum):
    RELEASE_HOLD = "release_hold"  # "checked, go ahead": holds are overridden, rejects are not
    CANCEL = "cancel"
    EXPIRE_UNPAID = "expire_unpaid"  # the unpaid timer: cancels only if still held as unpaid
    RELEASE_MERGED = "release_merged"  # the merge timer: a window closed, ship members as one
    CLOSE = "close"  # the close timer: the after-sales window of a delivered order ended
    SETTLE = "settle"  # the pending sweeper: finish a saved decision's stock work, decide nothing
    # the backorder timer: stock came back, reserve again if still held out of stock
    RETRY_BACKORDER = "retry_backorder"
    TAG = "tag"  # customer service: add the action's tags to the order (streams/tags.py)
    UNTAG = "untag"  # customer service: remove them
    # customer service, before the WMS has the order (order/edits.py): a gift line of ``sku``
    # x ``quantity``; or line ``line_id`` to ``sku`` and/or ``quantity``
    ADD_GIFT = "add_gift"
    CHANGE_LINE = "change_line"


class OperatorAction(_Message):
    """An operator's decision on one order, on ``oms.operator`` keyed by order id; applied by a
    worker like any input (CAS on the order record), so it lands in the audit trail with its
    actor and a redelivery applies it once."""

    action_id: Id
    order_id: Id
    kind: OperatorActionKind
    actor: Actor
    reason: Text = ""
    at: MessageTime
    # release_merged: the group's orders
    members: Annotated[list[Id], Field(max_length=MAX_MEMBERS)] = Field(default_factory=list)
    # tag / untag: the tags, each already in its one spelling (streams/tags.py)
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = Field(default_factory=list)
    # add_gift / change_line: the line changed, the sku and the units ('' / None: not given)
    line_id: EditCode = ""
    sku: EditCode = ""
    quantity: Units | None = None


class AfterSalesKind(StrEnum):
    CANCEL = "cancel"
    RETURN = "return"
    REFUND = "refund"
    EXCHANGE = "exchange"
    ADDRESS_CHANGE = "address_change"


class AfterSalesRequest(_Message):
    """A customer-service or channel request on ``oms.aftersales``, keyed by order id."""

    request_id: Id
    order_id: Id
    kind: AfterSalesKind
    # empty: the whole order
    line_ids: Annotated[list[Ref], Field(max_length=MAX_REQUEST_LINES)] = Field(
        default_factory=list
    )
    # lines named by the channel's merchant sku, for platforms whose after-sale names no line
    # id (Amazon's returns report): resolved against the order's lines (order/aftersales.py)
    channel_skus: Annotated[list[Ref], Field(max_length=MAX_REQUEST_LINES)] = Field(
        default_factory=list
    )
    amount: Money | None = None  # within +-MAX_MONEY, at most 4 places (streams/models.py)
    new_address: Address | None = None
    exchange_sku: Ref = ""
    # becomes the reason of the event the request causes, which holds MAX_REASON_CHARS
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] = ""
    requested_by: Actor = "channel"
    at: MessageTime


class ChannelStock(_Message):
    """Sellable quantity a shop may show, on ``oms.channel.stock``, keyed by sku."""

    channel: Channel
    shop_id: Ref
    sku: Code
    sellable: Annotated[int, Field(ge=0, le=MAX_SELLABLE)]
    version: Annotated[int, Field(ge=0, le=MAX_VERSION)]
    at: MessageTime


class ChannelUpdate(_Message):
    """Status or tracking to write back to a shop, on ``oms.channel.updates``."""

    update_id: Id
    channel: Channel
    shop_id: Ref
    external_id: Ref
    order_id: Id
    status: Annotated[str, Field(max_length=MAX_STATUS_CHARS)]
    carrier: Carrier = ""
    tracking_number: Tracking = ""
    at: MessageTime
    # hints for the shop connector: api, the channel's carrier code, amount, currency
    extra: Annotated[
        dict[
            Annotated[str, Field(max_length=MAX_STATUS_CHARS)],
            Annotated[str, Field(max_length=MAX_EXTRA_VALUE_CHARS)],
        ],
        Field(max_length=MAX_EXTRA_ENTRIES),
    ] = Field(default_factory=dict)
