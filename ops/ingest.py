"""`./oms ingest`: a file of raw payloads onto ``oms.raw.<channel>``, one message per order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from core.kafka import Record, produce
from core.settings import Settings
from streams import topics
from streams.keys import channel_order_key
from streams.normalise import SHOP_HEADER


class IngestError(ValueError):
    pass


@dataclass(frozen=True)
class IngestResult:
    topic: str
    sent: int
    unparseable: int

    def to_dict(self) -> dict[str, object]:
        return {"topic": self.topic, "sent": self.sent, "unparseable": self.unparseable}


def split_payloads(content: bytes) -> tuple[list[bytes], int]:
    """A JSON object, a JSON array of objects, or JSONL -> one byte string per payload.

    Lines that are not JSON are kept as they are (the workers DLQ them with a reason) and
    counted, so the operator sees at once that some input was bad.
    """
    stripped = content.removeprefix(b"\xef\xbb\xbf").strip()  # editors add a UTF-8 BOM
    if not stripped:
        return [], 0
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        whole = None
    else:
        if isinstance(whole, list):
            return [orjson.dumps(item) for item in whole], 0
        return [stripped], 0
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    bad = 0
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
    return lines, bad


def to_records(topic: str, channel: str, payloads: list[bytes], shop: str = "") -> list[Record]:
    headers = [(SHOP_HEADER, shop.encode())] if shop else []
    records: list[Record] = []
    for payload in payloads:
        try:
            key = channel_order_key(channel, orjson.loads(payload))
        except orjson.JSONDecodeError:
            key = ""
        records.append((topic, key.encode() or None, payload, headers))
    return records


async def ingest_file(
    settings: Settings, channel: str, path: Path, *, shop: str = ""
) -> IngestResult:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}") from exc
    payloads, bad = split_payloads(content)
    if not payloads:
        raise IngestError(f"{path} holds no payloads")
    topic = topics.raw_topic(channel).name(settings.topic_prefix)
    sent = await produce(settings, to_records(topic, channel, payloads, shop))
    return IngestResult(topic, sent, bad)
