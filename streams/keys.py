"""Where each channel's payload keeps its order number: the Kafka key of ``oms.raw.<channel>``.

Keying by the channel order id puts every push of one order on one partition, which is what
lets the whole order path run without a re-keying hop (see streams/topics.py). Each channel
names its fields in its package (``order_id_fields`` in streams/channels/<channel>/__init__.py).
"""

from __future__ import annotations

from typing import Any

from streams.channels import CHANNELS, aftersale_parser
from streams.channels.base import AdapterError

ORDER_ID_FIELDS: dict[str, tuple[str, ...]] = {
    channel.value: spec.order_id_fields for channel, spec in CHANNELS.items()
}


def channel_order_key(channel: str, payload: Any) -> str:
    """The order number, or '' when the payload has none (it will be DLQ'd downstream). A
    platform after-sale is keyed by its ORDER's number (not its own id), so it shares the
    order's partition and is read after it."""
    if not isinstance(payload, dict):
        return ""
    fields = ORDER_ID_FIELDS.get(channel, ())
    parser = aftersale_parser(channel)
    try:
        if parser is not None and parser.is_aftersale(payload):
            payload, fields = parser.unwrapped(payload), parser.order_id_fields
    except AdapterError:  # broken beyond reading: keyless, dead-lettered downstream
        return ""
    for field in fields:
        value = payload.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""
