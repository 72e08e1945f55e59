"""The workers' side of control-topic signing (``streams/signing.py``): every batch read from
``oms.operator``, ``oms.aftersales`` and ``oms.wms.events`` is screened before the pipeline sees
it, and the worker's own control messages (the timers' operator actions) go out signed.

A message that is unsigned, badly signed, signed by a principal that may not write the topic,
or that claims an actor its principal may not, becomes a DLQ record with reason
``unauthorized_control`` (the detail says which check failed) and is never applied. A message
that passes is handed on with its actor recorded as the principal that signed it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from faust.types import EventT
from pydantic import BaseModel

from agents.intake import to_raw
from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.plan import BatchResult
from order.record import Output
from streams import topics
from streams.messages import DlqReason
from streams.normalise import to_dlq
from streams.parse import parse_or_none
from streams.signing import Keyring, Refused, Signer, claimed

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
REASON = DlqReason.UNAUTHORIZED_CONTROL


@dataclass
class Screened:
    """A batch after screening: what may be applied, and the DLQ outputs of the rest."""

    items: list[Any] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    refused: int = 0
    unparseable: int = 0

    def into(self, result: BatchResult, counter: str) -> BatchResult:
        """Add the refusals' DLQ records and counts to what the pipeline made of the rest."""
        result.outputs.extend(self.outputs)
        result.counts[counter] += self.unparseable
        if self.refused:
            result.counts["dlq"] += self.refused
            result.counts[f"dlq_{REASON.value}"] += self.refused
        return result


async def screen(
    events: Sequence[EventT],
    model: type[M],
    keyring: Keyring,
    settings: Settings,
    pipeline: OrderPipeline,
) -> Screened:
    """Verify each event's signature and claims; parse what passes (an unparseable one is
    counted, as before signing existed)."""
    out = Screened()
    dead = []
    for event in events:
        raw = to_raw(event, settings.topic_prefix)
        message = event.message
        try:
            principal = keyring.verify(message.topic, message.key, raw.value, message.headers or [])
            parsed = parse_or_none(model, raw.value, message.topic)
            if parsed is None:
                out.unparseable += 1
                continue
            out.items.append(claimed(principal, parsed))
        except Refused as exc:
            log.warning(
                "control message refused on %s[%s]@%s: %s",
                message.topic,
                message.partition,
                message.offset,
                exc.detail,
            )
            dead.append((raw, to_dlq(raw, REASON, exc.detail)))
    if dead:
        stamped = await pipeline.as_first_seen([record for _, record in dead])
        dlq_topic = topics.DLQ.name(settings.topic_prefix)
        out.outputs = [
            (dlq_topic, raw.key or raw.input_id, record.model_dump_json())
            for (raw, _), record in zip(dead, stamped, strict=True)
        ]
        out.refused = len(dead)
    return out


async def send_signed(app: faust.App, signer: Signer, outputs: Sequence[Output]) -> None:
    """Send control messages signed by ``signer`` and wait for every ack (the timers' way of
    ``agents.intake.send_all``)."""
    import asyncio

    producer = app.producer
    futures = []
    for topic, key, value in outputs:
        key_bytes, value_bytes = key.encode(), value.encode()
        headers = signer.headers(topic, key_bytes, value_bytes)
        futures.append(
            await producer.send(topic, key_bytes, value_bytes, None, None, headers or None)
        )
    if futures:
        await asyncio.gather(*futures)
