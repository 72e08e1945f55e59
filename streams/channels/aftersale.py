"""After-sales that start on the platform: what every channel's after-sale parser shares.

A platform refund, return or exchange arrives on ``oms.raw.<channel>`` beside the orders, in
the platform's own shape, keyed by the same channel order id (so it lands on its order's
partition, after the order). Each channel package's ``aftersale.py`` reads its shapes into an
``AfterSalesRequest`` (requested by ``channel``) for the existing after-sales flow
(order/aftersales.py), or into a :class:`ClosedAtChannel` when the platform's status says
nothing is to be done (the buyer withdrew it, the seller refused it). Detection, which shape a
message is, is each parser's ``is_aftersale``; the ``oms-kind`` header, when set, decides
instead (streams/normalise.py). Decision record: docs/decisions/0023-platform-aftersales.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from streams.channels.base import AdapterContext, AdapterError, opt_time_at, validation_error
from streams.messages import AfterSalesKind, AfterSalesRequest, DlqReason, make_id
from streams.models import MAX_CODE_CHARS, Channel, make_order_id

# A platform's line reference list beyond this is refused unread (an order holds 500 lines).
MAX_AFTERSALE_ITEMS = 500


class Stage(StrEnum):
    """What a platform after-sale status means for the OMS."""

    APPLY = "apply"  # created, waiting for the seller, agreed, refunded: the request stands
    CLOSED = "closed"  # withdrawn by the buyer, refused by the seller, closed: nothing to do


@dataclass(frozen=True)
class ClosedAtChannel:
    """A platform after-sale whose status asks nothing of the OMS: counted and logged by the
    pipeline (by order id, request id and platform status: no personal data), never applied.
    One closed after the OMS applied it changes nothing either: stock and parcels already
    moved, and the platform's own status is what the buyer sees."""

    channel: Channel
    order_id: str
    request_id: str
    status: str


PlatformAfterSale = AfterSalesRequest | ClosedAtChannel


class AfterSaleParser(Protocol):
    channel: Channel
    # Where an after-sale payload keeps the channel ORDER id: the Kafka key of the raw topic
    # (streams/keys.py), so an after-sale shares its order's partition.
    order_id_fields: tuple[str, ...]

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool: ...

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        """The after-sale object itself, out of any envelope (AdapterError if broken)."""
        ...

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale: ...


@dataclass(frozen=True)
class AfterSaleDraft:
    """One platform after-sale as a parser read it, before ids are derived."""

    channel: Channel
    shop_id: str  # derived exactly as the channel's order adapter derives it
    external_id: str  # the channel order id
    platform_id: str  # the platform's refund / after-sale id: the request id comes from it
    id_kind: str  # which of the platform's id spaces ('refund', 'afs', 'rma', ...)
    stage: Stage
    status: str  # the platform's status as sent (a code from a known table, bounded)
    kind: AfterSalesKind
    at: datetime
    line_ids: tuple[str, ...] = ()  # empty: the whole order
    channel_skus: tuple[str, ...] = ()  # lines named by merchant sku (no line id sent)
    amount: Decimal | None = None


def request_id_of(channel: Channel, id_kind: str, platform_id: str) -> str:
    """Deterministic from the platform's id, so a re-push (or a later status of the same
    after-sale) is the same input and is applied once: readable when it fits an id."""
    readable = f"{channel.value}-{id_kind}-{platform_id}"
    return readable if len(readable) <= MAX_CODE_CHARS else make_id("A", readable)


def finish(draft: AfterSaleDraft) -> PlatformAfterSale:
    """The draft as the pipeline's input: an AfterSalesRequest, or ClosedAtChannel."""
    if not draft.shop_id or len(draft.shop_id) > MAX_CODE_CHARS:
        raise AdapterError(DlqReason.INVALID_FIELD, "shop_id: missing or too long")
    order_id = make_order_id(draft.channel.value, draft.shop_id, draft.external_id)
    request_id = request_id_of(draft.channel, draft.id_kind, draft.platform_id)
    if draft.stage is Stage.CLOSED:
        return ClosedAtChannel(draft.channel, order_id, request_id, draft.status)
    if draft.amount is not None and draft.amount <= 0:
        # nothing to pay back is no refund: a platform bug or a tampered message
        raise AdapterError(DlqReason.INVALID_FIELD, "refund amount: must be more than 0")
    try:
        return AfterSalesRequest(
            request_id=request_id,
            order_id=order_id,
            kind=draft.kind,
            line_ids=list(dict.fromkeys(draft.line_ids)),
            channel_skus=list(dict.fromkeys(draft.channel_skus)),
            amount=draft.amount,
            reason=f"{draft.channel.value}:{draft.status}"[:200],
            requested_by="channel",
            at=draft.at,
        )
    except ValidationError as exc:
        raise validation_error(exc) from None


def first_time(parent: Mapping[str, Any], keys: tuple[str, ...], **kw: Any) -> datetime:
    """The first of ``keys`` that holds a time (latest status first): a platform sets the
    time of each step as it happens. None of them: MISSING_FIELD naming the last (creation)."""
    for key in keys:
        if (at := opt_time_at(parent, key, **kw)) is not None:
            return at
    raise AdapterError(DlqReason.MISSING_FIELD, keys[-1])


def has_any(payload: Any, markers: tuple[str, ...]) -> bool:
    """Whether the object carries one of the fields only a channel's after-sales carry."""
    return isinstance(payload, Mapping) and any(m in payload for m in markers)
