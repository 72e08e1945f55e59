"""Shopify: the Order resource as the ``orders/create`` / ``orders/updated`` webhooks post it.

Also accepted wrapped as ``{"order": ...}`` (REST Admin API answer). Money are decimal strings in
the shop currency (``currency``), times ISO-8601 with offset.

Mapping decisions:
- the payload does not name the shop: it comes from ``ctx`` (the X-Shopify-Shop-Domain header in
  production, 'shopify-default' otherwise); external id is the numeric ``id`` (``name`` '#1001'
  stays in raw).
- OMS sku: ``sku`` -> ``variant_id`` -> the line ``id`` (custom items have neither), then the map.
- line paid: ``price * quantity`` minus its ``discount_allocations`` (Shopify allocates order-level
  discount codes to lines itself), or minus ``total_discount`` when allocations are absent.
- total = ``total_price``; shipping = ``total_shipping_price_set.shop_money.amount``, else the sum
  of ``shipping_lines`` (``discounted_price`` or ``price``). Taxes are not modelled: with
  ``taxes_included`` false they are in the total but in no line (``total_tax`` stays in raw).
- ``financial_status``: pending / partially_paid -> unpaid (COD when a gateway says cash on
  delivery), authorized / paid -> paid (authorised orders ship and capture on fulfilment),
  partially_refunded / refunded as such, voided -> cancelled. ``cancelled_at`` -> cancelled;
  ``fulfillment_status`` fulfilled -> shipped, or completed once ``closed_at`` is set.
- the province comes from ``province`` or ``province_code`` ('ZJ'); country from ``country_code``.
"""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from streams.channels.base import (
    AdapterContext,
    AddressDraft,
    LineDraft,
    assemble,
    currency_at,
    extras,
    ident_at,
    lines_at,
    money_at,
    obj_at,
    objects_at,
    opt_time_at,
    pick_code,
    quantity_at,
    status_from,
    text_at,
    time_at,
    unwrap,
    where_join,
)
from streams.models import Channel, ChannelStatus, Order, PaymentStatus

FINANCIAL = {
    "pending": PaymentStatus.UNPAID,
    "partially_paid": PaymentStatus.UNPAID,
    "authorized": PaymentStatus.PAID,
    "paid": PaymentStatus.PAID,
    "partially_refunded": PaymentStatus.PARTIALLY_REFUNDED,
    "refunded": PaymentStatus.REFUNDED,
    "voided": PaymentStatus.UNPAID,
}

_MAPPED = {
    "id", "created_at", "updated_at", "processed_at", "currency", "total_price",
    "financial_status", "cancelled_at", "fulfillment_status", "closed_at", "note", "email",
    "phone", "customer", "shipping_address", "line_items", "shipping_lines",
    "total_shipping_price_set", "payment_gateway_names",
    # personal data duplicated elsewhere or not needed to fulfil: deliberately not kept in raw
    "billing_address", "contact_email", "browser_ip", "client_details",
}


def _gateways(order: Any) -> list[str]:
    gateways = order.get("payment_gateway_names")
    return [g for g in gateways if isinstance(g, str)] if isinstance(gateways, list) else []


def _is_cod(gateways: list[str]) -> bool:
    names = [g.casefold() for g in gateways]
    return any("cash on delivery" in n or "(cod)" in n or n == "cod" for n in names)


def _discounts(item: Any, where: str) -> Decimal:
    allocations = objects_at(item, "discount_allocations", where, required=False)
    if allocations:
        path = where_join(where, "discount_allocations")
        return sum(
            (money_at(a, "amount", where_join(path, i)) for i, a in enumerate(allocations)),
            Decimal(0),
        )
    return money_at(item, "total_discount", where, default=Decimal(0))


def _shipping(order: Any) -> Decimal:
    shop_money = obj_at(obj_at(order, "total_shipping_price_set"), "shop_money",
                        "total_shipping_price_set")
    if shop_money.get("amount") not in (None, ""):
        return money_at(shop_money, "amount", "total_shipping_price_set.shop_money")
    total = Decimal(0)
    for index, line in enumerate(objects_at(order, "shipping_lines", required=False)):
        where = where_join("shipping_lines", index)
        key = "discounted_price" if line.get("discounted_price") not in (None, "") else "price"
        total += money_at(line, key, where, default=Decimal(0))
    return total


