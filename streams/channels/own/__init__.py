"""The merchant's own shop (mini-program, app, web): it sends the canonical Order JSON.

- adapter.py validates that JSON (streams/schemas/Order.json) into an Order;
- payload.py builds such orders for the load generator and tests;
- here: the Kafka key (``external_id``); every write-back goes to the shop's webhook, with the
  OMS's own carrier codes.
"""

from __future__ import annotations

from streams.channels.own.adapter import OwnAdapter
from streams.channels.own.payload import OwnPayloads
from streams.channels.spec import ChannelSpec
from streams.models import Channel

SPEC = ChannelSpec(
    channel=Channel.OWN,
    adapter=OwnAdapter(),
    order_id_fields=("external_id",),
    write_back={"shipped": "webhook", "refunded": "webhook", "cancelled": "webhook"},
    carrier_codes={},
    payloads=OwnPayloads(),
)
