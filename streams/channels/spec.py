"""One sales channel as the rest of the OMS sees it: a :class:`ChannelSpec` per channel package.

Each ``streams/channels/<channel>/__init__.py`` fills one in: the adapter that reads the
channel's payload, the payload fields that hold its order number (the Kafka key of
``oms.raw.<channel>``, streams/keys.py), the channel API a shop connector calls to write a
status back (order/channel_updates.py), the channel's codes for the OMS carriers, and the
payload generator of the load generator and tests. streams/channels/__init__.py collects them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.channels.aftersale import AfterSaleParser
from streams.channels.base import Adapter
from streams.channels.drafts import PayloadBuilder
from streams.models import Channel


@dataclass(frozen=True)
class ChannelSpec:
    channel: Channel
    adapter: Adapter  # raw payload -> canonical Order
    # Where the payload keeps its order number, first found wins (streams/keys.py).
    order_id_fields: tuple[str, ...]
    # Status the OMS writes back ('shipped', 'refunded', 'cancelled') -> the channel API a
    # connector calls for it; a status not listed goes to the shop's webhook.
    write_back: Mapping[str, str]
    # OMS carrier code -> the channel's code for it (a carrier not listed is sent as the OMS
    # code); empty where the channel takes carrier names as they come.
    carrier_codes: Mapping[str, str]
    payloads: PayloadBuilder  # native payloads for the load generator and tests
    # the platform's own after-sales (refunds, returns) on the same raw topic; None: the
    # channel sends after-sales on oms.aftersales only (streams/channels/aftersale.py)
    aftersales: AfterSaleParser | None = None

    def __post_init__(self) -> None:
        channels = [self.adapter.channel, self.payloads.channel]
        channels += [self.aftersales.channel] if self.aftersales else []
        if any(channel is not self.channel for channel in channels):
            raise ValueError(f"the {self.channel.value} spec holds another channel's parts")
        if not self.order_id_fields:
            raise ValueError(f"the {self.channel.value} spec names no order id field")
