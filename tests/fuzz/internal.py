"""Bad input for the internal topics (oms.wms.events, oms.operator, oms.aftersales), shared by
the fuzz suite and its fixed hostile cases: valid seed messages, strategies that break them
(the channel suite's structural mutations and wire encodings, plus the hostile shapes of
issue 13: huge strings, 1 MB field names, tens of thousands of fields or lines, deep nesting,
huge integers, NaN and Infinity tokens, truncation), and the invariants every outcome keeps.

What a consumer does with such a record is ``streams.parse.parse_or_none`` (the worker agents
and the fact sink both): a valid, bounded message, or None and one error line. So the check
runs exactly that, with the worker's masking log handler attached, and asserts the message is
bounded, or the log line is, whatever arrived."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import strategies as st
from pydantic import BaseModel

from core.logs import make_handler
from core.privacy import MAX_MASKED_CHARS
from streams.messages import (
    MAX_COMMAND_LINES,
    MAX_MEMBERS,
    MAX_WEIGHT_G,
    AfterSalesKind,
    AfterSalesRequest,
    CommandLine,
    OperatorAction,
    OperatorActionKind,
    WmsEvent,
    WmsEventKind,
)
from streams.models import MAX_TEXT_CHARS, Address
from streams.parse import parse_or_none
from tests.fuzz.payloads import Seed, encode, mutate, nasty, random_json

AT = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
NAME, PHONE, STREET = "王小明", "13912345678", "科苑路 88 号"
# Personal data in the seeds: no log line about a bad record may quote any of it.
PII = [NAME, PHONE, STREET]
LINES = [
    CommandLine(line_id="L1", sku="SKU-A", quantity=2),
    CommandLine(line_id="L2", sku="GIFT-1", quantity=1, order_id="O2", is_gift=True),
]

SEED_MESSAGES: dict[str, list[BaseModel]] = {
    "WmsEvent": [
        WmsEvent(
            event_id="W1",
            command_id="C1",
            order_id="O1",
            kind=WmsEventKind.SHIPPED,
            warehouse="WH-HZ",
            carrier="SF",
            tracking_number="SF1234567890123",
            lines=LINES,
            detail=f"handed to {NAME}, {PHONE}",
            at=AT,
        ),
        WmsEvent(
            event_id="W2",
            command_id="C2",
            order_id="O1",
            kind=WmsEventKind.RETURN_RECEIVED,
            warehouse="WH-HZ",
            lines=LINES[:1],
            sellable=False,
            at=AT,
        ),
    ],
    "OperatorAction": [
        OperatorAction(
            action_id="A1",
            order_id="O1",
            kind=OperatorActionKind.RELEASE_MERGED,
            actor="system:merge-timer",
            reason="merge window closed",
            at=AT,
            members=["O1", "O2", "O3"],
        ),
        OperatorAction(
            action_id="A2",
            order_id="O1",
            kind=OperatorActionKind.CANCEL,
            actor="ops:lin",
            reason=f"buyer {NAME} called from {PHONE}",
            at=AT,
        ),
    ],
    "AfterSalesRequest": [
        AfterSalesRequest(
            request_id="R1",
            order_id="O1",
            kind=AfterSalesKind.ADDRESS_CHANGE,
            new_address=Address(
                province="浙江省",
                province_code="ZJ",
                city="杭州市",
                district="西湖区",
                street=STREET,
                postcode="310012",
                name=NAME,
                phone=PHONE,
            ),
            requested_by="cs:wang",
            at=AT,
        ),
        AfterSalesRequest(
            request_id="R2",
            order_id="O1",
            kind=AfterSalesKind.REFUND,
            line_ids=["L1", "L2"],
            amount=Decimal("12.50"),
            exchange_sku="SKU-B",
            reason="broken",
            at=AT,
        ),
    ],
}
MODELS: dict[str, type[BaseModel]] = {
    "WmsEvent": WmsEvent,
    "OperatorAction": OperatorAction,
    "AfterSalesRequest": AfterSalesRequest,
}
SEEDS = {
    name: [Seed.of(orjson.loads(m.model_dump_json())) for m in messages]
    for name, messages in SEED_MESSAGES.items()
}

# --- hostile shapes ------------------------------------------------------------------------

SIZES = [129, 201, 2001, 70_000, 1_000_000]
huge_text = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["k", "中", "😀", "@", "1-", "\u0000", "\\", '"', "a."]),
    st.sampled_from(SIZES),
)


DEEP = "__DEEP__"  # replaced by nested brackets once encoded: too deep for any JSON encoder
DEPTHS = [100, 1000, 100_000]


@st.composite
def hostile_step(draw: st.DrawFn, root: dict[str, Any], fields: list[str]) -> Any:
    """One of issue 13's shapes, put into ``root``: returns the root (or a new top level)."""
    how = draw(
        st.sampled_from(
            [
                "huge_name",
                "many_fields",
                "huge_value",
                "many_items",
                "deep",
                "huge_int",
                "nan",
                "float_qty",
                "wrong_top",
            ]
        )
    )
    if how == "huge_name":
        root[draw(huge_text)] = draw(nasty)
    elif how == "many_fields":
        root.update({f"k{i}": i for i in range(draw(st.sampled_from([101, 5000, 50_000])))})
    elif how == "huge_value":
        root[draw(st.sampled_from(fields))] = draw(huge_text)
    elif how == "many_items":
        n = draw(st.sampled_from([MAX_COMMAND_LINES + 1, MAX_MEMBERS + 1, 1001]))
        item = draw(st.sampled_from([{"line_id": "L", "sku": "S", "quantity": 1}, "O1", 1]))
        root[draw(st.sampled_from(["lines", "members", "line_ids"]))] = [item] * n
    elif how == "deep":
        root[draw(st.sampled_from(fields))] = DEEP
    elif how == "huge_int":
        root[draw(st.sampled_from(fields))] = draw(
            st.sampled_from([10**20, -(10**20), 10**1000, MAX_WEIGHT_G + 1, 2**63])
        )
    elif how == "nan":  # written as NaN / Infinity tokens by Python's json
        root[draw(st.sampled_from(fields))] = draw(
            st.sampled_from([float("nan"), float("inf"), float("-inf")])
        )
    elif how == "float_qty":
        lines = root.get("lines")
        if isinstance(lines, list) and lines and isinstance(lines[0], dict):
            lines[0]["quantity"] = draw(st.sampled_from([1.5, 2.0, 1.9999999999999999999, "2"]))
    else:
        return draw(st.sampled_from([[root], "x", None, 7]))
    return root


