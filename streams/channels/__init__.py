"""The sales channels, one package each, and ``adapt``: raw platform payload -> canonical Order.

Everything the OMS knows about a channel is in ``streams/channels/<channel>/``: its adapter, the
payload fields that key ``oms.raw.<channel>``, the channel APIs and carrier codes of write-backs,
and the payload generator of the load generator (a :class:`~streams.channels.spec.ChannelSpec`
in its ``__init__.py``). What the adapters share is streams/channels/base.py; what the payload
generators share, streams/channels/drafts.py. A new channel is a new package, a member of
``streams.models.Channel`` and a line in :data:`CHANNELS`.

``adapt`` is the entry point for the normalise stage and the CLI: whatever the bytes, it returns
an Order or raises AdapterError (never anything else), so a bad payload becomes a DLQ record.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from streams.channels import amazon, douyin, jd, own, shopify, taobao
from streams.channels.base import (
    Adapter,
    AdapterContext,
    AdapterError,
    SkuMap,
    decode_payload,
    fits_a_message,
    validation_error,
)
from streams.channels.spec import ChannelSpec
from streams.messages import DlqReason
from streams.models import Channel, Order

__all__ = [
    "ADAPTERS",
    "CHANNELS",
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "ChannelSpec",
    "SkuMap",
    "adapt",
    "adapt_payload",
    "get_adapter",
]

CHANNELS: dict[Channel, ChannelSpec] = {
    spec.channel: spec
    for spec in (taobao.SPEC, jd.SPEC, douyin.SPEC, shopify.SPEC, amazon.SPEC, own.SPEC)
}
ADAPTERS: dict[Channel, Adapter] = {channel: spec.adapter for channel, spec in CHANNELS.items()}


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
