"""Topic catalogue: the single place that names topics, their keys and their value types.

Partition keys, and why:
- ``oms.raw.<channel>``: the channel order id. Every push of one order lands in one partition,
  so normalise -> dedupe -> audit -> reserve -> route run in order for that order without a hop
  (the OMS order id is a pure function of channel, shop and external id).
- ``oms.order-events``, ``oms.fulfilment.commands``, ``oms.wms.events``, ``oms.aftersales``,
  ``oms.channel.updates``: the OMS order id, so one order's life is read in order.
- ``oms.channel.stock``: the sku, so the newest sellable figure for a sku wins.
- ``oms.dlq``: the source key, so a replay keeps the original order of a key's inputs.
Stock itself is never partitioned through Kafka: Redis scripts serialise it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from streams.messages import (
    AfterSalesRequest,
    ChannelStock,
    ChannelUpdate,
    DlqRecord,
    FulfilmentCommand,
    OperatorAction,
    OrderEvents,
    WmsEvent,
)
from streams.models import Channel, Order


@dataclass(frozen=True)
class TopicSpec:
    """Name suffix, partition key and value model of one topic."""

    suffix: str
    key: str
    model: type[BaseModel] | None  # None: raw channel bytes, shape defined by the channel
    doc: str

    def name(self, prefix: str) -> str:
        """The topic's name under ``prefix`` (OMS_TOPIC_PREFIX, ``oms`` by default)."""
        return f"{prefix}.{self.suffix}"


RAW_KEY = "channel order id"

ORDER_EVENTS = TopicSpec(
    "order-events", "order id", OrderEvents, "every state transition, an order's batch together"
)
FULFILMENT_COMMANDS = TopicSpec(
    "fulfilment.commands", "order id", FulfilmentCommand, "outbound/cancel/intercept for the WMS"
)
WMS_EVENTS = TopicSpec("wms.events", "order id", WmsEvent, "accepted/shipped/exception from WMS")
AFTERSALES = TopicSpec("aftersales", "order id", AfterSalesRequest, "cancel/return/refund")
CHANNEL_STOCK = TopicSpec("channel.stock", "sku", ChannelStock, "sellable stock per shop")
CHANNEL_UPDATES = TopicSpec("channel.updates", "order id", ChannelUpdate, "status back to shops")
OPERATOR = TopicSpec("operator", "order id", OperatorAction, "operator decisions: release, cancel")
DLQ = TopicSpec("dlq", "source key", DlqRecord, "inputs that could not be accepted, with reason")


def raw_topic(channel: Channel | str) -> TopicSpec:
    channel = Channel(channel)
    model = Order if channel is Channel.OWN else None
    return TopicSpec(f"raw.{channel.value}", RAW_KEY, model, f"raw {channel.value} payloads")


RAW_TOPICS: tuple[TopicSpec, ...] = tuple(raw_topic(c) for c in Channel)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    *RAW_TOPICS,
    ORDER_EVENTS,
    FULFILMENT_COMMANDS,
    WMS_EVENTS,
    AFTERSALES,
    CHANNEL_STOCK,
    CHANNEL_UPDATES,
    OPERATOR,
    DLQ,
)


def topic_partitions(prefix: str, partitions: int) -> list[tuple[str, int]]:
    """(name, partitions) for every topic, for the launcher to create before workers start."""
    return [(spec.name(prefix), partitions) for spec in ALL_TOPICS]
