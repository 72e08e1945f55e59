"""Amazon after-sales, two shapes:

- a return: one return of the returns report (``GET_XML_RETURNS_DATA_BY_RETURN_DATE``, as
  JSON with the report's own names: order_id, amazon_rma_id, return_request_date,
  return_request_status, item_details[] with merchant_sku, asin, return_quantity,
  refund_amount, resolution; SP-API docs, "Returns reports attributes");
- a refund: one ``ShipmentEvent`` of the Finances API's ``RefundEventList`` (AmazonOrderId,
  PostedDate, ShipmentItemAdjustmentList[] with SellerSKU, QuantityShipped and
  ItemChargeAdjustmentList[] of {ChargeType, ChargeAmount {CurrencyCode, CurrencyAmount}},
  negative for money back; SP-API Finances v0 reference).

Mapping decisions:
- told apart from an order by ``amazon_rma_id`` or ``ShipmentItemAdjustmentList``;
- order: ``order_id`` / ``AmazonOrderId``; shop exactly as the order adapter derives it
  (``SellerId`` or ``MarketplaceId`` when the producer adds them, else the ``oms-shop`` header;
  ``shop_of`` in adapter.py). Neither shape names the order item (``OrderItemId``, the order
  adapter's line id): lines are named by merchant sku (``merchant_sku`` / ``SellerSKU``) and
  resolved against the order's lines (order/aftersales.py);
- a return report row is a return, one request per ``amazon_rma_id``; status Approved,
  Authorized, Pending, Completed apply; Rejected, Cancelled, Closed ask nothing (a return the
  OMS saw approved was applied then);
- a refund event is a refund only of the charges it gives back (minus the adjustments, which
  Amazon writes negative), one request per order and ``PostedDate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from streams.channels.aftersale import (
    MAX_AFTERSALE_ITEMS,
    AfterSaleDraft,
    PlatformAfterSale,
    Stage,
    finish,
    first_time,
    has_any,
)
from streams.channels.amazon.adapter import shop_of
from streams.channels.base import (
    AdapterContext,
    AdapterError,
    ident_at,
    obj_at,
    objects_at,
    pick_code,
    signed_money,
    status_from,
    text_at,
    time_at,
    unwrap,
    where_join,
)
from streams.messages import AfterSalesKind, DlqReason
from streams.models import Channel

RETURN_STATUS = {
    "Approved": Stage.APPLY,
    "Authorized": Stage.APPLY,
    "Pending": Stage.APPLY,
    "Completed": Stage.APPLY,
    "Rejected": Stage.CLOSED,
    "Cancelled": Stage.CLOSED,
    "Canceled": Stage.CLOSED,
    "Closed": Stage.CLOSED,
}
RETURN = ("amazon_rma_id",)
REFUND = ("ShipmentItemAdjustmentList",)
ENVELOPES = (("return_details",), ("payload",))


def _skus(items: list[Mapping[str, Any]], path: str, *keys: str) -> tuple[str, ...]:
    return tuple(
        pick_code(where_join(where_join(path, n), keys[0]), *(item.get(k) for k in keys))
        for n, item in enumerate(items)
    )


def _refund_amount(items: list[Mapping[str, Any]]) -> Decimal:
    """Money back: the charge adjustments, which Amazon writes negative, summed and negated."""
    total = Decimal(0)
    for n, item in enumerate(items):
        where = where_join(where_join("ShipmentItemAdjustmentList", n), "ItemChargeAdjustmentList")
        for m, charge in enumerate(objects_at(item, "ItemChargeAdjustmentList", required=False,
                                              limit=MAX_AFTERSALE_ITEMS)):
            money = obj_at(charge, "ChargeAmount", where_join(where, m), required=True)
            total += signed_money(
                money.get("CurrencyAmount"), where_join(where_join(where, m), "ChargeAmount")
            )
    if total >= 0:
        raise AdapterError(DlqReason.INVALID_FIELD, "ItemChargeAdjustmentList: no money back")
    return -total


class AmazonAfterSales:
    """Amazon return report row or refund event -> AfterSalesRequest."""

    channel = Channel.AMAZON
    order_id_fields: tuple[str, ...] = ("order_id", "AmazonOrderId")

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool:
        return has_any(self.unwrapped(payload), RETURN + REFUND)

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return unwrap(payload, *ENVELOPES)

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        event = self.unwrapped(payload)
        if has_any(event, RETURN):
            return self._return(event, ctx)
        items = objects_at(event, "ShipmentItemAdjustmentList", limit=MAX_AFTERSALE_ITEMS)
        posted = time_at(event, "PostedDate", naive_tz=UTC)
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=shop_of(event, ctx),
            external_id=ident_at(event, "AmazonOrderId"),
            platform_id=f"{ident_at(event, 'AmazonOrderId')}-{int(posted.timestamp())}",
            id_kind="refund",
            stage=Stage.APPLY,
            status="posted",
            kind=AfterSalesKind.REFUND,
            at=posted,
            channel_skus=_skus(items, "ShipmentItemAdjustmentList", "SellerSKU"),
            amount=_refund_amount(items),
        ))

    def _return(self, row: Mapping[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        status = text_at(row, "return_request_status")
        items = objects_at(row, "item_details", limit=MAX_AFTERSALE_ITEMS)
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=shop_of(row, ctx),
            external_id=ident_at(row, "order_id"),
            platform_id=ident_at(row, "amazon_rma_id"),
            id_kind="rma",
            stage=status_from(RETURN_STATUS, status, "return_request_status"),
            status=status,
            kind=AfterSalesKind.RETURN,
            at=first_time(row, ("return_request_date",), naive_tz=UTC),
            channel_skus=_skus(items, "item_details", "merchant_sku", "asin"),
        ))
