"""Fuzzing every adapter: each channel's real sample payload broken structurally (keys dropped
at any depth, values of other JSON types, numbers at the edges, NaN and infinities, times far
off, very long, unicode and injection strings, duplicated lines, broken bytes), plus random
JSON and random bytes. Whatever arrives, ``adapt`` returns an order that keeps every canonical
invariant or raises AdapterError with a specific reason, and ``normalise`` agrees (an order, or a
DLQ record that keeps the payload and fits a Kafka message). Counts: OMS_FUZZ_EXAMPLES scales
them (default 1.0: 2,000 mutated + 500 random inputs per channel)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.payloads import CHANNELS, mutated_payload, outcome, random_payload

SCALE = float(os.environ.get("OMS_FUZZ_EXAMPLES", "1.0"))
MUTATED = max(1, round(2000 * SCALE))
RANDOM = max(1, round(500 * SCALE))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


@pytest.mark.parametrize("channel", CHANNELS)
def test_mutated_samples(channel: str) -> None:
    @fuzz(MUTATED)
    @given(mutated_payload(channel), st.sampled_from(["", "", "", "acme.example", " shop\n"]))
    def run(data: bytes, shop: str) -> None:
        outcome(channel, data, shop)

    run()


@pytest.mark.parametrize("channel", CHANNELS)
def test_random_json_and_bytes(channel: str) -> None:
    @fuzz(RANDOM)
    @given(random_payload(channel))
    def run(data: bytes) -> None:
        outcome(channel, data)

    run()
