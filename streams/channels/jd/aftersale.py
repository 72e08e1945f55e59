"""JD (京东 POP) after-sales, two shapes:

- the after-sales service (售后服务单) as JD's AFS message and ``jingdong.asc`` queries give it:
  ``afsServiceId``, ``orderId``, ``wareId`` (JD's sku id), ``customerExpect`` (客户期望:
  10 退货, 20 换货), ``afsApplyTime``, ``approvedDate`` (the JOS SDK's AfsServiceMessage domain
  class: afsServiceId, afsApplyId, orderId, wareId, afsApplyTime, approvedDate; mirrored e.g.
  in github.com/yjm123456/fx.amiya.api src/JDSDK/Domain/AfsServiceMessage.cs);
- the refund of an order not shipped yet (未发货退款审核单, ``RefundApplyVo`` of
  ``jingdong.pop.afs.soa.refundapply.queryPageList``): ``id``, ``orderId``, ``applyRefundSum``
  (fen), ``status`` (审核状态), ``applyTime``, ``checkTime``.

Mapping decisions:
- told apart from an order by ``afsServiceId`` or ``applyRefundSum``;
- order ``orderId``; shop ``venderId`` when the producer adds it (as on orders), else the
  ``oms-shop`` header, as the order adapter; line: ``wareId`` is the skuId the order adapter
  keys lines by (a repeated sku's later lines, ``skuId#2``, are not told apart: the first is);
- a service is pushed once JD approved it: it applies; 10 is a return, 20 an exchange of the
  same sku; other expectations (30 维修 repair, ...) are no OMS flow and are dead-lettered;
- a refund apply is a cancel of the whole order (stop the parcel). ``status`` 0 未审核,
  1 审核通过, 3 京东财务审核通过, 5 人工审核通过, 6 拦截并退款, 7 青龙拦截成功,
  9 强制关单并退款 apply; 2 审核不通过, 4 京东财务审核不通过, 8 青龙拦截失败 ask nothing (the
  parcel left: JD then opens an after-sales service for it).
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
    ident_at,
    int_at,
    status_from,
    text_at,
    unwrap,
)
from streams.messages import AfterSalesKind
from streams.models import Channel

EXPECT = {10: AfterSalesKind.RETURN, 20: AfterSalesKind.EXCHANGE}
REFUND_STATUS = {
    0: Stage.APPLY,  # 未审核
    1: Stage.APPLY,  # 审核通过
    3: Stage.APPLY,  # 京东财务审核通过
    5: Stage.APPLY,  # 人工审核通过
    6: Stage.APPLY,  # 拦截并退款
    7: Stage.APPLY,  # 青龙拦截成功
    9: Stage.APPLY,  # 强制关单并退款
    2: Stage.CLOSED,  # 审核不通过
    4: Stage.CLOSED,  # 京东财务审核不通过
    8: Stage.CLOSED,  # 青龙拦截失败
}
SERVICE = ("afsServiceId",)
REFUND_APPLY = ("applyRefundSum",)
ENVELOPES = (("afsServiceMessage",), ("refundApplyVo",))


class JdAfterSales:
    """JD after-sales service or unshipped-order refund -> AfterSalesRequest."""

    channel = Channel.JD
    order_id_fields: tuple[str, ...] = ("orderId",)

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool:
        return has_any(self.unwrapped(payload), SERVICE + REFUND_APPLY)

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return unwrap(payload, *ENVELOPES)

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        message = self.unwrapped(payload)
        shop = ctx.shop_for(self.channel, text_at(message, "venderId"))
        if has_any(message, SERVICE):
            expect = int_at(message, "customerExpect")
            return finish(AfterSaleDraft(
                channel=self.channel,
                shop_id=shop,
                external_id=ident_at(message, "orderId"),
                platform_id=ident_at(message, "afsServiceId"),
                id_kind="afs",
                stage=Stage.APPLY,
                status=str(expect),
                kind=status_from(EXPECT, expect, "customerExpect", "after-sale type"),
                at=first_time(message, ("approvedDate", "afsApplyTime")),
                line_ids=(ident_at(message, "wareId"),),
            ))
        code = int_at(message, "status")
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=shop,
            external_id=ident_at(message, "orderId"),
            platform_id=ident_at(message, "id"),
            id_kind="refund",
            stage=status_from(REFUND_STATUS, code, "status"),
            status=str(code),
            kind=AfterSalesKind.CANCEL,
            at=first_time(message, ("checkTime", "applyTime")),
        ))
