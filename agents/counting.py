"""What a worker counts of the messages it emits: order events by kind, fulfilment commands by
kind (core/metrics.py renders the counters for Prometheus)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from streams.messages import FulfilmentCommand, OrderEvent

KIND_PATTERN: Final = re.compile(rb'"kind":"([a-z_]{1,40})"')
KIND_SCAN_CHARS: Final = 400  # the kind is among an event's or a command's first fields


def message_kind(value: str | bytes) -> str:
    """The ``kind`` of an order event or fulfilment command as serialised by pydantic (no
    spaces, fields in declaration order), found without parsing the whole message."""
    head = value[:KIND_SCAN_CHARS]
    raw = head.encode() if isinstance(head, str) else head
    found = KIND_PATTERN.search(raw)
    return found.group(1).decode() if found else "unknown"


def count_kinds(messages: Iterable[Any], counts: Any) -> None:
    """Tally a batch's new order events (``event_<kind>``) and fulfilment commands
    (``command_<kind>``) into ``counts`` (the batch's Counter, which the agents add to the
    heartbeat): the audit, reserve, route and fulfil stages are visible only in what they emit.
    The pipeline calls it where it has the messages, so nothing is parsed back."""
    for message in messages:
        if isinstance(message, OrderEvent):
            counts[f"event_{message.kind.value}"] += 1
        elif isinstance(message, FulfilmentCommand):
            counts[f"command_{message.kind.value}"] += 1


def count_outputs(
    outputs: Iterable[tuple[str, Any, Any]],
    counts: Any,
    *,
    events_topic: str,
    commands_topic: str,
) -> None:
    """:func:`count_kinds` for outputs already serialised: what a redelivered input re-emits
    from the outbox (the only place the kind is read back from JSON)."""
    for topic, _key, value in outputs:
        if topic == events_topic:
            counts[f"event_{message_kind(value)}"] += 1
        elif topic == commands_topic:
            counts[f"command_{message_kind(value)}"] += 1
