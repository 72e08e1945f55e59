"""Fuzzing the internal topics a worker and the fact sink consume (oms.wms.events,
oms.operator, oms.aftersales): valid messages broken structurally and given issue 13's hostile
shapes (huge strings, 1 MB field names, 50,000 fields, 10,001 lines, deep nesting, huge
integers, NaN and Infinity, truncated or bit-flipped bytes), plus random JSON and bytes.
Whatever arrives, the consumer's parse yields a valid message bounded in every part or None
with one bounded, masked log line that quotes no value. Counts: OMS_FUZZ_EXAMPLES scales them
(default 1.0: 600 mutated + 200 random inputs per model), like the channels' suite.

Then fixed hostile cases, each with the error it must end in: the corpus of this suite (the
big ones are generated, as the channels' are)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from streams.channels.base import MAX_LOC_PART_CHARS
from streams.parse import parse_or_none
from tests.fuzz.internal import (
    MODELS,
    SEED_MESSAGES,
    guard_log,
    hostile_message,
    outcome,
    random_message,
)
from tests.fuzz.payloads import TALLY
from tests.fuzz.test_adapter_fuzz import SCALE
from tests.fuzz.test_adapter_fuzz import fuzz as channel_fuzz

MUTATED = max(1, round(600 * SCALE))
RANDOM = max(1, round(200 * SCALE))
NAMES = sorted(MODELS)


def fuzz(examples: int) -> settings:
    """The channels' fuzz settings; megabyte examples are not worth keeping between runs."""
    return settings(channel_fuzz(examples), database=None)


def tallied(model: str, data: bytes) -> str:
    result = outcome(model, data)
    TALLY.add("internal-fuzz", model, result)
    return result


@pytest.mark.timeout(900)  # backstop only: the suite counts examples, not seconds
@pytest.mark.parametrize("model", NAMES)
def test_hostile_messages(model: str) -> None:
    @fuzz(MUTATED)
    @given(hostile_message(model))
    def run(data: bytes) -> None:
        tallied(model, data)

    run()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", NAMES)
def test_random_json_and_bytes(model: str) -> None:
    @fuzz(RANDOM)
    @given(random_message(model))
    def run(data: bytes) -> None:
        tallied(model, data)

    run()


@pytest.mark.parametrize("model", NAMES)
def test_seeds_are_valid(model: str) -> None:
    for message in SEED_MESSAGES[model]:
        assert tallied(model, message.model_dump_json().encode()) == "valid"


# --- fixed hostile cases ------------------------------------------------------------------


def seed(model: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(SEED_MESSAGES[model][0].model_dump_json())
    data.update(changes)
    return data


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


CASES: dict[str, tuple[str, bytes, str]] = {
    # name: (model, bytes, a fragment the log line must hold)
    "wms/huge_unknown_name": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", **{"k" * 1_000_000: 1})),
        "Extra inputs",
    ),
    "wms/many_unknown_fields": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", **{f"k{i}": 1 for i in range(50_000)})),
        "50000 errors (too many to list)",
    ),
    "wms/huge_tracking_number": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", tracking_number="SF" * 500_000)),
        "tracking_number: String should have at most 128",
    ),
    "wms/huge_carrier": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", carrier="x" * 65)),
        "carrier: String should have at most 64",
    ),
    "wms/huge_detail": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", detail="王" * 2001)),
        "detail: String should have at most 2000",
    ),
    "wms/huge_order_id": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", order_id="O" * 129)),
        "order_id",
    ),
    "wms/too_many_lines": (
        "WmsEvent",
        orjson.dumps(
            seed("WmsEvent", lines=[{"line_id": "L", "sku": "S", "quantity": 1}] * 10_001)
        ),
        "lines: List should have at most 10000",
    ),
    "wms/quantity_beyond_bound": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", lines=[{"line_id": "L", "sku": "S", "quantity": 10**7}])),
        "lines.0.quantity: Input should be less than or equal to 1000000",
    ),
    "wms/quantity_as_float": (
        "WmsEvent",
        orjson.dumps(
            seed("WmsEvent", lines=[{"line_id": "L", "sku": "S", "quantity": 424242}])
        ).replace(b"424242", b"1.9999999999999999999"),  # a float that rounds to 2.0
        "lines.0.quantity: Input should be a valid integer",
    ),
    "wms/quantity_huge_int": (
        "WmsEvent",
        json.dumps(
            seed("WmsEvent", lines=[{"line_id": "L", "sku": "S", "quantity": 10**1000}])
        ).encode(),
        "lines.0.quantity",
    ),
    "wms/nan_token": (
        "WmsEvent",
        json.dumps(seed("WmsEvent", sellable=float("nan"))).encode(),
        "sellable",
    ),
    "wms/time_year_9999": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", at="9999-12-31T23:59:59Z")),
        "at: Value error, time out of range",
    ),
    "wms/deep_nesting": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", detail="__DEEP__")).replace(b'"__DEEP__"', deep(100_000)),
        "record",
    ),
    "wms/truncated": ("WmsEvent", orjson.dumps(seed("WmsEvent"))[:-7], "Invalid JSON"),
    "wms/invalid_utf8": ("WmsEvent", b'{"event_id":"\xff"}', "Invalid JSON"),
    "wms/newline_in_field_name": (
        "WmsEvent",
        orjson.dumps(seed("WmsEvent", **{"x\nERROR forged line": 1})),
        "x\\nERROR forged line",
    ),
    "operator/too_many_members": (
        "OperatorAction",
        orjson.dumps(seed("OperatorAction", members=["O1"] * 10_001)),
        "members: List should have at most 10000",
    ),
    "operator/huge_actor": (
        "OperatorAction",
        orjson.dumps(seed("OperatorAction", actor="a" * 1_000_000)),
        "actor: String should have at most 128",
    ),
    "operator/huge_reason": (
        "OperatorAction",
        orjson.dumps(seed("OperatorAction", reason="r" * 2001)),
        "reason",
    ),
    "aftersales/infinite_amount": (
        "AfterSalesRequest",
        json.dumps(seed("AfterSalesRequest", amount=float("inf"))).encode(),
        "amount",
    ),
    "aftersales/huge_amount": (
        "AfterSalesRequest",
        orjson.dumps(seed("AfterSalesRequest", amount="1e999999")),
        "money amount is implausibly large",
    ),
    "aftersales/too_many_lines": (
        "AfterSalesRequest",
        orjson.dumps(seed("AfterSalesRequest", line_ids=["L"] * 1001)),
        "line_ids: List should have at most 1000",
    ),
    "aftersales/reason_longer_than_an_event_holds": (
        "AfterSalesRequest",
        orjson.dumps(seed("AfterSalesRequest", reason="r" * 201)),
        "reason: String should have at most 200",
    ),
    "aftersales/huge_province_code": (
        "AfterSalesRequest",
        orjson.dumps(
            seed(
                "AfterSalesRequest",
                new_address={"province": "浙江省", "province_code": "ZJ" * 500_000},
            )
        ),
        "new_address.province_code: String should have at most 8",
    ),
    "aftersales/huge_unknown_name_in_address": (
        "AfterSalesRequest",
        orjson.dumps(seed("AfterSalesRequest", new_address={"k" * 1_000_000: "x"})),
        f"new_address.{'k' * MAX_LOC_PART_CHARS}...[1000000 chars]: Extra inputs",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_case(case: str) -> None:
    model, data, fragment = CASES[case]
    assert tallied(model, data) == "invalid"
    with guard_log() as log:
        parse_or_none(MODELS[model], data, "oms.case")
    assert fragment in log.getvalue(), log.getvalue()[:500]
