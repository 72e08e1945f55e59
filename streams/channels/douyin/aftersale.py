"""Douyin shop (抖店) after-sales: the refund messages of the 抖店 message push (售后消息:
``doudian_refund_RefundCreated`` tag 200, ``RefundAgreed`` 201, ``RefundClosed`` 207, ...).

Accepted bare (the message's ``data`` object) or as pushed (``{"tag": "200", "msg_id": ...,
"data": "<the data object as a JSON string>"}``, the string decoded with the same bounds as
any payload). Fields as the 抖店 message docs give them (s_id 子订单ID, p_id 父订单ID, shop_id,
aftersale_id, aftersale_status, aftersale_type 0 退货 / 1 售后仅退款 / 2 发货前整单退款 /
3 换货, refund_amount in FEN including postage, apply_time / agree_time / close_time unix
seconds), as mirrored in github.com/bububa/jinritemai-go message/refund (refundCreate.go,
refundAggree.go, refundClosed.go).

Mapping decisions:
- told apart from an order by ``aftersale_id`` (an order payload has none);
- order: ``p_id`` (the shop order, the order adapter's external id), shop ``shop_id`` as the
  order adapter; line: ``s_id`` (the sku order, the order adapter's line id), none when it
  names the shop order itself (a whole-order refund);
- kind: 2 发货前整单退款 is a cancel (stop the parcel), 0 a return, 1 a refund only of
  ``refund_amount``, 3 an exchange (of the same sku);
- ``aftersale_status``: 6 待商家处理, 7 待买家退货, 11 待商家收货, 12 同意退款 apply (one
  request per ``aftersale_id``); 27 拒绝售后申请, 28 售后关闭, 29 退货后拒绝退款 ask nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.channels.aftersale import (
    AfterSaleDraft,
    PlatformAfterSale,
    Stage,
    finish,
    first_time,
    has_any,
)
from streams.channels.base import (
    AdapterContext,
    cents_at,
    decode_payload,
    ident_at,
    int_at,
    status_from,
    text_at,
)
from streams.messages import AfterSalesKind
from streams.models import Channel

STATUS = {
    6: Stage.APPLY,  # 待商家处理
    7: Stage.APPLY,  # 待买家退货
    11: Stage.APPLY,  # 待商家收货
    12: Stage.APPLY,  # 同意退款
    27: Stage.CLOSED,  # 拒绝售后申请
    28: Stage.CLOSED,  # 售后关闭 (the buyer withdrew it, or it timed out)
    29: Stage.CLOSED,  # 退货后拒绝退款
}
TYPES = {
    0: AfterSalesKind.RETURN,  # 退货
    1: AfterSalesKind.REFUND,  # 售后仅退款
    2: AfterSalesKind.CANCEL,  # 发货前整单退款
    3: AfterSalesKind.EXCHANGE,  # 换货
}
MARKERS = ("aftersale_id",)
TIMES = ("close_time", "agree_time", "update_time", "apply_time")


def _data(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The message's data object: bare, or inside the push envelope (an object or JSON text)."""
    data = payload.get("data")
    if isinstance(data, str) and "aftersale_id" not in payload:
        return decode_payload(data.encode("utf-8", "surrogatepass"))
    if isinstance(data, Mapping) and "aftersale_id" in data:
        return data
    return payload


class DouyinAfterSales:
    """抖店 refund message -> AfterSalesRequest."""

    channel = Channel.DOUYIN
    order_id_fields: tuple[str, ...] = ("p_id",)

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool:
        data = payload.get("data")
        return has_any(payload, MARKERS) or has_any(data, MARKERS) or (
            isinstance(data, str) and '"aftersale_id"' in data
        )

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return _data(payload)

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        message = _data(payload)
        code = int_at(message, "aftersale_status")
        kind_code = int_at(message, "aftersale_type")
        kind = status_from(TYPES, kind_code, "aftersale_type", "after-sale type")
        external_id = ident_at(message, "p_id")
        line = ident_at(message, "s_id") if message.get("s_id") not in (None, "", 0) else ""
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=ctx.shop_for(self.channel, text_at(message, "shop_id")),
            external_id=external_id,
            platform_id=ident_at(message, "aftersale_id"),
            id_kind="aftersale",
            stage=status_from(STATUS, code, "aftersale_status"),
            status=str(code),
            kind=kind,
            at=first_time(message, TIMES),
            line_ids=(line,) if line and line != external_id else (),
            amount=cents_at(message, "refund_amount") if kind is AfterSalesKind.REFUND else None,
        ))

