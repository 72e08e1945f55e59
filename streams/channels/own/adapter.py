"""Own shop: the payload already is a canonical Order (JSON), validated as such.

Decisions:
- ``channel`` must be 'own' (absent means 'own'): this topic must not be a side door for orders
  claiming to come from a marketplace. ``shop_id`` absent -> the shop from ``ctx``.
- ``order_id`` is always recomputed as ``make_order_id('own', shop_id, external_id)``: it is a pure
  function of those three, and dedupe depends on it. A different id sent by the producer is not an
  error (the order itself is fine) but is kept in ``raw['submitted_order_id']`` so the producer's
  bug stays visible.
- ``address.province_code`` is re-derived through ``streams.regions`` (from the code sent, else
  the province name) so it is the same routing key as every other channel's.
- everything else is validated strictly by the model (unknown fields refused), money and times
  read from their JSON forms (decimal strings, ISO-8601 with offset); times are then held in UTC.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from pydantic import ValidationError

from streams.channels.base import (
    AdapterContext,
    AdapterError,
    bounded_extras,
    plausible_ship_after,
    plausible_time,
    text_at,
    validation_error,
)
from streams.messages import DlqReason
from streams.models import Channel, Order, make_order_id
from streams.regions import province_code


def _province(address: dict[str, Any]) -> str:
    """Same routing key as every other channel, whatever spelling the shop front used."""
    country = address.get("country")
    if not isinstance(country, str):
        country = "CN"
    given = [address.get(k) for k in ("province_code", "province")]
    return next((code for v in given if isinstance(v, str) and (code := province_code(v, country))),
                "")


def _in_utc(order: Order) -> Order:
    """UTC like every other channel, so a fingerprint does not depend on the sender's zone."""
    payment = order.payment
    if payment.paid_at is not None:
        payment = payment.model_copy(update={"paid_at": payment.paid_at.astimezone(UTC)})
    ship_after = order.ship_after.astimezone(UTC) if order.ship_after is not None else None
    return order.model_copy(update={
        "created_at": order.created_at.astimezone(UTC),
        "updated_at": order.updated_at.astimezone(UTC),
        "payment": payment,
        "ship_after": ship_after,
    })


class OwnAdapter:
    """Canonical Order JSON -> Order."""

    channel = Channel.OWN

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order:
        data = dict(payload)
        channel = data.setdefault("channel", self.channel.value)
        if not isinstance(channel, str):
            raise AdapterError(DlqReason.INVALID_FIELD, "channel: not a channel name")
        if channel not in {c.value for c in Channel}:
            # The value is not echoed: a mangled payload may carry personal data in any field.
            raise AdapterError(DlqReason.UNKNOWN_CHANNEL, "channel: not a known channel")
        if channel != self.channel.value:
            raise AdapterError(DlqReason.INVALID_FIELD, "channel: must be 'own' on this topic")
        data["shop_id"] = text_at(data, "shop_id") or ctx.shop_for(self.channel)
        external_id = text_at(data, "external_id")
        if isinstance(data.get("external_id"), str):
            # The id the order id is computed from, stripped like every channel's ids: else
            # ' W1' and 'W1' would be one order id with two external ids.
            if not external_id:
                raise AdapterError(DlqReason.MISSING_FIELD, "external_id")
            data["external_id"] = external_id
        computed = make_order_id(self.channel.value, data["shop_id"], external_id)
        submitted = data.get("order_id")
        data["order_id"] = computed
        address = data.get("address")
        if isinstance(address, dict):
            data["address"] = {**address, "province_code": _province(address)}
        raw = data.get("raw")
        if isinstance(raw, dict):
            data["raw"] = raw = bounded_extras(raw)
        if submitted not in (None, computed) and (raw is None or isinstance(raw, dict)):
            data["raw"] = {**(raw or {}), "submitted_order_id": submitted}
        try:
            # JSON mode: the strict model reads Decimal from strings and datetimes from ISO text.
            order = Order.model_validate_json(orjson.dumps(data))
        except ValidationError as exc:
            raise validation_error(exc) from None
        except orjson.JSONEncodeError as exc:
            raise AdapterError(DlqReason.INVALID_FIELD, "payload is not JSON-encodable") from exc
        plausible_time(order.created_at, "created_at")
        plausible_time(order.updated_at, "updated_at")
        if order.payment.paid_at is not None:
            plausible_time(order.payment.paid_at, "payment.paid_at")
        if order.ship_after is not None:
            plausible_ship_after(order.ship_after, "ship_after")
        return _in_utc(order)
