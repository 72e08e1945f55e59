"""The schema check (ops/conformance.py) against the published schemas, without a broker."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from ops.conformance import check_topic, problems, validator_for
from streams.envelope import pack_events
from streams.messages import EventKind, OrderState
from streams.schema_export import topic_models
from tests.unit.test_facts import a_command, a_dlq, an_event, an_order


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes


@pytest.mark.parametrize("model", topic_models(), ids=lambda m: m.__name__)
def test_every_published_schema_is_a_valid_schema(model: type) -> None:
    validator_for(model.__name__)  # check_schema raises on a broken file


def test_what_the_workers_send_conforms() -> None:
    events = [
        (
            "oms.order-events",
            "O1",
            an_event(
                1, EventKind.RECEIVED, OrderState.RECEIVED, order=an_order()
            ).model_dump_json(),
        ),
        (
            "oms.order-events",
            "O1",
            an_event(2, EventKind.RESERVED, OrderState.RESERVED).model_dump_json(),
        ),
    ]
    ((_, _, packed),) = pack_events(events, "oms.order-events")
    assert problems(validator_for("OrderEvents"), packed) == []
    assert (
        problems(validator_for("FulfilmentCommand"), a_command().model_dump_json().encode()) == []
    )
    assert problems(validator_for("DlqRecord"), a_dlq().model_dump_json().encode()) == []


def test_a_broken_message_is_named_by_rule_and_path_never_by_value() -> None:
    data = orjson.loads(a_command().model_dump_json())
    data["attempt"] = 0
    data["ship_to"]["phone"] = 13912345678  # a number where the schema wants text
    found = problems(validator_for("FulfilmentCommand"), orjson.dumps(data))
    assert "minimum at /attempt" in found and "type at /ship_to/phone" in found
    assert not any("13912345678" in p for p in found)


def test_a_topic_is_counted_and_its_first_failures_named() -> None:
    good = a_dlq().model_dump_json().encode()
    records = [Rec("oms.dlq", 0, n, good) for n in range(3)]
    records += [Rec("oms.dlq", 1, 7, b"{not json"), Rec("oms.dlq", 1, 8, b'{"dlq_id": 5}')]
    result = check_topic("oms.dlq", "DlqRecord", records)
    assert (result.messages, result.failing) == (5, 2)
    assert result.examples[0] == "oms.dlq[1]@7: not JSON"
    assert result.examples[1].startswith("oms.dlq[1]@8: ")
