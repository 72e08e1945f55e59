"""Fuzzing the platform after-sale parsers: each channel's native after-sale samples
(samples/payloads/aftersales/) broken structurally and on the wire, as the order fuzz does
with orders (tests/fuzz/payloads.py). Whatever arrives, ``normalise`` returns a request that
keeps every invariant (its order id is one the channel can make, its lines and amounts
bounded), a ClosedAtChannel, an order, or a DLQ record with a specific reason that quotes no
personal data; it never raises. OMS_FUZZ_EXAMPLES scales the count (default 1.0: 1,000 per
channel)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.channels.aftersale import ClosedAtChannel
from streams.channels.base import AdapterContext
from streams.messages import AfterSalesRequest, DlqReason, DlqRecord
from streams.models import Order
from streams.normalise import SHOP_HEADER, RawInput, normalise
from tests.fuzz.payloads import CATCH_ALL, TALLY, Seed, encode, mutate

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads" / "aftersales"
CHANNELS = ["taobao", "jd", "douyin", "shopify", "amazon"]
EXAMPLES = max(1, round(1000 * float(os.environ.get("OMS_FUZZ_EXAMPLES", "1.0"))))
# Personal data in the after-sale samples: never quoted by a DLQ detail.
PII = ["王**", "139****5678", "t**3", "jd_4f9c2a", "customer changed mind"]


def seeds(channel: str) -> list[Seed]:
    payloads: list[Any] = json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))
    return [Seed.of(p) for p in payloads]


SEEDS = {c: seeds(c) for c in CHANNELS}


@st.composite
def broken(draw: st.DrawFn, channel: str) -> bytes:
    seed = draw(st.sampled_from(SEEDS[channel]))
    return draw(encode(draw(mutate(seed, draw(st.integers(min_value=1, max_value=4))))))


def check(channel: str, data: bytes, shop: str) -> None:
    headers = {SHOP_HEADER: shop} if shop else {}
    raw = RawInput(channel, data, f"oms.raw.{channel}", 0, 7, "key", headers)
    out = normalise(raw, AdapterContext())
    if isinstance(out, AfterSalesRequest):
        assert out.order_id.startswith("O") and out.requested_by == "channel"
        assert len(out.line_ids) <= 500 and len(out.channel_skus) <= 500
        assert out.amount is None or out.amount > 0
        assert out.at.tzinfo is not None
        AfterSalesRequest.model_validate_json(out.model_dump_json())  # what the topic would take
        TALLY.add("aftersale-fuzz", channel, f"request_{out.kind.value}")
    elif isinstance(out, ClosedAtChannel):
        assert out.order_id.startswith("O") and len(out.request_id) <= 128
        TALLY.add("aftersale-fuzz", channel, "closed_at_channel")
    elif isinstance(out, DlqRecord):
        assert out.reason is not DlqReason.PROCESSING_ERROR
        assert not CATCH_ALL.match(out.detail), out.detail
        assert not any(p in out.detail for p in PII), out.detail
        TALLY.add("aftersale-fuzz", channel, out.reason.value)
    else:
        assert isinstance(out, Order)  # a mutation that removed every after-sale marker
        TALLY.add("aftersale-fuzz", channel, "order")


@pytest.mark.parametrize("channel", CHANNELS)
def test_mutated_after_sales(channel: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(broken(channel), st.sampled_from(["", "", "acme.example", " shop\n"]))
    def run(data: bytes, shop: str) -> None:
        check(channel, data, shop)

    run()


# The after-sale corpus (corpus/aftersales/): each case and the DLQ record it must become.
CORPUS: dict[str, tuple[str, DlqReason, str]] = {
    "douyin_operator_in_line.json": ("douyin", DlqReason.INVALID_FIELD, "s_id: not an id"),
    "taobao_nan_refund_fee.json": ("taobao", DlqReason.INVALID_FIELD, "refund_fee"),
    "shopify_huge_exponent.json": ("shopify", DlqReason.INVALID_FIELD, "transactions[0].amount"),
    "amazon_far_future.json": ("amazon", DlqReason.INVALID_FIELD, "PostedDate"),
    "jd_long_ware_id.json": ("jd", DlqReason.INVALID_FIELD, "wareId: not an id"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_case_is_its_dlq_record(name: str) -> None:
    channel, reason, detail = CORPUS[name]
    data = (Path(__file__).resolve().parent / "corpus" / "aftersales" / name).read_bytes()
    out = normalise(RawInput(channel, data, f"oms.raw.{channel}", 0, 1), AdapterContext())
    assert isinstance(out, DlqRecord), out
    assert out.reason is reason and detail in out.detail, out.detail