def _json(value: Any) -> bytes:
    """Python's json: big integers as digits, NaN and Infinity as tokens."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def hostile_message(draw: st.DrawFn, model: str) -> bytes:
    """A seed message broken in 1-3 places, often also given one hostile shape, then
    encoded (well-formed mostly; truncated, bit-flipped, bad utf-8 sometimes)."""
    seed = draw(st.sampled_from(SEEDS[model]))
    root = draw(mutate(seed, draw(st.integers(min_value=0, max_value=3))))
    if isinstance(root, dict) and draw(st.booleans()):
        fields = sorted(str(k) for k in orjson.loads(seed.data))
        root = draw(hostile_step(root, fields))
    data = _json(root) if draw(st.integers(0, 4)) == 0 else draw(encode(root))
    depth = draw(st.sampled_from(DEPTHS))
    return data.replace(f'"{DEEP}"'.encode(), b"[" * depth + b"]" * depth)


def random_message(model: str) -> st.SearchStrategy[bytes]:
    """Random JSON keyed with the model's own field names half the time, and random bytes."""
    fields = sorted({str(k) for seed in SEEDS[model] for k in orjson.loads(seed.data)})
    keyed = st.dictionaries(st.sampled_from(fields), nasty, max_size=12)
    return st.one_of(
        st.builds(orjson.dumps, st.one_of(keyed, random_json)),
        st.binary(max_size=300),
    )


# --- the invariants ------------------------------------------------------------------------

MAX_LOG_LINE = 4000  # the guard's line: the first errors, each path part and message clipped


@contextmanager
def guard_log() -> Iterator[io.StringIO]:
    """The guard's log through the handler every worker has (masking filter included)."""
    buffer = io.StringIO()
    handler = make_handler("text", "fuzz", stream=buffer)
    logger = logging.getLogger("streams.parse")
    saved = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.ERROR
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


def strings_and_lists(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, str):
        yield "str", node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield "str", key
            yield from strings_and_lists(value)
    elif isinstance(node, list):
        yield "list", node
        for value in node:
            yield from strings_and_lists(value)
    elif isinstance(node, int) and not isinstance(node, bool):
        yield "int", node


def check_message(message: BaseModel, model: type[BaseModel]) -> None:
    """An accepted message is bounded in every part and crosses a topic unchanged."""
    dumped = message.model_dump(mode="json")
    for kind, value in strings_and_lists(dumped):
        if kind == "str":
            assert len(value) <= MAX_TEXT_CHARS, len(value)
        elif kind == "list":
            assert len(value) <= MAX_MEMBERS, len(value)
        else:
            assert abs(value) <= MAX_WEIGHT_G, value
    assert model.model_validate_json(message.model_dump_json()) == message


def check_log(line: str, data: bytes) -> None:
    """A refusal is one bounded line that quotes no value of the record."""
    assert line.count("\n") <= 1, line[:200]
    assert "unparseable record on" in line
    assert len(line) <= MAX_LOG_LINE, len(line)
    assert len(line) <= MAX_MASKED_CHARS
    for secret in PII:
        if secret.encode() in data:
            assert secret not in line, secret


def outcome(model_name: str, data: bytes) -> str:
    """``parse_or_none`` on one input, every invariant checked: 'valid' or 'invalid'."""
    model = MODELS[model_name]
    with guard_log() as log:
        parsed = parse_or_none(model, data, f"fuzz.{model_name}")
    if parsed is not None:
        assert log.getvalue() == ""
        check_message(parsed, model)
        return "valid"
    check_log(log.getvalue(), data)
    return "invalid"
