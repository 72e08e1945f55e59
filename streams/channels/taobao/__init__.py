"""Taobao and Tmall (Alibaba's TOP API): everything the OMS knows about the channel.

- adapter.py reads the ``trade`` of ``taobao.trade.fullinfo.get`` into an Order;
- payload.py builds such trades for the load generator and tests;
- here: the Kafka key (``tid_str``, exact beyond 2^53, else ``tid``), the write-back APIs
  (``taobao.logistics.offline.send`` with the tracking number, ``taobao.rp.refund.agree``,
  ``taobao.trade.close``) and Taobao's carrier codes (the same letters as the OMS's).
"""

from __future__ import annotations

from streams.channels.spec import ChannelSpec
from streams.channels.taobao.adapter import TaobaoAdapter
from streams.channels.taobao.aftersale import TaobaoAfterSales
from streams.channels.taobao.payload import TaobaoPayloads
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.TAOBAO,
    adapter=TaobaoAdapter(),
    order_id_fields=("tid_str", "tid"),
    write_back={
        "shipped": "taobao.logistics.offline.send",
        "refunded": "taobao.rp.refund.agree",
        "cancelled": "taobao.trade.close",
    },
    carrier_codes={"SF": "SF", "ZTO": "ZTO", "YTO": "YTO", "JD": "JD", "EMS": "EMS"},
    aftersales=TaobaoAfterSales(),
    payloads=TaobaoPayloads(),
)
