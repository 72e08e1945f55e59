"""What the OMS writes back to each shop on ``oms.channel.updates``: tracking numbers once a
parcel ships, refunds, cancellations. Each channel has its own API for it and its own carrier
codes; the update carries both so the shop connector only has to call the API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from order.record import OrderRecord
from streams.messages import ChannelUpdate, make_id
from streams.models import Channel

# The channel API a connector calls per status (the channels' public order APIs).
CHANNEL_APIS: dict[Channel, dict[str, str]] = {
    Channel.TAOBAO: {
        "shipped": "taobao.logistics.offline.send",
        "refunded": "taobao.rp.refund.agree",
        "cancelled": "taobao.trade.close",
    },
    Channel.JD: {
        "shipped": "jingdong.pop.order.shipment",
        "refunded": "jingdong.pop.afs.refund.approve",
        "cancelled": "jingdong.pop.order.cancel",
    },
    Channel.DOUYIN: {
        "shipped": "order.logisticsAdd",
        "refunded": "afterSale.operate",
        "cancelled": "order.cancel",
    },
    Channel.SHOPIFY: {
        "shipped": "POST /fulfillments.json",
        "refunded": "POST /orders/{id}/refunds.json",
        "cancelled": "POST /orders/{id}/cancel.json",
    },
    Channel.AMAZON: {
        "shipped": "confirmShipment",
        "refunded": "submitFeed POST_PAYMENT_ADJUSTMENT_DATA",
        "cancelled": "submitFeed POST_ORDER_ACKNOWLEDGEMENT_DATA",
    },
    Channel.OWN: {"shipped": "webhook", "refunded": "webhook", "cancelled": "webhook"},
}

# OMS carrier code -> the channel's code for it (where the channel has its own list).
CARRIER_CODES: dict[Channel, dict[str, str]] = {
    Channel.TAOBAO: {"SF": "SF", "ZTO": "ZTO", "YTO": "YTO", "JD": "JD", "EMS": "EMS"},
    Channel.JD: {"SF": "467", "ZTO": "463", "YTO": "2463", "JD": "2087", "EMS": "465"},
    Channel.DOUYIN: {"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "JD": "jd"},
    Channel.AMAZON: {"SF": "SF Express", "DHL": "DHL", "UPS": "UPS", "EMS": "China Post"},
    Channel.SHOPIFY: {"SF": "SF Express", "DHL": "DHL Express", "UPS": "UPS"},
}


def channel_update(
    record: OrderRecord,
    status: str,
    at: datetime,
    *,
    cause: str,
    carrier: str = "",
    tracking_number: str = "",
    amount: Decimal | None = None,
) -> ChannelUpdate:
    """One write-back; ``cause`` (the WMS event or request behind it) makes the id stable."""
    order = record.order
    extra: dict[str, str] = {"api": CHANNEL_APIS[order.channel].get(status, "webhook")}
    if carrier:
        extra["channel_carrier"] = CARRIER_CODES.get(order.channel, {}).get(carrier, carrier)
    if amount is not None:
        extra["amount"] = str(amount)
        extra["currency"] = order.currency
    return ChannelUpdate(
        update_id=make_id("U", record.order_id, status, cause),
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        order_id=record.order_id,
        status=status,
        carrier=carrier,
        tracking_number=tracking_number,
        at=at,
        extra=extra,
    )
