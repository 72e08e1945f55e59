"""Amazon: the SP-API Orders v0 ``getOrder`` Order object, with ``getOrderItems``' list attached
under ``"OrderItems"`` (the platform team joins the two calls before producing).

Also accepted wrapped as ``{"payload": ...}`` (the raw API answer). Money are
``{CurrencyCode, Amount}`` with decimal-string amounts, times ISO-8601 UTC.

Mapping decisions:
- external id ``AmazonOrderId``. Shop: ``SellerId`` when the producer adds it, else the shop in
  ``ctx`` (header/CLI), else one shop per marketplace: 'amazon-<country>' ('amazon-cn' for
  ``AAHKV2X7AFYLW``), or 'amazon-<MarketplaceId>' for a marketplace not in the table.
- OMS sku: ``SellerSKU`` -> ``ASIN``, then the map; line id ``OrderItemId``.
- ``ItemPrice`` is the price of the whole line quantity: unit price = ItemPrice / quantity (kept
  to 4 places when it does not divide). Line paid = ItemPrice - ``PromotionDiscount``. Shipping =
  sum of ``ShippingPrice - ShippingDiscount``. Taxes are in the total, not in lines.
- total = ``OrderTotal.Amount``; Pending orders carry no OrderTotal (and often no prices): their
  total is the sum of lines + shipping, and a missing ItemPrice counts as 0 only for them.
- Pending orders have no ``ShippingAddress`` yet: the address is then the marketplace's country
  with no province, which is enough because nothing unpaid is routed.
- ``FulfillmentChannel`` AFN (Fulfilled by Amazon): Amazon ships from its own warehouses, so the
  order is ``fulfilled_by`` 'platform' (recorded and counted, never reserved or sent to the WMS);
  the field stays in ``raw`` too (with ``OrderStatus``).
- ``PaymentMethod`` COD is cash on delivery.
- ``LatestShipDate`` is the order's ship-by deadline; an expedited
  ``ShipmentServiceLevelCategory`` raises its priority (order/deadlines.py). Both stay in raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from streams.channels.base import (
    AdapterContext,
    AdapterError,
    AddressDraft,
    LineDraft,
    assemble,
    currency_at,
    extras,
    ident_at,
    lines_at,
    money_at,
    obj_at,
    opt_time_at,
    payment_status_for,
    pick_code,
    quantity_at,
    ship_after_at,
    status_from,
    text_at,
    time_at,
    unwrap,
    where_join,
)
from streams.messages import DlqReason
from streams.models import Channel, ChannelStatus, Order

STATUS = {
    "PendingAvailability": ChannelStatus.PENDING_PAYMENT,  # pre-order, not yet chargeable
    "Pending": ChannelStatus.PENDING_PAYMENT,
    "Unshipped": ChannelStatus.PAID,
    "PartiallyShipped": ChannelStatus.PAID,  # the rest still has to ship
    "Shipped": ChannelStatus.SHIPPED,
    "InvoiceUnconfirmed": ChannelStatus.SHIPPED,
    "Canceled": ChannelStatus.CANCELLED,
    "Unfulfillable": ChannelStatus.CANCELLED,
}
UNIT_PLACES = Decimal("0.0001")
# ShipmentServiceLevelCategory values the buyer paid to have sooner (Standard, FreeEconomy and
# Scheduled are not).
EXPEDITED_SERVICES = frozenset({"Expedited", "NextDay", "SecondDay", "SameDay", "Priority"})
_PRICELESS_OK = {ChannelStatus.PENDING_PAYMENT, ChannelStatus.CANCELLED}

# MarketplaceId -> (country, currency): shop naming and currency for orders without amounts.
MARKETPLACES = {
    "ATVPDKIKX0DER": ("US", "USD"), "A2EUQ1WTGCTBG2": ("CA", "CAD"),
    "A1AM78C64UM0Y8": ("MX", "MXN"), "A2Q3Y263D00KWC": ("BR", "BRL"),
    "A1F83G8C2ARO7P": ("GB", "GBP"), "A1PA6795UKMFR9": ("DE", "EUR"),
    "A13V1IB3VIYZZH": ("FR", "EUR"), "APJ6JRA9NG5V4": ("IT", "EUR"),
    "A1RKKUPIHCS9HS": ("ES", "EUR"), "A1805IZSGTT6HS": ("NL", "EUR"),
    "A2NODRKZP88ZB9": ("SE", "SEK"), "A1C3SOZRARQ6R3": ("PL", "PLN"),
    "A33AVAJ2PDY3EV": ("TR", "TRY"), "A1VC38T7YXB528": ("JP", "JPY"),
    "A39IBJ37TRP1C6": ("AU", "AUD"), "A19VAU5U5O7RUS": ("SG", "SGD"),
    "A21TJRUUN4KGV": ("IN", "INR"), "A2VIGQ35RCS4UG": ("AE", "AED"),
    "A17E79C6D8DWNP": ("SA", "SAR"), "ARBP9OOSHTCHU": ("EG", "EGP"),
    "AAHKV2X7AFYLW": ("CN", "CNY"),
}

_MAPPED = {
    "AmazonOrderId", "SellerId", "PurchaseDate", "LastUpdateDate", "OrderTotal", "PaymentMethod",
    "ShippingAddress", "BuyerInfo", "OrderItems",
}


def _amount(parent: Any, key: str, where: str, default: Decimal | None = None) -> Decimal:
    """SP-API Money object {CurrencyCode, Amount} -> Decimal."""
    if parent.get(key) is None and default is not None:
        return default
    return money_at(obj_at(parent, key, where, required=True), "Amount", where_join(where, key))


def _currency(order: Any, items: list[Any], marketplace: str) -> str:
    holders = [(order, "OrderTotal", "")]
    holders += [(item, "ItemPrice", where_join("OrderItems", n)) for n, item in enumerate(items)]
    for holder, key, where in holders:
        money = obj_at(holder, key, where)
        if money.get("CurrencyCode"):
            return currency_at(money, "CurrencyCode", where_join(where, key))
    if marketplace in MARKETPLACES:
        return MARKETPLACES[marketplace][1]
    raise AdapterError(DlqReason.MISSING_FIELD, "OrderTotal.CurrencyCode")


def shop_of(obj: Mapping[str, Any], ctx: AdapterContext) -> str:
    """``SellerId`` when the producer adds it, else the shop in ``ctx``, else one shop per
    marketplace (``MarketplaceId``): orders and after-sales derive it alike."""
    marketplace = text_at(obj, "MarketplaceId")
    country, _ = MARKETPLACES.get(marketplace, ("", ""))
    market_shop = f"amazon-{(country or marketplace or 'default').lower()}"
    seller = text_at(obj, "SellerId")
    return ctx.shop_for(Channel.AMAZON, seller or (None if ctx.shop_id else market_shop))


class AmazonAdapter:
    """SP-API Order + OrderItems -> Order."""

    channel = Channel.AMAZON

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        order = unwrap(payload, ("payload",))
        status = status_from(STATUS, order.get("OrderStatus"), "OrderStatus")
        cod = text_at(order, "PaymentMethod") == "COD"
        marketplace = text_at(order, "MarketplaceId")
        priceless = Decimal(0) if status in _PRICELESS_OK else None

        lines: list[LineDraft] = []
        shipping = Decimal(0)
        items = lines_at(order, "OrderItems")
        for index, item in enumerate(items):
            where = where_join("OrderItems", index)
            qty = quantity_at(item, "QuantityOrdered", where)
            line_price = _amount(item, "ItemPrice", where, priceless)
            zero = Decimal(0)
            discount = _amount(item, "PromotionDiscount", where, zero)
            shipping += max(zero, _amount(item, "ShippingPrice", where, zero)
                            - _amount(item, "ShippingDiscount", where, zero))
            lines.append(LineDraft(
                line_id=ident_at(item, "OrderItemId", where),
                channel_sku=pick_code(where_join(where, "SellerSKU"),
                                      item.get("SellerSKU"), item.get("ASIN")),
                quantity=qty,
                unit_price=(line_price / qty).quantize(UNIT_PLACES),
                paid_amount=max(zero, line_price - discount),
                title=text_at(item, "Title", where),
            ))
        computed = sum((line.paid_amount for line in lines), shipping)
        total = _amount(order, "OrderTotal", "", computed if priceless is not None else None)

        country, _ = MARKETPLACES.get(marketplace, ("", ""))
        ship_to = obj_at(order, "ShippingAddress")
        buyer = obj_at(order, "BuyerInfo")
        return assemble(
            self.channel,
            ctx,
            shop_id=shop_of(order, ctx),
            external_id=ident_at(order, "AmazonOrderId"),
            channel_status=status,
            payment_status=payment_status_for(status, cod=cod, paid=False),
            created_at=time_at(order, "PurchaseDate", naive_tz=UTC),
            updated_at=opt_time_at(order, "LastUpdateDate", naive_tz=UTC),
            currency=_currency(order, items, marketplace),
            lines=lines,
            total=total,
            shipping_fee=shipping,
            payment_method=text_at(order, "PaymentMethod"),
            buyer={
                "name": text_at(buyer, "BuyerName", "BuyerInfo"),
                "email": text_at(buyer, "BuyerEmail", "BuyerInfo"),
            },
            address=AddressDraft(
                country=text_at(ship_to, "CountryCode", "ShippingAddress") or country or "CN",
                province=text_at(ship_to, "StateOrRegion", "ShippingAddress"),
                city=text_at(ship_to, "City", "ShippingAddress"),
                district=text_at(ship_to, "District", "ShippingAddress")
                or text_at(ship_to, "County", "ShippingAddress"),
                street=" ".join(filter(None, (
                    text_at(ship_to, key, "ShippingAddress")
                    for key in ("AddressLine1", "AddressLine2", "AddressLine3")
                ))),
                postcode=text_at(ship_to, "PostalCode", "ShippingAddress"),
                name=text_at(ship_to, "Name", "ShippingAddress"),
                phone=text_at(ship_to, "Phone", "ShippingAddress"),
            ),
            raw=extras(order, _MAPPED),
            fulfilled_by="platform" if order.get("FulfillmentChannel") == "AFN" else "",
            ship_by=ship_after_at(order, "LatestShipDate", naive_tz=UTC),
            expedited=text_at(order, "ShipmentServiceLevelCategory") in EXPEDITED_SERVICES,
        )
