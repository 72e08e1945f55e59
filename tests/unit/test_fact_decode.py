"""The sink's compiled decoders of the hot facts (analytics/fact_decode.py): they read what the
workers write exactly as the pydantic messages do, and refuse what would wedge an insert."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.fact_decode import (
    CommandFact,
    DlqFact,
    EventFact,
    as_fact,
    decode_or_none,
    decoder_for,
)
from streams.messages import DlqRecord, EventKind, FulfilmentCommand, OrderEvent, OrderState
from tests.unit.test_facts import a_command, a_dlq, an_event, an_order


def same_fields(fact: Any, message: Any) -> None:
    """Every field the struct declares holds what the message holds (nested structs too)."""
    for name in fact.__struct_fields__:
        got, want = getattr(fact, name), getattr(message, name)
        if hasattr(got, "__struct_fields__"):
            same_fields(got, want)
        elif isinstance(got, list) and got and hasattr(got[0], "__struct_fields__"):
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                same_fields(g, w)
        else:
            assert got == want, name


def test_an_event_with_its_order_snapshot_reads_as_the_message() -> None:
    event = an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=an_order())
    fact = as_fact(event)
    assert isinstance(fact, EventFact) and fact.order is not None
    same_fields(fact, event)
    assert fact.order.lines[1].paid_amount == Decimal("20.0000")


def test_a_command_and_a_dlq_record_read_as_the_messages() -> None:
    command, dlq = a_command(), a_dlq()
    assert isinstance(as_fact(command), CommandFact)
    assert isinstance(as_fact(dlq), DlqFact)
    same_fields(as_fact(command), command)
    same_fields(as_fact(dlq), dlq)


def event_json(**changes: Any) -> bytes:
    data = orjson.loads(
        an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=an_order()).model_dump_json()
    )
    for path, value in changes.items():
        node = data
        *parents, last = path.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return orjson.dumps(data)


@pytest.mark.parametrize(
    "changes",
    [
        {"order__total": "-1.00"},  # negative money
        {"order__total": "1e20"},  # beyond any Decimal column
        {"order__lines__0__unit_price": "1.000001"},  # more places than money has
        {"order__lines__0__quantity": 0},
        {"order__lines__0__quantity": "1"},  # integers are strict
        {"order__payment__paid_total": "NaN"},
        {"seq": -1},
        {"event_id": ""},
        {"event_id": "x" * 129},
        {"kind": "teleported"},
        {"at": "yesterday"},
        {"channel": "myspace"},
    ],
)
def test_what_the_message_refuses_the_decoder_refuses(
    changes: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    value = event_json(**changes)
    with pytest.raises(ValueError):
        OrderEvent.model_validate_json(value)
    decoder = decoder_for(OrderEvent)
    assert decoder is not None
    with caplog.at_level(logging.ERROR):
        assert decode_or_none(decoder, value, "oms.order-events") is None
    assert "unparseable record on oms.order-events" in caplog.text


def test_a_huge_field_is_refused_without_echoing_it(caplog: pytest.LogCaptureFixture) -> None:
    value = event_json(reason="\N{SNOWMAN}" * 500_000)
    decoder = decoder_for(OrderEvent)
    assert decoder is not None
    with caplog.at_level(logging.ERROR):
        assert decode_or_none(decoder, value, "t") is None
    assert "\N{SNOWMAN}" not in caplog.text and len(caplog.text) < 1000


def test_fields_the_rows_do_not_need_are_skipped_not_checked() -> None:
    """The payload of a DLQ record, the snapshot's raw channel fields: never built."""
    data = orjson.loads(a_dlq().model_dump_json())
    data["payload"] = "p" * 100_000
    decoder = decoder_for(DlqRecord)
    assert decoder is not None
    fact = decode_or_none(decoder, orjson.dumps(data), "oms.dlq")
    assert isinstance(fact, DlqFact) and not hasattr(fact, "payload")


def test_only_the_hot_facts_have_decoders() -> None:
    from streams.messages import AfterSalesRequest, WmsEvent

    assert decoder_for(FulfilmentCommand) is not None
    assert decoder_for(WmsEvent) is None and decoder_for(AfterSalesRequest) is None


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_give_none(value: bytes) -> None:
    decoder = decoder_for(OrderEvent)
    assert decoder is not None
    fact = decode_or_none(decoder, value, "t")
    assert fact is None or isinstance(fact, EventFact)
