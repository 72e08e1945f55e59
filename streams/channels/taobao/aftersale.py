"""Taobao / Tmall refunds: the ``refund`` object of ``taobao.refund.get`` (退款单).

Also accepted wrapped as the API answers (``{"refund_get_response": {"refund": ...}}`` or
``{"refund": ...}``). The TMC notices (``taobao_refund_RefundCreated``,
``taobao_refund_RefundClosed``, ...) carry ids only: the platform team fetches the refund with
``taobao.refund.get`` on each, as it fetches trades with ``taobao.trade.fullinfo.get``.
Fields as the TOP API documents the Refund structure (refund_id, tid, oid, seller_nick,
status, order_status, good_status, has_good_return, refund_fee in yuan, refund_phase
onsale/aftersale, created, modified; the field list of ``taobao.refund.get``), as mirrored in
the TOP SDK models (e.g. github.com/bububa/opentaobao model/refund/Refund.go).

Mapping decisions:
- told apart from a trade by ``refund_id`` (a trade has none at its top level);
- order: ``tid`` (the trade), shop ``seller_nick`` as the trade adapter; line: ``oid`` (the
  sub-order, the trade adapter's line id; for a one-item trade oid equals tid);
- kind: a refund while the trade waits to ship (``order_status`` WAIT_SELLER_SEND_GOODS,
  PAID_FORBID_CONSIGN) is a cancel: the parcel is stopped; otherwise ``has_good_return`` makes
  it a return, else a refund only of ``refund_fee``;
- ``status``: WAIT_SELLER_AGREE, WAIT_BUYER_RETURN_GOODS, WAIT_SELLER_CONFIRM_GOODS and SUCCESS
  apply (one request per ``refund_id``, so a later status of the same refund is the same
  input); CLOSED and SELLER_REFUSE_BUYER ask nothing of the OMS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.channels.aftersale import (
    AfterSaleDraft,
    PlatformAfterSale,
    Stage,
    finish,
    has_any,
)
from streams.channels.base import (
    AdapterContext,
    AdapterError,
    ident_at,
    money_at,
    opt_time_at,
    status_from,
    text_at,
    time_at,
    unwrap,
)
from streams.messages import AfterSalesKind, DlqReason
from streams.models import Channel

STATUS = {
    "WAIT_SELLER_AGREE": Stage.APPLY,  # 买家已经申请退款，等待卖家同意
    "WAIT_BUYER_RETURN_GOODS": Stage.APPLY,  # 卖家已经同意退款，等待买家退货
    "WAIT_SELLER_CONFIRM_GOODS": Stage.APPLY,  # 买家已经退货，等待卖家确认收货
    "SUCCESS": Stage.APPLY,  # 退款成功
    "SELLER_REFUSE_BUYER": Stage.CLOSED,  # 卖家拒绝退款
    "CLOSED": Stage.CLOSED,  # 退款关闭
}
# The trade had not shipped when the refund was asked: the refund stops the parcel.
BEFORE_SHIPMENT = frozenset({"WAIT_SELLER_SEND_GOODS", "PAID_FORBID_CONSIGN"})
ENVELOPES = (("refund_get_response", "refund"), ("refund",))
MARKERS = ("refund_id",)


def _flag(refund: Mapping[str, Any], key: str) -> bool:
    """TOP booleans arrive as JSON booleans or as 'true'/'false'."""
    value = refund.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return bool(value)
    if value in ("true", "false"):
        return bool(value == "true")
    raise AdapterError(DlqReason.INVALID_FIELD, f"{key}: not a boolean")


class TaobaoAfterSales:
    """``taobao.refund.get`` refund -> AfterSalesRequest."""

    channel = Channel.TAOBAO
    order_id_fields: tuple[str, ...] = ("tid",)

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool:
        return has_any(unwrap(payload, *ENVELOPES), MARKERS)

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return unwrap(payload, *ENVELOPES)

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        refund = unwrap(payload, *ENVELOPES)
        status = text_at(refund, "status")
        if text_at(refund, "order_status") in BEFORE_SHIPMENT:
            kind = AfterSalesKind.CANCEL
        elif _flag(refund, "has_good_return"):
            kind = AfterSalesKind.RETURN
        else:
            kind = AfterSalesKind.REFUND
        oid = text_at(refund, "oid")
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=ctx.shop_for(self.channel, text_at(refund, "seller_nick")),
            external_id=ident_at(refund, "tid_str" if refund.get("tid_str") else "tid"),
            platform_id=ident_at(refund, "refund_id"),
            id_kind="refund",
            stage=status_from(STATUS, status, "status"),
            status=status,
            kind=kind,
            at=opt_time_at(refund, "modified") or time_at(refund, "created"),
            line_ids=(ident_at(refund, "oid"),) if oid else (),
            amount=money_at(refund, "refund_fee") if kind is AfterSalesKind.REFUND else None,
        ))
