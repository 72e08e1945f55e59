"""The Faust transport subclass (agents/transport.py) must really set the consumer's fetch wait
and prefetch bound: it touches private attributes of aiokafka's consumer, which an upgrade
could rename. And its count of the bytes in hand must equal the messages not acked yet."""

from __future__ import annotations

import asyncio

import aiokafka
from faust.types import TP, Message
from hypothesis import given
from hypothesis import strategies as st

from agents.app import create_app
from agents.transport import ConsumerThread, InFlight, Transport, message_size
from core.settings import Settings


async def test_worker_consumer_fetches_with_the_configured_wait() -> None:
    app = create_app(Settings(kafka_fetch_max_wait_ms=37))
    assert isinstance(app.transport, Transport)
    thread = app.consumer._thread
    assert isinstance(thread, ConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    assert isinstance(consumer, aiokafka.AIOKafkaConsumer)
    assert consumer._fetch_max_wait_ms == 37  # what AIOKafkaConsumer.start() hands its fetcher


def test_fetcher_reads_the_attribute_the_transport_sets() -> None:
    """aiokafka builds its fetcher from this attribute; if it is renamed, the setting is dead."""
    import inspect

    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start
    )


async def test_worker_consumer_caps_its_prefetch_at_half_the_buffer() -> None:
    app = create_app(Settings(consumer_buffer_bytes=8 * 1024 * 1024))
    assert app.consumer.buffer_bytes == 8 * 1024 * 1024
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_bytes == 4 * 1024 * 1024


def test_fetcher_reads_the_fetch_max_bytes_attribute() -> None:
    import inspect

    assert "fetch_max_bytes=self._fetch_max_bytes" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start
    )


TP0, TP1 = TP("t", 0), TP("t", 1)


def test_in_flight_counts_until_acked_in_offset_order() -> None:
    flight = InFlight()
    for offset in range(5):
        flight.add(TP0, offset, 100)
    flight.add(TP1, 7, 1000)
    assert flight.bytes == 1500 and flight.over(1500) and not flight.over(1501)
    flight.settle(TP0, 2)  # an ack settles everything up to it: 0, 1 and 2
    assert flight.bytes == 1200
    flight.settle(TP0, 2)  # twice changes nothing
    assert flight.bytes == 1200
    flight.forget(TP1)  # a seek: read again, no longer in hand
    assert flight.bytes == 200
    flight.forget()
    assert flight.bytes == 0
    flight.settle(TP0, 99)  # nothing pending: no negative figure
    assert flight.bytes == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "settle", "forget"]), st.integers(0, 1), st.integers(0, 50)
        ),
        max_size=200,
    )
)
def test_in_flight_equals_the_unsettled_messages(ops: list[tuple[str, int, int]]) -> None:
    """Against a model: the figure is the sum of sizes of messages added and neither settled
    (an ack at or beyond their offset) nor forgotten; it is never negative."""
    flight, model = InFlight(), []
    offsets = {TP0: 0, TP1: 0}
    for op, part, n in ops:
        tp = (TP0, TP1)[part]
        if op == "add":
            model.append((tp, offsets[tp], n + 1))
            flight.add(tp, offsets[tp], n + 1)
            offsets[tp] += 1
        elif op == "settle":
            model = [m for m in model if not (m[0] == tp and m[1] <= n)]
            flight.settle(tp, n)
        else:
            model = [m for m in model if m[0] != tp]
            flight.forget(tp)
        assert flight.bytes == sum(size for _, _, size in model) >= 0


async def test_the_consumer_fetches_nothing_more_until_an_ack_makes_room() -> None:
    """The fetch loop's gate on the real Consumer subclass: over budget it waits, an ack of the
    message in hand lets it go on."""
    app = create_app(Settings(consumer_buffer_bytes=4 * 1024 * 1024))
    consumer = app.consumer
    held = Message("t", 0, 41, 0.0, 0, [], b"k", b"v", None, 1, 4 * 1024 * 1024, tp=TP0)
    consumer.in_flight.add(TP0, held.offset, message_size(held))
    gate = asyncio.ensure_future(consumer.wait_for_room())
    await asyncio.sleep(0.05)
    assert not gate.done()
    consumer.ack(held)
    await asyncio.wait_for(gate, 2.0)
    assert consumer.in_flight.bytes == 0
