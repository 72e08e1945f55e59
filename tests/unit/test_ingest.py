"""`./oms ingest` file handling (ops/ingest.py): splitting a file into payloads and turning
payloads into Kafka records keyed by the channel order id (streams/keys.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ops.ingest import split_payloads, to_records
from streams.keys import ORDER_ID_FIELDS, channel_order_key
from streams.models import Channel
from streams.normalise import SHOP_HEADER

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
TOPIC = "oms.raw.test"


def loads_all(payloads: list[bytes]) -> list[Any]:
    return [orjson.loads(p) for p in payloads]


# --- split_payloads -----------------------------------------------------------------------


def test_single_object_is_one_payload_kept_as_is() -> None:
    content = b'\n  {"orderId": "1", "x": [1, 2]}\n\n'
    payloads, bad = split_payloads(content)
    assert bad == 0
    assert payloads == [b'{"orderId": "1", "x": [1, 2]}']


def test_pretty_printed_sample_is_one_payload() -> None:
    content = (SAMPLES / "jd.json").read_bytes()
    payloads, bad = split_payloads(content)
    assert bad == 0
    assert len(payloads) == 1
    assert orjson.loads(payloads[0]) == json.loads(content)


def test_array_gives_one_payload_per_element() -> None:
    objs = [{"orderId": "1"}, {"orderId": "2", "n": {"a": None}}, {}]
    payloads, bad = split_payloads(json.dumps(objs, indent=2).encode())
    assert bad == 0
    assert loads_all(payloads) == objs


def test_jsonl_with_a_bad_line_keeps_and_counts_it() -> None:
    content = b'{"orderId": "1"}\n{"orderId": \n\n  {"orderId": "3"}  \r\nnot json\n'
    payloads, bad = split_payloads(content)
    assert bad == 2
    assert payloads == [b'{"orderId": "1"}', b'{"orderId":', b'{"orderId": "3"}', b"not json"]


def test_jsonl_all_good() -> None:
    payloads, bad = split_payloads(b'{"a": 1}\n{"a": 2}\n{"a": 3}')
    assert bad == 0
    assert loads_all(payloads) == [{"a": 1}, {"a": 2}, {"a": 3}]


@pytest.mark.parametrize("content", [b"", b"   ", b"\n\n\r\n\t "])
def test_empty_input_has_no_payloads(content: bytes) -> None:
    assert split_payloads(content) == ([], 0)


def test_empty_array_has_no_payloads() -> None:
    assert split_payloads(b"[]") == ([], 0)


def test_garbage_is_one_bad_payload() -> None:
    assert split_payloads(b"\x00\xffnot json") == ([b"\x00\xffnot json"], 1)


# A JSON object: string keys, JSON values; no NaN/inf (not JSON), integers orjson can carry,
# no lone surrogates (not encodable as UTF-8).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)
OBJECTS = st.lists(st.dictionaries(TEXT, JSON_VALUES, max_size=4), max_size=6)


@settings(max_examples=100, deadline=None)
@given(OBJECTS)
def test_any_objects_as_jsonl_split_back(objs: list[dict[str, Any]]) -> None:
    content = b"\n".join(orjson.dumps(o) for o in objs)
    payloads, bad = split_payloads(content)
    assert bad == 0
    assert loads_all(payloads) == objs


@settings(max_examples=100, deadline=None)
@given(OBJECTS, st.booleans())
def test_any_objects_as_array_split_back(objs: list[dict[str, Any]], pretty: bool) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    payloads, bad = split_payloads(orjson.dumps(objs, option=option))
    assert bad == 0
    assert loads_all(payloads) == objs


@settings(max_examples=50, deadline=None)
@given(OBJECTS, st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
def test_jsonl_line_endings_do_not_matter(objs: list[dict[str, Any]], sep: bytes) -> None:
    content = sep.join(orjson.dumps(o) for o in objs) + sep
    payloads, bad = split_payloads(content)
    assert bad == 0
    assert loads_all(payloads) == objs


# --- keys and records ---------------------------------------------------------------------


def test_every_channel_has_key_fields() -> None:
    assert set(ORDER_ID_FIELDS) == {c.value for c in Channel}


EXPECTED_KEYS = {
    "taobao": "4012345678901234567",
    "jd": "289345671203",
    "douyin": "6921234567890123456",
    "shopify": "5678901234567",
    "amazon": "C02-6915364-2314451",
    "own": "W20240618-0001",
}


@pytest.mark.parametrize("channel", sorted(EXPECTED_KEYS))
def test_sample_payload_is_keyed_by_its_channel_order_id(channel: str) -> None:
    payloads, _ = split_payloads((SAMPLES / f"{channel}.json").read_bytes())
    [record] = to_records(TOPIC, channel, payloads)
    topic, key, value, headers = record
    assert topic == TOPIC
    assert key == EXPECTED_KEYS[channel].encode()
    assert value == payloads[0]
    assert headers == []


@pytest.mark.parametrize(
    ("channel", "payload", "key"),
    [
        ("taobao", {"tid_str": "123", "tid": 999}, "123"),
        ("taobao", {"tid": 4012345678901234567}, "4012345678901234567"),
        ("jd", {"orderId": 289345671203}, "289345671203"),
        ("douyin", {"p_id": "77"}, "77"),
        ("douyin", {"order_id": "", "p_id": "77"}, "77"),
        ("shopify", {"id": 5678901234567, "admin_graphql_api_id": "gid://x/1"}, "5678901234567"),
        ("shopify", {"admin_graphql_api_id": "gid://shopify/Order/1"}, "gid://shopify/Order/1"),
        ("amazon", {"AmazonOrderId": "C02-1"}, "C02-1"),
        ("own", {"external_id": "W1"}, "W1"),
        ("own", {"order_id": "O1"}, ""),
        ("jd", {"orderId": True}, ""),
        ("jd", {"orderId": None}, ""),
        ("jd", {"orderId": ["1"]}, ""),
        ("wish", {"orderId": "1", "id": "2"}, ""),
        ("jd", ["orderId"], ""),
    ],
)
def test_channel_order_key(channel: str, payload: Any, key: str) -> None:
    assert channel_order_key(channel, payload) == key


def test_records_carry_the_shop_header_and_tolerate_bad_lines() -> None:
    payloads = [b'{"orderId": "A1"}', b"not json", b'{"no": "id"}', b'"just a string"']
    records = to_records(TOPIC, "jd", payloads, shop="10086")
    assert [r[1] for r in records] == [b"A1", None, None, None]
    assert [r[2] for r in records] == payloads
    assert all(r[0] == TOPIC for r in records)
    assert all(r[3] == [(SHOP_HEADER, b"10086")] for r in records)


def test_no_shop_no_header() -> None:
    [record] = to_records(TOPIC, "jd", [b'{"orderId": "A1"}'])
    assert record[3] == []


def test_non_ascii_keys_and_shops_are_utf8() -> None:
    [record] = to_records(TOPIC, "own", ['{"external_id": "单号1"}'.encode()], shop="旗舰店")
    assert record[1] == "单号1".encode()
    assert record[3] == [(SHOP_HEADER, "旗舰店".encode())]
