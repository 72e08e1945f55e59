"""Stage 1: raw channel bytes -> canonical Order, or a DLQ record that says why not."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.adapters import adapt
from streams.adapters.base import AdapterContext, AdapterError
from streams.messages import DlqReason, DlqRecord, make_id
from streams.models import Order

SHOP_HEADER = "oms-shop"


@dataclass(frozen=True)
class RawInput:
    """One message from an ``oms.raw.<channel>`` topic, with where it came from."""

    channel: str
    value: bytes
    topic: str
    partition: int = -1
    offset: int = -1
    key: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def input_id(self) -> str:
        """Identifies this delivery: a redelivery after a crash has the same id, a re-push not."""
        return f"{self.topic}:{self.partition}:{self.offset}"


def normalise(raw: RawInput, ctx: AdapterContext) -> Order | DlqRecord:
    """Never raises for bad input: anything the adapter refuses becomes a DLQ record."""
    shop = raw.headers.get(SHOP_HEADER, "")
    local_ctx = AdapterContext(
        sku_map=ctx.sku_map, shop_id=shop or ctx.shop_id, default_shop=ctx.default_shop
    )
    try:
        return adapt(raw.channel, raw.value, local_ctx)
    except AdapterError as exc:
        return to_dlq(raw, exc.reason, exc.detail)


def to_dlq(raw: RawInput, reason: DlqReason, detail: str) -> DlqRecord:
    try:
        payload, encoding = raw.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw.value).decode("ascii"), "base64"
    return DlqRecord(
        dlq_id=make_id("D", raw.input_id, reason.value, len(raw.value)),
        reason=reason,
        detail=detail[:4000],
        source_topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        channel=raw.channel,
        key=raw.key,
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]
        received_at=datetime.now(UTC),
    )
