"""Every message that crosses a topic boundary, besides the canonical Order.

Ids are deterministic (derived from what caused the message), so a replay produces the same
ids and every consumer (ClickHouse, WMS, shops) can drop what it has already seen.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.models import SCHEMA_VERSION, Address, Channel, Code, Money, Order, Text


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


class DlqRecord(_Message):
    """An input the OMS could not accept, kept whole so it can be fixed and replayed."""

    dlq_id: str
    reason: DlqReason
    detail: Annotated[str, Field(max_length=4000)]
    source_topic: str
    partition: int = -1
    offset: int = -1
    channel: str = ""
    key: str = ""
    payload: str  # the original bytes: utf-8 text, or base64 when not valid utf-8
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    # Only the first bytes were kept (the input overflowed a Kafka message): never replayable.
    payload_truncated: bool = False
    received_at: AwareDatetime


class OrderState(StrEnum):
    """The order's life; ``agents/lifecycle.py`` says which moves between these exist."""

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


class Allocation(BaseModel):
    """Units of one sku reserved in one warehouse for an order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: Code
    warehouse: Code
    quantity: Annotated[int, Field(gt=0)]


class OrderEvent(_Message):
    """One entry of the audit trail on ``oms.order-events``; also the source of ClickHouse facts."""

    event_id: str
    order_id: str
    seq: int  # position in the order's history: orders events without trusting clocks
    kind: EventKind
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    reason: Annotated[str, Field(max_length=200)] = ""
    detail: Annotated[str, Field(max_length=2000)] = ""
    at: AwareDatetime
    channel: Channel
    shop_id: str
    external_id: str
    warehouse: str = ""
    allocations: list[Allocation] = Field(default_factory=list)
    order: Order | None = None  # snapshot on received/updated, so facts need no lookup
    actor: str = "system"


class CommandKind(StrEnum):
    OUTBOUND = "outbound"  # pick, pack and ship these lines
    CANCEL = "cancel"  # drop an outbound the warehouse has not started
    INTERCEPT = "intercept"  # stop an outbound already being picked or handed to the carrier
    RETURN_INBOUND = "return_inbound"  # expect these units back from the buyer


class CommandLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    line_id: Code
    sku: Code
    quantity: Annotated[int, Field(gt=0)]
    order_id: str = ""  # the member order of a merged command ('' = the command's order)
    is_gift: bool = False


class FulfilmentCommand(_Message):
    """What the WMS must do, on ``oms.fulfilment.commands``; ``command_id`` dedupes on its side."""

    command_id: str
    kind: CommandKind
    order_id: str
    channel: Channel
    shop_id: str
    external_id: str
    warehouse: Code
    carrier: str = ""
    ship_to: Address
    lines: list[CommandLine]
    buyer_remark: Text = ""
    created_at: AwareDatetime
    attempt: int = 1  # a re-sent outbound (after a short pick or exception) counts up
    shipment: str = ""  # reservation it fulfils: '' the order's own, else e.g. an exchange
    merged_order_ids: list[str] = Field(default_factory=list)  # every order this ships for
    weight_g: int = 0
    refers_to: str = ""  # the outbound a cancel/intercept/return is about


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

    event_id: str
    command_id: str
    order_id: str
    kind: WmsEventKind
    warehouse: Code
    carrier: str = ""
    tracking_number: str = ""
    lines: list[CommandLine] = Field(default_factory=list)
    detail: Text = ""
    sellable: bool = True
    at: AwareDatetime


class OperatorActionKind(StrEnum):
    RELEASE_HOLD = "release_hold"  # "checked, go ahead": holds are overridden, rejects are not
    CANCEL = "cancel"
    EXPIRE_UNPAID = "expire_unpaid"  # the unpaid timer: cancels only if still held as unpaid
    RELEASE_MERGED = "release_merged"  # the merge timer: a window closed, ship members as one
    CLOSE = "close"  # the close timer: the after-sales window of a delivered order ended


class OperatorAction(_Message):
    """An operator's decision on one order, on ``oms.operator`` keyed by order id; applied by a
    worker like any input (CAS on the order record), so it lands in the audit trail with its
    actor and a redelivery applies it once."""

    action_id: str
    order_id: str
    kind: OperatorActionKind
    actor: Annotated[str, Field(min_length=1, max_length=128)]
    reason: Text = ""
    at: AwareDatetime
    members: list[str] = Field(default_factory=list)  # release_merged: the group's orders


class AfterSalesKind(StrEnum):
    CANCEL = "cancel"
    RETURN = "return"
    REFUND = "refund"
    EXCHANGE = "exchange"
    ADDRESS_CHANGE = "address_change"


class AfterSalesRequest(_Message):
    """A customer-service or channel request on ``oms.aftersales``, keyed by order id."""

    request_id: str
    order_id: str
    kind: AfterSalesKind
    line_ids: list[str] = Field(default_factory=list)  # empty: the whole order
    amount: Money | None = None
    new_address: Address | None = None
    exchange_sku: str = ""
    reason: Text = ""
    requested_by: str = "channel"
    at: AwareDatetime


class ChannelStock(_Message):
    """Sellable quantity a shop may show, on ``oms.channel.stock``, keyed by sku."""

    channel: Channel
    shop_id: str
    sku: Code
    sellable: Annotated[int, Field(ge=0)]
    version: int
    at: AwareDatetime


class ChannelUpdate(_Message):
    """Status or tracking to write back to a shop, on ``oms.channel.updates``."""

    update_id: str
    channel: Channel
    shop_id: str
    external_id: str
    order_id: str
    status: str
    carrier: str = ""
    tracking_number: str = ""
    at: AwareDatetime
    extra: dict[str, Any] = Field(default_factory=dict)
