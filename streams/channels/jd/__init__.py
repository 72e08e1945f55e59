"""JD (Jingdong POP, the third-party seller platform): everything the OMS knows about the channel.

- adapter.py reads a POP order (``consigneeInfo``, ``itemInfoList``, ``outerSkuId``) into an Order;
- payload.py builds such orders for the load generator and tests;
- here: the Kafka key (``orderId``), the write-back APIs (``jingdong.pop.order.shipment`` with
  the tracking number, ``jingdong.pop.afs.refund.approve``, ``jingdong.pop.order.cancel``) and
  JD's numeric carrier ids (SF Express is 467).
"""

from __future__ import annotations

from streams.channels.jd.adapter import JdAdapter
from streams.channels.jd.aftersale import JdAfterSales
from streams.channels.jd.payload import JdPayloads
from streams.channels.spec import ChannelSpec
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.JD,
    adapter=JdAdapter(),
    order_id_fields=("orderId",),
    write_back={
        "shipped": "jingdong.pop.order.shipment",
        "refunded": "jingdong.pop.afs.refund.approve",
        "cancelled": "jingdong.pop.order.cancel",
    },
    carrier_codes={"SF": "467", "ZTO": "463", "YTO": "2463", "JD": "2087", "EMS": "465"},
    aftersales=JdAfterSales(),
    payloads=JdPayloads(),
)
