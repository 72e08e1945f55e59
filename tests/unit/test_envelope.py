"""Each order's events travel together (streams/envelope.py): packed without re-serialising,
valid OrderEvents messages, order kept per order, split before a message outgrows Kafka's."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.envelope import envelope, pack_events
from streams.messages import EventKind, OrderEvents, OrderState
from tests.unit.test_facts import an_event, an_order

EVENTS = "oms.order-events"
COMMANDS = "oms.fulfilment.commands"


def event_json(order_id: str, seq: int, *, snapshot: bool = False) -> str:
    event = an_event(seq, EventKind.RESERVED, OrderState.RESERVED)
    event = event.model_copy(
        update={"order_id": order_id, "order": an_order() if snapshot else None}
    )
    return event.model_dump_json()


def unpack(wire: list[tuple[str, bytes, bytes]]) -> list[tuple[str, list[int]]]:
    out = []
    for topic, key, value in wire:
        if topic == EVENTS:
            message = OrderEvents.model_validate_json(value)
            assert key.decode() == message.order_id
            assert all(e.order_id == message.order_id for e in message.events)
            out.append((message.order_id, [e.seq for e in message.events]))
    return out


def test_an_orders_events_become_one_message_and_commands_pass_through() -> None:
    outputs = [
        (EVENTS, "O1", event_json("O1", 1, snapshot=True)),
        (EVENTS, "O1", event_json("O1", 2)),
        (COMMANDS, "O1", '{"command_id":"C1"}'),
        (EVENTS, "O2", event_json("O2", 1)),
        (EVENTS, "O1", event_json("O1", 3)),
    ]
    wire = pack_events(outputs, EVENTS)
    assert [t for t, _, _ in wire] == [EVENTS, COMMANDS, EVENTS]
    assert unpack(wire) == [("O1", [1, 2, 3]), ("O2", [1])]
    assert wire[1] == (COMMANDS, b"O1", b'{"command_id":"C1"}')


def test_a_message_is_closed_before_it_outgrows_the_bound() -> None:
    outputs = [(EVENTS, "O1", event_json("O1", seq, snapshot=True)) for seq in range(1, 8)]
    big = max(len(value.encode()) for _, _, value in outputs)
    wire = pack_events(outputs, EVENTS, max_bytes=3 * big + 10)
    assert unpack(wire) == [("O1", [1, 2, 3]), ("O1", [4, 5, 6]), ("O1", [7])]
    assert all(len(value) < 3 * big + 200 for _, _, value in wire)


def test_the_envelope_is_the_models_own_json() -> None:
    events = [event_json("O9", 1), event_json("O9", 2)]
    packed = envelope("O9", [e.encode() for e in events])
    model = OrderEvents.model_validate_json(packed)
    assert orjson.loads(packed) == orjson.loads(model.model_dump_json())


@given(st.lists(st.tuples(st.sampled_from(["O1", "O2", "O3"]), st.booleans()), max_size=30))
def test_every_event_is_sent_once_in_its_orders_order(items: list[tuple[str, bool]]) -> None:
    outputs = []
    for seq, (order_id, is_event) in enumerate(items, start=1):
        if is_event:
            outputs.append((EVENTS, order_id, event_json(order_id, seq)))
        else:
            outputs.append((COMMANDS, order_id, f'{{"n":{seq}}}'))
    wire = pack_events(outputs, EVENTS, max_bytes=2000)
    sent: dict[str, list[int]] = {}
    for order_id, seqs in unpack(wire):
        sent.setdefault(order_id, []).extend(seqs)
    expected: dict[str, list[int]] = {}
    for seq, (order_id, is_event) in enumerate(items, start=1):
        if is_event:
            expected.setdefault(order_id, []).append(seq)
    assert sent == expected
    assert [v for t, _, v in wire if t == COMMANDS] == [
        v.encode() for t, _, v in outputs if t == COMMANDS
    ]