def _channel_status(order: Any, payment: PaymentStatus, cod: bool) -> ChannelStatus:
    if order.get("cancelled_at") or order.get("financial_status") == "voided":
        return ChannelStatus.CANCELLED
    fulfilment = order.get("fulfillment_status")
    if fulfilment == "fulfilled":
        return ChannelStatus.COMPLETED if order.get("closed_at") else ChannelStatus.SHIPPED
    if payment is PaymentStatus.UNPAID and not cod:
        return ChannelStatus.PENDING_PAYMENT
    return ChannelStatus.PAID


class ShopifyAdapter:
    """Shopify webhook Order -> Order."""

    channel = Channel.SHOPIFY

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        order = unwrap(payload, ("order",))
        gateways = _gateways(order)
        cod = _is_cod(gateways)
        payment = status_from(FINANCIAL, order.get("financial_status"), "financial_status")
        if payment is PaymentStatus.UNPAID and cod:
            payment = PaymentStatus.COD
        status = _channel_status(order, payment, cod)

        lines: list[LineDraft] = []
        for index, item in enumerate(lines_at(order, "line_items")):
            where = where_join("line_items", index)
            qty = quantity_at(item, "quantity", where)
            price = money_at(item, "price", where)
            discount = _discounts(item, where)
            line_id = ident_at(item, "id", where)
            lines.append(LineDraft(
                line_id=line_id,
                channel_sku=pick_code(where_join(where, "sku"), item.get("sku"),
                                      item.get("variant_id"), line_id),
                quantity=qty,
                unit_price=price,
                paid_amount=max(Decimal(0), price * qty - discount),
                title=text_at(item, "title", where),
                is_gift=price == 0,
            ))

        ship_to = obj_at(order, "shipping_address", required=True)
        customer = obj_at(order, "customer")
        first = text_at(customer, "first_name", "customer")
        last = text_at(customer, "last_name", "customer")
        return assemble(
            self.channel,
            ctx,
            shop_id=ctx.shop_for(self.channel),
            external_id=ident_at(order, "id"),
            channel_status=status,
            payment_status=payment,
            created_at=time_at(order, "created_at", naive_tz=UTC),
            updated_at=opt_time_at(order, "updated_at", naive_tz=UTC),
            paid_at=opt_time_at(order, "processed_at", naive_tz=UTC),
            currency=currency_at(order, "currency"),
            lines=lines,
            total=money_at(order, "total_price"),
            shipping_fee=_shipping(order),
            payment_method="cod" if cod else ",".join(gateways),
            buyer={
                "id": text_at(customer, "id", "customer"),
                "name": f"{first} {last}".strip(),
                "email": text_at(order, "email") or text_at(customer, "email", "customer"),
                "phone": text_at(order, "phone") or text_at(customer, "phone", "customer"),
            },
            address=AddressDraft(
                country=text_at(ship_to, "country_code", "shipping_address") or "CN",
                province=text_at(ship_to, "province", "shipping_address"),
                province_hint=text_at(ship_to, "province_code", "shipping_address"),
                city=text_at(ship_to, "city", "shipping_address"),
                street=" ".join(filter(None, (
                    text_at(ship_to, "address1", "shipping_address"),
                    text_at(ship_to, "address2", "shipping_address"),
                ))),
                postcode=text_at(ship_to, "zip", "shipping_address"),
                name=text_at(ship_to, "name", "shipping_address") or " ".join(filter(None, (
                    text_at(ship_to, "first_name", "shipping_address"),
                    text_at(ship_to, "last_name", "shipping_address"),
                ))),
                phone=text_at(ship_to, "phone", "shipping_address"),
            ),
            buyer_remark=text_at(order, "note"),
            raw=extras(order, _MAPPED),
        )

