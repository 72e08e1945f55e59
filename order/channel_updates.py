"""What the OMS writes back to each shop on ``oms.channel.updates``: tracking numbers once a
parcel ships, refunds, cancellations. Each channel has its own API for it and its own carrier
codes (``write_back`` and ``carrier_codes`` in streams/channels/<channel>/__init__.py); the update
carries both so the shop connector only has to call the API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from order.record import OrderRecord
from streams.channels import CHANNELS
from streams.messages import ChannelUpdate, make_id


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
    spec = CHANNELS[order.channel]
    extra: dict[str, str] = {"api": spec.write_back.get(status, "webhook")}
    if carrier:
        extra["channel_carrier"] = spec.carrier_codes.get(carrier, carrier)
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
