"""Taobao / Tmall: the ``trade`` object of ``taobao.trade.fullinfo.get``.

Also accepted wrapped as the API answers (``{"trade_fullinfo_get_response": {"trade": ...}}``
or ``{"trade": ...}``). Sub-orders come as ``orders.order[]`` (TOP JSON) or a plain list.

Mapping decisions:
- external id: ``tid_str`` (exact, the number may exceed 2^53), else ``tid``; shop: ``seller_nick``.
- times are Beijing local ('YYYY-MM-DD HH:MM:SS') and stored in UTC.
- OMS sku: ``outer_sku_id`` -> ``outer_iid`` (items without variants have no sku code) ->
  ``sku_id`` -> ``num_iid``, then the sku map.
- line paid: ``divide_order_fee`` when every sub-order has it (the platform's own allocation of
  shop-wide discounts); otherwise ``total_fee`` (price*num + adjust - sub-order discount) with the
  trade-level discount (sum of lines + post_fee - payment) spread by :func:`spread_discount`.
  Sub-order ``payment`` is not used: for one-line trades it includes the postage.
- total = ``payment`` (what the buyer pays, postage included); shipping = ``post_fee``.
- ``type == 'cod'`` is cash on delivery. TRADE_CLOSED (refunded after payment) and
  TRADE_CLOSED_BY_TAOBAO (closed before payment) are both CANCELLED; ``pay_time`` tells which.
- some (not all) sub-orders with ``refund_status`` SUCCESS make a paid trade PARTIALLY_REFUNDED.
- ``status`` is also kept in ``raw`` so rules can act on nuances the fold loses
  (PAID_FORBID_CONSIGN: paid but the platform forbids shipping yet).
- pre-sale (``type`` 'step'): ``step_trade_status`` (FRONT_NOPAID_FINAL_NOPAID, FRONT_PAID_
  FINAL_NOPAID, FRONT_PAID_FINAL_PAID) and ``step_paid_fee`` (paid so far) become ``presale``;
  while only the deposit is paid the trade is WAIT_BUYER_PAY, so ``payment`` stays unpaid.
  PAID_FORBID_CONSIGN (paid, the platform forbids shipping yet) sets ``ship_hold``.
- receiver: apps on Taobao's privacy scheme get masked ``receiver_name``/``receiver_mobile``/
  ``receiver_address`` (or ciphertext in their place) and ``oaid``, the Open Addressee ID that
  Cainiao's waybill call and ``top.oaid.decrypt`` take with the ``tid``. Equal receivers (name,
  phone, address) have equal OAIDs, so the OAID is also the receiver's matching key. Ciphertext
  and the OAID go to ``address.protected`` (the OAID stays in ``raw`` too, where records saved
  before ``protected`` existed have it).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    opt_time_at,
    payment_status_for,
    pick_code,
    presale_of,
    quantity_at,
    spread_discount,
    status_from,
    text_at,
    time_at,
    unwrap,
    where_join,
    with_paid,
)
from streams.models import Channel, ChannelStatus, Order, PaymentStatus, PresaleStage

STATUS = {
    "TRADE_NO_CREATE_PAY": ChannelStatus.PENDING_PAYMENT,
    "WAIT_BUYER_PAY": ChannelStatus.PENDING_PAYMENT,
    "PAY_PENDING": ChannelStatus.PENDING_PAYMENT,
    "WAIT_PRE_AUTH_CONFIRM": ChannelStatus.PENDING_PAYMENT,
    "WAIT_SELLER_SEND_GOODS": ChannelStatus.PAID,
    "SELLER_CONSIGNED_PART": ChannelStatus.PAID,  # the rest still has to ship
    "PAID_FORBID_CONSIGN": ChannelStatus.PAID,
    "WAIT_BUYER_CONFIRM_GOODS": ChannelStatus.SHIPPED,
    "TRADE_BUYER_SIGNED": ChannelStatus.SHIPPED,
    "TRADE_FINISHED": ChannelStatus.COMPLETED,
    "TRADE_CLOSED": ChannelStatus.CANCELLED,
    "TRADE_CLOSED_BY_TAOBAO": ChannelStatus.CANCELLED,
}

# Pre-sale (预售, trade ``type`` 'step'): deposit then balance.
STEP_STATUS = {
    "FRONT_NOPAID_FINAL_NOPAID": PresaleStage.DEPOSIT_UNPAID,
    "FRONT_PAID_FINAL_NOPAID": PresaleStage.DEPOSIT_PAID,
    "FRONT_PAID_FINAL_PAID": PresaleStage.BALANCE_PAID,
}
FORBID_CONSIGN = "PAID_FORBID_CONSIGN"

# Mapped to canonical fields (status stays in raw on purpose, see module doc).
_MAPPED = {
    "tid", "tid_str", "seller_nick", "buyer_nick", "buyer_open_uid", "created", "modified",
    "pay_time", "payment", "post_fee", "receiver_name", "receiver_mobile", "receiver_phone",
    "receiver_state", "receiver_city", "receiver_district", "receiver_town", "receiver_address",
    "receiver_zip", "buyer_message", "seller_memo", "orders", "alipay_no",
}


def _sub_orders(trade: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], str]:
    orders = trade.get("orders")
    if isinstance(orders, dict):
        return lines_at(orders, "order", "orders"), "orders.order"
    return lines_at(trade, "orders"), "orders"


class TaobaoAdapter:
    """``taobao.trade.fullinfo.get`` trade -> Order."""

    channel = Channel.TAOBAO

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        trade = unwrap(payload, ("trade_fullinfo_get_response", "trade"), ("trade",))
        external_id = ident_at(trade, "tid_str") if trade.get("tid_str") else ident_at(trade, "tid")
        shop_id = ctx.shop_for(self.channel, text_at(trade, "seller_nick"))
        status = status_from(STATUS, trade.get("status"), "status")
        cod = text_at(trade, "type") == "cod"
        paid_at = opt_time_at(trade, "pay_time")

        subs, path = _sub_orders(trade)
        drafts: list[LineDraft] = []
        weights: list[Decimal] = []
        allocated = all(sub.get("divide_order_fee") not in (None, "") for sub in subs)
        refunded = 0
        for index, sub in enumerate(subs):
            where = where_join(path, index)
            qty = quantity_at(sub, "num", where)
            price = money_at(sub, "price", where)
            fee_key = "divide_order_fee" if allocated else "total_fee"
            default = None if allocated else price * qty
            weights.append(money_at(sub, fee_key, where, default=default))
            refunded += text_at(sub, "refund_status", where) == "SUCCESS"
            drafts.append(LineDraft(
                line_id=ident_at(sub, "oid", where),
                channel_sku=pick_code(
                    where_join(where, "outer_sku_id"), sub.get("outer_sku_id"),
                    sub.get("outer_iid"), sub.get("sku_id"), sub.get("num_iid"),
                ),
                quantity=qty,
                unit_price=price,
                paid_amount=Decimal(0),
                title=text_at(sub, "title", where),
                is_gift=price == 0,
            ))

        total = money_at(trade, "payment")
        shipping = money_at(trade, "post_fee", default=Decimal(0))
        paid = weights if allocated else spread_discount(weights, total - shipping, "payment")
        lines = with_paid(drafts, paid)

        payment_status = payment_status_for(status, cod=cod, paid=paid_at is not None)
        if payment_status is PaymentStatus.PAID and 0 < refunded < len(subs):
            payment_status = PaymentStatus.PARTIALLY_REFUNDED

        town = text_at(trade, "receiver_town")
        street = text_at(trade, "receiver_address")
        mobile, landline = text_at(trade, "receiver_mobile"), text_at(trade, "receiver_phone")
        oaid = text_at(trade, "oaid")
        step = trade.get("step_trade_status")
        stage = status_from(STEP_STATUS, step, "step_trade_status") if step else None
        return assemble(
            self.channel,
            ctx,
            shop_id=shop_id,
            external_id=external_id,
            channel_status=status,
            payment_status=payment_status,
            created_at=time_at(trade, "created"),
            updated_at=opt_time_at(trade, "modified"),
            paid_at=paid_at,
            currency="CNY",
            lines=lines,
            total=total,
            shipping_fee=shipping,
            payment_method="cod" if cod else "alipay",
            transaction_id=text_at(trade, "alipay_no"),
            buyer={
                "id": text_at(trade, "buyer_open_uid") or text_at(trade, "buyer_nick"),
                "name": text_at(trade, "buyer_nick"),
            },
            address=AddressDraft(
                province=text_at(trade, "receiver_state"),
                city=text_at(trade, "receiver_city") or text_at(trade, "receiver_district"),
                district=text_at(trade, "receiver_district"),
                street=street if not town or street.startswith(town) else f"{town}{street}",
                postcode=text_at(trade, "receiver_zip"),
                name=text_at(trade, "receiver_name"),
                phone=mobile or landline,
                name_cipher=cipher_of(text_at(trade, "receiver_name")),
                phone_cipher=cipher_of(mobile, landline),
                street_cipher=cipher_of(street),
                oaid=oaid,
            ),
            buyer_remark=text_at(trade, "buyer_message"),
            seller_remark=text_at(trade, "seller_memo"),
            raw=extras(trade, _MAPPED),
            presale=presale_of(stage, money_at(trade, "step_paid_fee", default=Decimal(0))),
            ship_hold=FORBID_CONSIGN if trade.get("status") == FORBID_CONSIGN else "",
        )
