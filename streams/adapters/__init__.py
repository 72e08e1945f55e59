"""Channel adapters: raw platform payload -> canonical Order, or an AdapterError with a reason.

``adapt`` is the entry point for the normalise stage and the CLI: whatever the bytes, it returns
an Order or raises AdapterError (never anything else), so a bad payload becomes a DLQ record.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from streams.adapters.amazon import AmazonAdapter
from streams.adapters.base import (
    Adapter,
    AdapterContext,
    AdapterError,
    SkuMap,
    decode_payload,
    fits_a_message,
    validation_error,
)
from streams.adapters.douyin import DouyinAdapter
from streams.adapters.jd import JdAdapter
from streams.adapters.own import OwnAdapter
from streams.adapters.shopify import ShopifyAdapter
from streams.adapters.taobao import TaobaoAdapter
from streams.messages import DlqReason
from streams.models import Channel, Order

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "SkuMap",
    "adapt",
    "adapt_payload",
    "get_adapter",
]

ADAPTERS: dict[Channel, Adapter] = {
    adapter.channel: adapter
    for adapter in (
        TaobaoAdapter(),
        JdAdapter(),
        DouyinAdapter(),
        ShopifyAdapter(),
        AmazonAdapter(),
        OwnAdapter(),
    )
}


def get_adapter(channel: str) -> Adapter:
    """Adapter for a channel name ('taobao', 'jd', ...); unknown names are a DLQ reason."""
    try:
        return ADAPTERS[Channel(channel)]
    except (ValueError, KeyError):
        raise AdapterError(DlqReason.UNKNOWN_CHANNEL, f"no adapter for channel {channel!r}"
                           if isinstance(channel, str) and len(channel) <= 64
                           else "no adapter for this channel") from None


def adapt_payload(channel: str, payload: dict[str, Any], ctx: AdapterContext) -> Order:
    """Already-decoded payload -> Order; same error contract as :func:`adapt`."""
    adapter = get_adapter(channel)
    try:
        return fits_a_message(adapter.to_order(payload, ctx))
    except AdapterError:
        raise
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError,
            IndexError, RecursionError) as exc:
        # A payload shape no check anticipated. The message is dropped on purpose: it may
        # quote the offending value, which may be personal data.
        raise AdapterError(
            DlqReason.INVALID_FIELD, f"unexpected {type(exc).__name__} mapping a {channel} order"
        ) from None


def adapt(channel: str, data: bytes, ctx: AdapterContext | None = None) -> Order:
    """Raw message bytes of ``oms.raw.<channel>`` -> Order, or AdapterError with a DLQ reason."""
    adapter_ctx = ctx if ctx is not None else AdapterContext()
    get_adapter(channel)  # unknown channel wins over a malformed body: it says where to look
    return adapt_payload(channel, decode_payload(data), adapter_ctx)
