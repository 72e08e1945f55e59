"""JD (京东 POP): the ``orderInfo`` object of ``jingdong.pop.order.search`` / ``order.get``.

Also accepted wrapped as ``{"orderInfo": ...}``. Money are yuan strings, times Beijing local.

Mapping decisions:
- external id ``orderId``; shop ``venderId``.
- JD lines carry no line id: the line id is ``skuId`` (``skuId#2`` if a sku repeats, e.g. a gift).
- OMS sku: ``outerSkuId`` (merchant code) -> ``skuId`` (JD's own id), then the sku map.
- quantity is ``itemTotal`` (a string); unit price ``jdPrice``.
- line paid: ``jdPrice * itemTotal`` minus the coupons in ``couponDetailList`` that name the
  line's ``skuId``; the order-level coupons (no ``skuId``) are spread over the lines so that the
  lines sum to ``orderSellerPrice`` (goods after all discounts).
- total = ``orderSellerPrice + freightPrice``: what the buyer owes whatever the means.
  ``orderPayment`` is not used because JD deducts balance and points (``balanceUsed``) from it.
- receiver: on JD's privacy scheme (``pop.order.enSearch``/``enGet``) ``consigneeInfo`` carries
  ``fullname`` and ``fullAddress`` as ciphertext, ``mobile``/``telephone`` masked and ``oaid``
  (``jingdong.jos.order.oaid.decrypt`` and JD's waybill take it with the order id); the OAID is
  also the receiver's matching key. Ciphertext and the OAID go to ``address.protected``.
- ``payType`` '1-货到付款' is cash on delivery. ``orderState`` stays in ``raw`` too: LOCKED and
  POP_ORDER_PAUSE (PAUSE) fold to PAID but must not ship: they set ``ship_hold``, and the order is
  reserved but not released until an update lifts it.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from streams.channels.base import (
    AdapterContext,
    AddressDraft,
    LineDraft,
    assemble,
    cipher_of,
    extras,
    ident_at,
    lines_at,
    money_at,
    obj_at,
    objects_at,
    opt_time_at,
    payment_status_for,
    pick_code,
    quantity_at,
    spread_discount,
    status_from,
    text_at,
    time_at,
    unique_ids,
    unwrap,
    where_join,
    with_paid,
)
from streams.models import Channel, ChannelStatus, Order

STATUS = {
    "NOT_PAY": ChannelStatus.PENDING_PAYMENT,
    "WAIT_SELLER_STOCK_OUT": ChannelStatus.PAID,
    "WAIT_SELLER_DELIVERY": ChannelStatus.PAID,
    "WAIT_SEND_CODE": ChannelStatus.PAID,
    "POP_ORDER_PAUSE": ChannelStatus.PAID,
    "PAUSE": ChannelStatus.PAID,
    "LOCKED": ChannelStatus.PAID,
    "WAIT_GOODS_RECEIVE_CONFIRM": ChannelStatus.SHIPPED,
    "RECEIPTS_CONFIRM": ChannelStatus.SHIPPED,
    "FINISHED_L": ChannelStatus.COMPLETED,
    "TRADE_CANCELED": ChannelStatus.CANCELLED,
}

# Paid, but JD says do not ship: locked (a dispute, a risk check) or paused by the platform.
SHIP_HOLDS = frozenset({"LOCKED", "POP_ORDER_PAUSE", "PAUSE"})

_MAPPED = {
    "orderId", "venderId", "orderStartTime", "modified", "paymentConfirmTime", "orderSellerPrice",
    "freightPrice", "payType", "orderRemark", "venderRemark", "pin", "consigneeInfo",
    "itemInfoList", "couponDetailList",
}


def _sku_coupons(order: Any) -> dict[str, Decimal]:
    """Coupons per skuId; the '' key collects order-level coupons."""
    coupons: dict[str, Decimal] = defaultdict(Decimal)
    for index, coupon in enumerate(objects_at(order, "couponDetailList", required=False)):
        where = where_join("couponDetailList", index)
        sku = text_at(coupon, "skuId", where)
        coupons[sku] += money_at(coupon, "couponPrice", where, default=Decimal(0))
    return coupons


class JdAdapter:
    """JD POP ``orderInfo`` -> Order."""

    channel = Channel.JD

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        order = unwrap(payload, ("orderInfo",))
        state = order.get("orderState")
        status = status_from(STATUS, state, "orderState")
        pay_type = text_at(order, "payType")
        cod = pay_type.startswith("1")
        paid_at = opt_time_at(order, "paymentConfirmTime")
        coupons = _sku_coupons(order)
        order_coupons = coupons.pop("", Decimal(0))

        drafts: list[LineDraft] = []
        amounts: list[Decimal] = []
        items = lines_at(order, "itemInfoList")
        line_ids = unique_ids([ident_at(item, "skuId", where_join("itemInfoList", i))
                               for i, item in enumerate(items)])
        for index, item in enumerate(items):
            where = where_join("itemInfoList", index)
            qty = quantity_at(item, "itemTotal", where)
            price = money_at(item, "jdPrice", where)
            sku_id = text_at(item, "skuId", where)
            amounts.append(max(Decimal(0), price * qty - coupons.pop(sku_id, Decimal(0))))
            drafts.append(LineDraft(
                line_id=line_ids[index],
                channel_sku=pick_code(where_join(where, "outerSkuId"),
                                      item.get("outerSkuId"), item.get("skuId")),
                quantity=qty,
                unit_price=price,
                paid_amount=Decimal(0),
                title=text_at(item, "skuName", where),
                is_gift=price == 0,
            ))
        fallback = max(Decimal(0), sum(amounts, Decimal(0)) - order_coupons)
        goods = money_at(order, "orderSellerPrice", default=fallback)
        shipping = money_at(order, "freightPrice", default=Decimal(0))

        consignee = obj_at(order, "consigneeInfo")
        street = text_at(consignee, "fullAddress", "consigneeInfo")
        name = text_at(consignee, "fullname", "consigneeInfo")
        mobile = text_at(consignee, "mobile", "consigneeInfo")
        landline = text_at(consignee, "telephone", "consigneeInfo")
        oaid = text_at(consignee, "oaid", "consigneeInfo")
        return assemble(
            self.channel,
            ctx,
            shop_id=ctx.shop_for(self.channel, text_at(order, "venderId")),
            external_id=ident_at(order, "orderId"),
            channel_status=status,
            payment_status=payment_status_for(status, cod=cod, paid=paid_at is not None),
            created_at=time_at(order, "orderStartTime"),
            updated_at=opt_time_at(order, "modified"),
            paid_at=paid_at,
            currency="CNY",
            lines=with_paid(drafts, spread_discount(amounts, goods, "orderSellerPrice")),
            total=goods + shipping,
            shipping_fee=shipping,
            payment_method=pay_type,
            buyer={"id": text_at(order, "pin")},
            address=AddressDraft(
                province=text_at(consignee, "province", "consigneeInfo"),
                city=text_at(consignee, "city", "consigneeInfo"),
                district=text_at(consignee, "county", "consigneeInfo"),
                street=street,
                name=name,
                phone=mobile or landline,
                name_cipher=cipher_of(name),
                phone_cipher=cipher_of(mobile, landline),
                street_cipher=cipher_of(street),
                oaid=oaid,
            ),
            buyer_remark=text_at(order, "orderRemark"),
            seller_remark=text_at(order, "venderRemark"),
            raw=extras(order, _MAPPED),
            ship_hold=state if state in SHIP_HOLDS else "",
        )
