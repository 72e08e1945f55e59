"""Stage 1 (streams/normalise.py): raw bytes -> Order, or a DLQ record with a reason; never a
crash, and the same input always gets the same DLQ id."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.channels.base import AdapterContext
from streams.messages import DlqReason, DlqRecord
from streams.models import Order, make_order_id
from streams.normalise import SHOP_HEADER, RawInput, normalise, to_dlq

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
CTX = AdapterContext()


def raw(
    channel: str,
    value: bytes,
    offset: int = 7,
    *,
    key: str = "",
    headers: dict[str, str] | None = None,
) -> RawInput:
    return RawInput(channel, value, f"oms.raw.{channel}", 2, offset, key, headers or {})


def dlq(raw_input: RawInput) -> DlqRecord:
    out = normalise(raw_input, CTX)
    assert isinstance(out, DlqRecord), out
    return out


# --- orders -------------------------------------------------------------------------------


def test_jd_sample_becomes_an_order() -> None:
    out = normalise(raw("jd", (SAMPLES / "jd.json").read_bytes()), CTX)
    assert isinstance(out, Order)
    assert out.external_id == "289345671203"
    assert out.shop_id == "10086123"
    assert out.order_id == make_order_id("jd", "10086123", "289345671203") == "O3C9DB71218629037"
    assert out.address.province_code == "GD"


@pytest.mark.parametrize("channel", ["taobao", "jd", "douyin", "shopify", "amazon", "own"])
def test_every_sample_becomes_an_order(channel: str) -> None:
    out = normalise(raw(channel, (SAMPLES / f"{channel}.json").read_bytes()), CTX)
    assert isinstance(out, Order)
    assert out.channel.value == channel


def test_shop_header_names_the_shop_when_the_payload_does_not() -> None:
    value = (SAMPLES / "shopify.json").read_bytes()
    plain = normalise(raw("shopify", value), CTX)
    headed = normalise(raw("shopify", value, headers={SHOP_HEADER: "acme.myshopify.com"}), CTX)
    assert isinstance(plain, Order) and isinstance(headed, Order)
    assert plain.shop_id == "shopify-default"
    assert headed.shop_id == "acme.myshopify.com"
    assert headed.order_id == make_order_id("shopify", "acme.myshopify.com", plain.external_id)
    assert headed.order_id != plain.order_id


def test_input_id_identifies_the_delivery() -> None:
    assert raw("jd", b"{}", offset=9).input_id == "oms.raw.jd:2:9"


# --- DLQ ----------------------------------------------------------------------------------


def test_malformed_json() -> None:
    value = (SAMPLES / "bad" / "malformed.json").read_bytes()
    record = dlq(raw("taobao", value, key="k1"))
    assert record.reason is DlqReason.MALFORMED_JSON
    assert record.payload == value.decode("utf-8")
    assert record.payload_encoding == "utf-8"
    assert (record.source_topic, record.partition, record.offset) == ("oms.raw.taobao", 2, 7)
    assert (record.channel, record.key) == ("taobao", "k1")
    assert record.received_at.tzinfo is not None


@pytest.mark.parametrize("value", [b"{", b"", b"{'a': 1}", b'{"a": 1} trailing'])
def test_more_malformed_json(value: bytes) -> None:
    assert dlq(raw("jd", value)).reason is DlqReason.MALFORMED_JSON


def test_not_an_object() -> None:
    assert dlq(raw("jd", b"[1, 2]")).reason is DlqReason.NOT_AN_OBJECT


def test_invalid_utf8_payload_is_base64() -> None:
    value = b'{"orderId": "1", "x": "\xff\xfe"}'
    record = dlq(raw("jd", value))
    assert record.reason is DlqReason.INVALID_UTF8
    assert record.payload_encoding == "base64"
    assert base64.b64decode(record.payload) == value


def test_unknown_channel() -> None:
    value = (SAMPLES / "jd.json").read_bytes()
    record = dlq(raw("wish", value))
    assert record.reason is DlqReason.UNKNOWN_CHANNEL
    assert record.channel == "wish"
    assert "wish" in record.detail
    assert record.payload == value.decode("utf-8")


def test_unknown_channel_wins_over_a_malformed_body() -> None:
    assert dlq(raw("wish", b"{nope")).reason is DlqReason.UNKNOWN_CHANNEL


@pytest.mark.parametrize(
    ("name", "channel", "reason"),
    [
        ("missing_field.json", "taobao", DlqReason.MISSING_FIELD),
        ("negative_quantity.json", "jd", DlqReason.INVALID_FIELD),
    ],
)
def test_bad_samples(name: str, channel: str, reason: DlqReason) -> None:
    assert dlq(raw(channel, (SAMPLES / "bad" / name).read_bytes())).reason is reason


def test_dlq_id_is_deterministic_per_input() -> None:
    value = b"{broken"
    first, again = dlq(raw("jd", value)), dlq(raw("jd", value))
    assert first.dlq_id == again.dlq_id
    assert first.dlq_id.startswith("D")
    others = {
        dlq(raw("jd", value, offset=8)).dlq_id,  # another offset
        dlq(RawInput("jd", value, "oms.raw.jd", 3, 7)).dlq_id,  # another partition
        dlq(raw("jd", b"[1]")).dlq_id,  # another reason
        dlq(raw("jd", b"{broken!")).dlq_id,  # another payload
    }
    assert first.dlq_id not in others
    assert len(others) == 4


def test_to_dlq_truncates_detail() -> None:
    record = to_dlq(raw("jd", b"x"), DlqReason.PROCESSING_ERROR, "d" * 5000)
    assert len(record.detail) == 4000
    assert record.received_at <= datetime.now(UTC)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["taobao", "jd", "douyin", "shopify", "amazon", "own", "wish"]),
    st.binary(max_size=200),
)
def test_any_bytes_become_an_order_or_a_dlq_record(channel: str, value: bytes) -> None:
    out = normalise(raw(channel, value), CTX)
    assert isinstance(out, Order | DlqRecord)
    if isinstance(out, DlqRecord):
        payload = (
            base64.b64decode(out.payload)
            if out.payload_encoding == "base64"
            else out.payload.encode("utf-8")
        )
        assert payload == value  # kept whole, so it can be fixed and replayed
        assert out.dlq_id == dlq(raw(channel, value)).dlq_id
