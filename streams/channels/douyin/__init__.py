"""Douyin shop (抖店, the Douyin e-commerce open platform): everything the OMS knows about it.

- adapter.py reads ``shop_order_detail`` (``sku_order_list``, amounts in fen) into an Order;
- payload.py builds such orders for the load generator and tests;
- here: the Kafka key (``order_id``, else ``p_id``), the write-back APIs
  (``order.logisticsAdd`` with the tracking number, ``afterSale.operate``, ``order.cancel``)
  and Douyin's carrier codes (pinyin: ``shunfeng``, ``zhongtong``, ...).
"""

from __future__ import annotations

from streams.channels.douyin.adapter import DouyinAdapter
from streams.channels.douyin.aftersale import DouyinAfterSales
from streams.channels.douyin.payload import DouyinPayloads
from streams.channels.spec import ChannelSpec
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.DOUYIN,
    adapter=DouyinAdapter(),
    order_id_fields=("order_id", "p_id"),
    write_back={
        "shipped": "order.logisticsAdd",
        "refunded": "afterSale.operate",
        "cancelled": "order.cancel",
    },
    carrier_codes={"SF": "shunfeng", "ZTO": "zhongtong", "YTO": "yuantong", "JD": "jd"},
    aftersales=DouyinAfterSales(),
    payloads=DouyinPayloads(),
)
