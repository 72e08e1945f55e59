"""Douyin shop (抖店): ``shop_order_detail`` of ``order.orderDetail``.

Also accepted wrapped as ``{"data": {"shop_order_detail": ...}}`` or
``{"shop_order_detail": ...}``. Amounts are integer FEN, times unix seconds.

Mapping decisions:
- external id: the shop (parent) ``order_id``; shop: ``shop_id``; lines are ``sku_order_list``
  keyed by their own ``order_id``.
- OMS sku: ``code`` (商家编码, the merchant code) -> ``out_sku_id`` -> ``sku_id``, then the map.
- unit price ``origin_amount`` (商品现价: the price after campaign price cuts, before coupons),
  quantity ``item_num``.
- line paid: the sku order's ``pay_amount``; when those sum to more than the goods part of the
  shop order (``pay_amount - post_amount``), e.g. because the sku amounts carry a postage share,
  the difference is spread back so lines + shipping always equal the total.
- total = ``pay_amount`` (postage included); shipping = ``post_amount``.
- ``pay_type`` 0 is cash on delivery.
- pre-sale (定金预售): ``order_phase_list`` (deposit phase, balance phase, each ``pay_success``)
  becomes ``presale``; with the deposit paid the order is 103 部分支付, so ``payment`` stays
  unpaid. ``appointment_ship_time`` (预约发货) becomes ``ship_after``;
  ``exp_ship_time`` (最晚发货时间) the ship-by deadline.
- receiver: name, phone and detail address arrive as ciphertext (``encrypt_post_receiver``,
  ``encrypt_post_tel``, ``post_addr.encrypt_detail``; older apps also get the ciphertext in
  ``post_receiver``/``post_tel``/``post_addr.detail``), often beside masked copies
  (``mask_post_receiver``, ``mask_post_tel``, ``mask_post_addr.detail``); only the region is
  plain. The address shows the first of plain-field, masked copy, ciphertext; the ciphertexts go
  to ``address.protected`` for the waybill call (``order.batchDecrypt`` decrypts them). The
  platform's receiver key is built from the ciphertexts' search indexes (``#index#cipher#v##``,
  ``$index$cipher$v$$``) when all three carry one: equal plain values have equal indexes.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

from streams.channels.base import (
    AdapterContext,
    AddressDraft,
    LineDraft,
    assemble,
    cents_at,
    cipher_of,
    extras,
    ident_at,
    int_at,
    lines_at,
    obj_at,
    objects_at,
    opt_time_at,
    payment_status_for,
    pick_code,
    presale_of,
    quantity_at,
    ship_after_at,
    spread_discount,
    status_from,
    text_at,
    time_at,
    unwrap,
    where_join,
    with_paid,
)
from streams.models import Channel, ChannelStatus, Order, Presale, PresaleStage

# order_status / main_status codes from the 抖店 docs.
STATUS = {
    1: ChannelStatus.PENDING_PAYMENT,  # 待确认/待支付
    103: ChannelStatus.PENDING_PAYMENT,  # 部分支付
    105: ChannelStatus.PAID,  # 已支付
    2: ChannelStatus.PAID,  # 备货中
    101: ChannelStatus.PAID,  # 部分发货: the rest still has to ship
    3: ChannelStatus.SHIPPED,  # 已发货
    4: ChannelStatus.CANCELLED,  # 已取消
    5: ChannelStatus.COMPLETED,  # 已完成
    21: ChannelStatus.CANCELLED,  # 发货前退款完结
    22: ChannelStatus.CANCELLED,  # 发货后退款完结
    39: ChannelStatus.CANCELLED,  # 收货后退款完结
}
COD_PAY_TYPE = 0
PAY_TYPES = {0: "cod", 1: "wechat", 2: "alipay", 3: "mini_program", 4: "bank_card",
             5: "balance", 7: "none", 8: "dou_installment", 9: "new_card", 12: "pay_later"}

# order_type: 0 实物, 2 普通虚拟, 4 poi核销, 5 三方核销, 6 服务市场: all but 0 ship nothing.
VIRTUAL_ORDER_TYPES = frozenset({2, 4, 5, 6})
MAX_PHASES = 8  # a deposit and a balance; a longer phase list is refused unread

_MAPPED = {
    "order_id", "shop_id", "create_time", "update_time", "pay_time", "pay_amount", "post_amount",
    "pay_type", "buyer_words", "seller_words", "doudian_open_id", "post_addr", "post_receiver",
    "post_tel", "sku_order_list", "channel_payment_no",
    # masked duplicates and identity data the OMS has no use for: deliberately not kept in raw
    # (order_phase_list and appointment_ship_time stay in raw as well, for the same reason)
    "mask_post_receiver", "mask_post_tel", "mask_post_addr", "user_id_info", "user_coordinate",
    # (the encrypt_* ciphertexts stay in raw too, as before address.protected held them: a
    # record saved by that release keeps its fingerprint, see Order.v1_fingerprint)
}


def _presale(order: Any) -> Presale | None:
    """定金预售: ``order_phase_list`` holds the deposit phase (``current_phase`` 1) and the
    balance phase, each with ``pay_success`` and what it took (``phase_pay_amount``, fen)."""
    phases = objects_at(order, "order_phase_list", required=False, limit=MAX_PHASES)
    if not phases:
        return None
    paid = Decimal(0)
    done: dict[int, bool] = {}
    for index, phase in enumerate(phases):
        where = where_join("order_phase_list", index)
        success = phase.get("pay_success") is True
        done[int_at(phase, "current_phase", where)] = success
        if success:
            paid += cents_at(phase, "phase_pay_amount", where, default=Decimal(0))
    if done and all(done.values()):
        stage = PresaleStage.BALANCE_PAID
    elif done.get(1):
        stage = PresaleStage.DEPOSIT_PAID
    else:
        stage = PresaleStage.DEPOSIT_UNPAID
    return presale_of(stage, paid)


def _search_index(cipher: str) -> str:
    """The search index of a Douyin ciphertext: the field between its first two separators
    ('#' for names and addresses, '$' for phones), '' when it has none."""
    if len(cipher) < 2 or cipher[0] not in "#$":
        return ""
    return cipher[1:].split(cipher[0], 1)[0]


def _receiver_key(*ciphers: str) -> str:
    """One key for the receiver when every ciphertext carries a search index, else ''."""
    indexes = [_search_index(c) for c in ciphers]
    if not all(indexes):
        return ""
    return hashlib.blake2b("\x1f".join(indexes).encode(), digest_size=16).hexdigest()


def _name(addr: Any, key: str) -> str:
    """post_addr parts are {name, id} objects."""
    return text_at(obj_at(addr, key, "post_addr"), "name", where_join("post_addr", key))


class DouyinAdapter:
    """抖店 ``shop_order_detail`` -> Order."""

    channel = Channel.DOUYIN

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        order = unwrap(payload, ("data", "shop_order_detail"), ("shop_order_detail",))
        status = status_from(STATUS, int_at(order, "order_status"), "order_status")
        pay_type = int_at(order, "pay_type", default=-1)
        cod = pay_type == COD_PAY_TYPE
        paid_at = opt_time_at(order, "pay_time")

        drafts: list[LineDraft] = []
        amounts: list[Decimal] = []
        for index, sku in enumerate(lines_at(order, "sku_order_list")):
            where = where_join("sku_order_list", index)
            price = cents_at(sku, "origin_amount", where)
            qty = quantity_at(sku, "item_num", where)
            amounts.append(cents_at(sku, "pay_amount", where))
            drafts.append(LineDraft(
                line_id=ident_at(sku, "order_id", where),
                channel_sku=pick_code(where_join(where, "code"), sku.get("code"),
                                      sku.get("out_sku_id"), sku.get("sku_id")),
                quantity=qty,
                unit_price=price,
                paid_amount=Decimal(0),
                title=text_at(sku, "product_name", where),
                is_gift=text_at(sku, "given_product_type", where) == "FREE" or price == 0,
            ))
        total = cents_at(order, "pay_amount")
        shipping = cents_at(order, "post_amount", default=Decimal(0))

        addr = obj_at(order, "post_addr")
        masked_addr = obj_at(order, "mask_post_addr")
        street = text_at(obj_at(addr, "street", "post_addr"), "name", "post_addr.street")
        detail = text_at(addr, "detail", "post_addr")
        encrypted_detail = text_at(addr, "encrypt_detail", "post_addr")
        receiver = text_at(order, "post_receiver")
        encrypted_receiver = text_at(order, "encrypt_post_receiver")
        tel = text_at(order, "post_tel")
        encrypted_tel = text_at(order, "encrypt_post_tel")
        name_cipher = cipher_of(encrypted_receiver, receiver)
        phone_cipher = cipher_of(encrypted_tel, tel)
        street_cipher = cipher_of(encrypted_detail, detail)
        return assemble(
            self.channel,
            ctx,
            shop_id=ctx.shop_for(self.channel, text_at(order, "shop_id")),
            external_id=ident_at(order, "order_id"),
            channel_status=status,
            payment_status=payment_status_for(status, cod=cod, paid=paid_at is not None),
            created_at=time_at(order, "create_time"),
            updated_at=opt_time_at(order, "update_time"),
            paid_at=paid_at,
            currency="CNY",
            lines=with_paid(drafts, spread_discount(amounts, total - shipping, "pay_amount")),
            total=total,
            shipping_fee=shipping,
            payment_method=PAY_TYPES.get(pay_type, str(pay_type) if pay_type >= 0 else ""),
            transaction_id=text_at(order, "channel_payment_no"),
            buyer={"id": text_at(order, "doudian_open_id")},
            address=AddressDraft(
                province=_name(addr, "province"),
                province_hint=text_at(obj_at(addr, "province", "post_addr"), "id",
                                      "post_addr.province"),
                city=_name(addr, "city"),
                district=_name(addr, "town"),
                street=street + (
                    detail or text_at(masked_addr, "detail", "mask_post_addr") or encrypted_detail
                ),
                name=receiver or text_at(order, "mask_post_receiver") or encrypted_receiver,
                phone=tel or text_at(order, "mask_post_tel") or encrypted_tel,
                name_cipher=name_cipher,
                phone_cipher=phone_cipher,
                street_cipher=street_cipher,
                match_key=_receiver_key(name_cipher, phone_cipher, street_cipher),
            ),
            buyer_remark=text_at(order, "buyer_words"),
            seller_remark=text_at(order, "seller_words"),
            raw=extras(order, _MAPPED),
            presale=_presale(order),
            ship_after=ship_after_at(order, "appointment_ship_time"),
            ship_by=ship_after_at(order, "exp_ship_time"),
            fulfilled_by=(
                "virtual" if int_at(order, "order_type", default=0) in VIRTUAL_ORDER_TYPES else ""
            ),
        )
