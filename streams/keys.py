"""Where each channel's payload keeps its order number: the Kafka key of ``oms.raw.<channel>``.

Keying by the channel order id puts every push of one order on one partition, which is what
lets the whole order path run without a re-keying hop (see streams/topics.py).
"""

from __future__ import annotations

from typing import Any

ORDER_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "taobao": ("tid_str", "tid"),
    "jd": ("orderId",),
    "douyin": ("order_id", "p_id"),
    "shopify": ("id", "admin_graphql_api_id"),
    "amazon": ("AmazonOrderId",),
    "own": ("external_id",),
}


def channel_order_key(channel: str, payload: Any) -> str:
    """The order number, or '' when the payload has none (it will be DLQ'd downstream)."""
    if not isinstance(payload, dict):
        return ""
    for field in ORDER_ID_FIELDS.get(channel, ()):
        value = payload.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""
