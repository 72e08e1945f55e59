"""The sales channels, one package each, and ``adapt``: raw platform payload -> canonical Order.

Everything the OMS knows about a channel is in ``streams/channels/<channel>/``: its adapter, the
payload fields that key ``oms.raw.<channel>``, the channel APIs and carrier codes of write-backs,
and the payload generator of the load generator (a :class:`~streams.channels.spec.ChannelSpec`
in its ``__init__.py``). What the adapters share is streams/channels/base.py; what the payload
generators share, streams/channels/drafts.py. A new channel is a new package, a member of
``streams.models.Channel`` and a line in :data:`CHANNELS`.

``adapt`` is the entry point for the normalise stage and the CLI: whatever the bytes, it returns
an Order or raises AdapterError (never anything else), so a bad payload becomes a DLQ record.
``adapt_input`` is the same for a raw topic that also carries the platform's own after-sales
(streams/channels/aftersale.py): an Order, an AfterSalesRequest or a ClosedAtChannel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from streams.channels import amazon, douyin, jd, own, shopify, taobao
from streams.channels.aftersale import AfterSaleParser, ClosedAtChannel, PlatformAfterSale
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
    "AFTERSALES",
    "CHANNELS",
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "ChannelSpec",
    "ClosedAtChannel",
    "PlatformAfterSale",
    "SkuMap",
    "adapt",
    "adapt_input",
    "adapt_payload",
    "aftersale_parser",
    "get_adapter",
]

T = TypeVar("T")

CHANNELS: dict[Channel, ChannelSpec] = {
    spec.channel: spec
    for spec in (taobao.SPEC, jd.SPEC, douyin.SPEC, shopify.SPEC, amazon.SPEC, own.SPEC)
}
ADAPTERS: dict[Channel, Adapter] = {channel: spec.adapter for channel, spec in CHANNELS.items()}
AFTERSALES: dict[Channel, AfterSaleParser] = {
    channel: spec.aftersales for channel, spec in CHANNELS.items() if spec.aftersales
}
# The ``oms-kind`` header's values (streams/normalise.py KIND_HEADER): a producer that knows
# what it sends says so; without it, the payload's own fields tell (``is_aftersale``).
ORDER_KIND = "order"
AFTERSALE_KIND = "aftersale"


def get_adapter(channel: str) -> Adapter:
    """Adapter for a channel name ('taobao', 'jd', ...); unknown names are a DLQ reason."""
    try:
        return ADAPTERS[Channel(channel)]
    except (ValueError, KeyError):
        raise AdapterError(DlqReason.UNKNOWN_CHANNEL, f"no adapter for channel {channel!r}"
                           if isinstance(channel, str) and len(channel) <= 64
                           else "no adapter for this channel") from None


def aftersale_parser(channel: str) -> AfterSaleParser | None:
    """The channel's after-sale parser, None for a channel without (or an unknown one)."""
    try:
        return AFTERSALES.get(Channel(channel))
    except ValueError:
        return None


def adapt_payload(channel: str, payload: dict[str, Any], ctx: AdapterContext) -> Order:
    """Already-decoded payload -> Order; same error contract as :func:`adapt`."""
    adapter = get_adapter(channel)
    return _mapped(channel, "order", lambda: fits_a_message(adapter.to_order(payload, ctx)))


def _mapped(channel: str, what: str, parse: Callable[[], T]) -> T:
    """``parse()``, with anything but AdapterError turned into one."""
    try:
        return parse()
    except AdapterError:
        raise
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError,
            IndexError, RecursionError) as exc:
        # A payload shape no check anticipated. The message is dropped on purpose: it may
        # quote the offending value, which may be personal data.
        raise AdapterError(
            DlqReason.INVALID_FIELD, f"unexpected {type(exc).__name__} mapping a {channel} {what}"
        ) from None


def adapt_input(
    channel: str, data: bytes, ctx: AdapterContext | None = None, kind: str = ""
) -> Order | PlatformAfterSale:
    """Raw message bytes -> an Order, or the platform's after-sale; ``kind`` is the
    ``oms-kind`` header ('order', 'aftersale', or '' to tell by the payload's fields). Same
    error contract as :func:`adapt`."""
    adapter_ctx = ctx if ctx is not None else AdapterContext()
    get_adapter(channel)
    parser = aftersale_parser(channel)
    if kind == AFTERSALE_KIND and parser is None:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{channel} sends no after-sales here")
    payload = decode_payload(data)
    if parser is None or kind == ORDER_KIND:
        return adapt_payload(channel, payload, adapter_ctx)
    detected = kind == AFTERSALE_KIND or _mapped(
        channel, "after-sale", lambda: parser.is_aftersale(payload)
    )
    if detected:
        return _mapped(channel, "after-sale", lambda: parser.to_request(payload, adapter_ctx))
    return adapt_payload(channel, payload, adapter_ctx)


def adapt(channel: str, data: bytes, ctx: AdapterContext | None = None) -> Order:
    """Raw message bytes of ``oms.raw.<channel>`` -> Order, or AdapterError with a DLQ reason."""
    adapter_ctx = ctx if ctx is not None else AdapterContext()
    get_adapter(channel)  # unknown channel wins over a malformed body: it says where to look
    return adapt_payload(channel, decode_payload(data), adapter_ctx)
