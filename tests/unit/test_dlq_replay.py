"""Which DLQ records `./oms dlq replay` sends: the filters, once each unless --again, and never a
record whose payload was truncated (its first megabyte is not the input)."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.messages import DlqReason, DlqRecord
from streams.normalise import (
    MAX_DLQ_PAYLOAD_CHARS,
    REPLAY_INPUT_HEADER,
    REPLAY_OF_HEADER,
    RawInput,
    to_dlq,
)
from web.views import replay_records, select_replay


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
        (
            "oms.raw.jd",
            b"k2",
            b"{not json",
            [(REPLAY_OF_HEADER, whole.dlq_id.encode()), (REPLAY_INPUT_HEADER, b"oms.raw.jd:0:2")],
        )
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


def test_a_replay_is_the_input_it_replays() -> None:
    """Issue 13 item 9: a replayed input lands at a new offset; it must keep the identity of
    the input the DLQ record was made from, so an input applied before its outputs were lost
    is a redelivery (outputs re-sent), not a duplicate (nothing sent)."""
    original = RawInput("jd", b"{}", "oms.raw.jd", 3, 41, "k")
    ((topic, key, value, headers),) = replay_records(
        [to_dlq(original, DlqReason.MISSING_FIELD, "")]
    )
    replay = RawInput(
        "jd",
        value,
        topic,
        0,
        9000,
        key.decode() if key else "",
        {k: v.decode() for k, v in headers},
    )
    assert replay.input_id == original.input_id == "oms.raw.jd:3:41"
    # Still bad: the same DLQ record again, naming the input it replays (not the replay's
    # own position), so replaying it once more replays the same input.
    again = to_dlq(replay, DlqReason.MISSING_FIELD, "")
    assert again.dlq_id == to_dlq(original, DlqReason.MISSING_FIELD, "").dlq_id
    assert (again.partition, again.offset) == (3, 41)
    # A header naming another topic, or malformed, is ignored: the message is new.
    for bogus in ("oms.raw.tmall:3:41", "oms.raw.jd:x:41", "oms.raw.jd:3", "x" * 400):
        other = RawInput("jd", b"{}", "oms.raw.jd", 0, 7, "", {REPLAY_INPUT_HEADER: bogus})
        assert other.input_id == "oms.raw.jd:0:7"


def test_only_raw_topics_are_replayed() -> None:
    """A DLQ record naming another topic (forged, or a control input: those are signed by
    their producer, who re-sends them) is counted and left out."""
    raw = record("jd", DlqReason.MALFORMED_JSON, b"{", 1)
    forged = raw.model_copy(update={"dlq_id": "Dforged", "source_topic": "oms.fulfilment.commands"})
    todo, result = select_replay([raw, forged], set(), raw_topics={"oms.raw.jd"})
    assert todo == [raw]
    assert (result.selected, result.sent, result.skipped_not_raw) == (2, 1, 1)
