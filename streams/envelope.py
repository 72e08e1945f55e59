"""Outputs as they go on the wire: the events of one order travel together.

A batch's outputs are (topic, key, JSON) triples, one order event each, in the order they were
decided (and kept in that form in the order's outbox, so a redelivery re-sends the same
events). Before they are produced, the events of one order are packed into one
:class:`streams.messages.OrderEvents` message per batch: about five transitions per order
become one Kafka record. Packing is by string joining of the events' own JSON (nothing is
parsed or serialised again), order kept within each order, and a message is closed before it
would outgrow ``max_bytes`` (an order snapshot can be 512 KB; Kafka takes 1 MB). Other topics'
outputs pass through unchanged; the relative order of different orders' messages is not kept,
and need not be: each order's events are ordered by their partition key, the order id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from streams.messages import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES

PACK_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # room for the envelope and the record's headers
_HEAD = b'{"schema_version":1,"order_id":'
_EVENTS = b',"events":['
_TAIL = b"]}"

Wire = tuple[str, bytes, bytes]  # topic, key, value as produced


@dataclass
class _Pack:
    key: str
    events: list[bytes] = field(default_factory=list)
    size: int = 0


def pack_events(
    outputs: Sequence[tuple[str, str, str]], events_topic: str, max_bytes: int = PACK_BYTES
) -> list[Wire]:
    """The outputs, encoded, with each order's events packed into OrderEvents messages."""
    wire: list[Wire | _Pack] = []
    open_packs: dict[str, _Pack] = {}
    for topic, key, value in outputs:
        data = value.encode()
        if topic != events_topic:
            wire.append((topic, key.encode(), data))
            continue
        pack = open_packs.get(key)
        if (
            pack is None
            or pack.size + len(data) + 1 > max_bytes
            or len(pack.events) >= MAX_EVENTS_PER_MESSAGE
        ):
            pack = open_packs[key] = _Pack(key)
            wire.append(pack)
        pack.events.append(data)
        pack.size += len(data) + 1
    return [
        (events_topic, item.key.encode(), envelope(item.key, item.events))
        if isinstance(item, _Pack)
        else item
        for item in wire
    ]


def envelope(order_id: str, events: Sequence[bytes]) -> bytes:
    """The OrderEvents JSON of already serialised events (the model's field order)."""
    return b"".join((_HEAD, orjson.dumps(order_id), _EVENTS, b",".join(events), _TAIL))
