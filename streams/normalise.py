"""Stage 1: raw channel bytes -> canonical Order, the platform's own after-sale (an
AfterSalesRequest, or ClosedAtChannel when it asks nothing), or a DLQ record that says why not."""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from streams.channels import ClosedAtChannel, adapt_input
from streams.channels.base import MAX_MESSAGE_BYTES, AdapterContext, AdapterError
from streams.messages import AfterSalesRequest, DlqReason, DlqRecord, make_id
from streams.models import Order

SHOP_HEADER = "oms-shop"
# What the message is, when its producer knows: 'order' or 'aftersale' (streams/channels
# ORDER_KIND, AFTERSALE_KIND); absent, the payload's own fields tell. Any other value is a
# DLQ record: a producer that names a kind must name a known one.
KIND_HEADER = "oms-kind"
KINDS = frozenset({"", "order", "aftersale"})
# Headers of a DLQ replay (web/views.py replay_records): the DLQ id it replays, and the
# position of the input the DLQ record was made from.
REPLAY_OF_HEADER = "oms-replay-of"
REPLAY_INPUT_HEADER = "oms-replay-input"
# A DLQ record keeps the payload, JSON-escaped inside the record: up to 6 bytes per input byte
# (control characters), 4/3 as base64. It must still fit one Kafka message (MAX_MESSAGE_BYTES),
# so a payload beyond this budget is kept as base64 of its first bytes, and the detail says so.
MAX_DLQ_PAYLOAD_CHARS = 900_000
MAX_DLQ_RECORD_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # the record's bound, key and headers aside


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
        """Identifies this delivery: a redelivery after a crash has the same id, a re-push not.
        A DLQ replay (``./oms dlq replay``) is the input it replays, wherever it lands now: an
        input whose outputs were lost after its order was saved is then a redelivery (its
        outputs are sent again), not a re-push that changes nothing (issue 13 item 9)."""
        replayed = replayed_input(self.headers, self.topic)
        return replayed or f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def origin(self) -> tuple[int, int]:
        """(partition, offset) of the input this is: a replay's are those of what it replays,
        so a replay that fails again is the same DLQ record, naming the same input."""
        _, partition, offset = self.input_id.rsplit(":", 2)
        return int(partition), int(offset)


def replayed_input(headers: dict[str, str], topic: str) -> str:
    """The original ``topic:partition:offset`` a replay names, if it names one of this topic
    (anything else, malformed or of another topic, is ignored: the message is new)."""
    value = headers.get(REPLAY_INPUT_HEADER, "")
    source, _, position = value.rpartition(":")
    source, _, partition = source.rpartition(":")
    if source != topic or not partition.isdigit() or not position.isdigit() or len(value) > 300:
        return ""
    return value


Normalised = Order | AfterSalesRequest | ClosedAtChannel | DlqRecord


def normalise(raw: RawInput, ctx: AdapterContext) -> Normalised:
    """Never raises for bad input: anything the adapter or the after-sale parser refuses
    becomes a DLQ record."""
    shop = raw.headers.get(SHOP_HEADER, "").strip()
    kind = raw.headers.get(KIND_HEADER, "").strip().lower()
    if kind not in KINDS:
        return to_dlq(raw, DlqReason.INVALID_FIELD, f"header {KIND_HEADER}: unknown kind")
    local_ctx = AdapterContext(
        sku_map=ctx.sku_map, shop_id=shop or ctx.shop_id, default_shop=ctx.default_shop
    )
    try:
        return adapt_input(raw.channel, raw.value, local_ctx, kind)
    except AdapterError as exc:
        return to_dlq(raw, exc.reason, exc.detail)


def to_dlq(raw: RawInput, reason: DlqReason, detail: str) -> DlqRecord:
    payload, encoding, kept = kept_payload(raw.value)
    if kept < len(raw.value):
        note = f" [payload truncated: first {kept} of {len(raw.value)} bytes kept, as base64]"
        detail = detail[: 4000 - len(note)] + note
    return DlqRecord(
        dlq_id=make_id("D", raw.input_id, reason.value, len(raw.value)),
        reason=reason,
        detail=detail[:4000],
        source_topic=raw.topic,
        partition=raw.origin[0],
        offset=raw.origin[1],
        channel=raw.channel,
        key=raw.key,
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]
        payload_truncated=kept < len(raw.value),
        received_at=datetime.now(UTC),
    )


def kept_payload(value: bytes) -> tuple[str, str, int]:
    """(payload, encoding, bytes kept): the whole input as utf-8 text, or as base64 when it is
    not utf-8; only what would overflow the record (see MAX_DLQ_PAYLOAD_CHARS) is cut."""
    if len(value) <= MAX_DLQ_PAYLOAD_CHARS:
        with contextlib.suppress(UnicodeDecodeError):
            text = value.decode("utf-8")
            if len(orjson.dumps(text)) <= MAX_DLQ_PAYLOAD_CHARS:
                return text, "utf-8", len(value)
    kept = value[: MAX_DLQ_PAYLOAD_CHARS // 4 * 3]
    return base64.b64encode(kept).decode("ascii"), "base64", len(kept)
