"""Which DLQ records `./oms dlq replay` sends: the filters, once each unless --again, and never a
record whose payload was truncated (its first megabyte is not the input)."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.normalise import MAX_DLQ_PAYLOAD_CHARS, RawInput, to_dlq
from ops.views import REPLAY_HEADER, replay_records, select_replay
from streams.messages import DlqReason, DlqRecord


def record(channel: str, reason: DlqReason, value: bytes, offset: int) -> DlqRecord:
    raw = RawInput(channel, value, f"oms.raw.{channel}", 0, offset, f"k{offset}")
    return to_dlq(raw, reason, "detail")


def test_a_truncated_payload_is_marked_and_never_replayed() -> None:
    big = b"{" + b"x" * (MAX_DLQ_PAYLOAD_CHARS + 10)
    truncated = record("jd", DlqReason.PAYLOAD_TOO_LARGE, big, 1)
    whole = record("jd", DlqReason.MALFORMED_JSON, b"{not json", 2)
    assert truncated.payload_truncated and not whole.payload_truncated

    todo, result = select_replay([truncated, whole], set())
    assert todo == [whole]
    assert (result.selected, result.sent, result.skipped_truncated) == (2, 1, 1)
    assert result.skipped_already_replayed == 0
    assert replay_records(todo) == [
        ("oms.raw.jd", b"k2", b"{not json", [(REPLAY_HEADER, whole.dlq_id.encode())])
    ]


def test_filters_and_records_replayed_before() -> None:
    a = record("jd", DlqReason.MALFORMED_JSON, b"{", 1)
    b = record("tmall", DlqReason.MALFORMED_JSON, b"[", 2)
    c = record("jd", DlqReason.MISSING_FIELD, b"{}", 3)
    todo, result = select_replay([a, b, c], {a.dlq_id}, reason="malformed_json")
    assert todo == [b]
    assert (result.selected, result.sent, result.skipped_already_replayed) == (2, 1, 1)
    todo, result = select_replay([a, b, c], set(), channel="jd")
    assert todo == [a, c] and result.skipped_truncated == 0


def test_records_written_before_the_flag_existed_read_as_whole() -> None:
    old = {
        "dlq_id": "D1",
        "reason": "malformed_json",
        "detail": "x",
        "source_topic": "oms.raw.jd",
        "payload": "{",
        "received_at": datetime.now(UTC).isoformat(),
    }
    assert DlqRecord.model_validate(old).payload_truncated is False
