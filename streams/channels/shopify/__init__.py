"""Shopify: everything the OMS knows about the channel.

- adapter.py reads the Order object the ``orders/create`` webhook posts into an Order;
- payload.py builds such webhooks for the load generator and tests;
- here: the Kafka key (``id``, else ``admin_graphql_api_id``), the write-back calls of the
  Admin REST API (``POST /fulfillments.json`` with the tracking number, refunds, cancel) and the
  carrier names Shopify recognises (``tracking_company``: 'SF Express', 'DHL Express', 'UPS').
"""

from __future__ import annotations

from streams.channels.shopify.adapter import ShopifyAdapter
from streams.channels.shopify.aftersale import ShopifyAfterSales
from streams.channels.shopify.payload import ShopifyPayloads
from streams.channels.spec import ChannelSpec
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.SHOPIFY,
    adapter=ShopifyAdapter(),
    order_id_fields=("id", "admin_graphql_api_id"),
    write_back={
        "shipped": "POST /fulfillments.json",
        "refunded": "POST /orders/{id}/refunds.json",
        "cancelled": "POST /orders/{id}/cancel.json",
    },
    carrier_codes={"SF": "SF Express", "DHL": "DHL Express", "UPS": "UPS"},
    aftersales=ShopifyAfterSales(),
    payloads=ShopifyPayloads(),
)
