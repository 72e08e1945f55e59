"""Amazon (Selling Partner API): everything the OMS knows about the channel.

- adapter.py reads a ``getOrder`` payload with the ``getOrderItems`` ``OrderItems`` attached;
- payload.py builds such payloads for the load generator and tests;
- here: the Kafka key (``AmazonOrderId``), the write-back calls (``confirmShipment`` with the
  tracking number; refunds and cancellations as feeds, ``POST_PAYMENT_ADJUSTMENT_DATA`` and
  ``POST_ORDER_ACKNOWLEDGEMENT_DATA``) and the carrier names Amazon lists (``carrierCode``).
"""

from __future__ import annotations

from streams.channels.amazon.adapter import AmazonAdapter
from streams.channels.amazon.aftersale import AmazonAfterSales
from streams.channels.amazon.payload import AmazonPayloads
from streams.channels.spec import ChannelSpec
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.AMAZON,
    adapter=AmazonAdapter(),
    order_id_fields=("AmazonOrderId",),
    write_back={
        "shipped": "confirmShipment",
        "refunded": "submitFeed POST_PAYMENT_ADJUSTMENT_DATA",
        "cancelled": "submitFeed POST_ORDER_ACKNOWLEDGEMENT_DATA",
    },
    carrier_codes={"SF": "SF Express", "DHL": "DHL", "UPS": "UPS", "EMS": "China Post"},
    aftersales=AmazonAfterSales(),
    payloads=AmazonPayloads(),
)
