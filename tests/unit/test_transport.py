"""The Faust transport subclass (agents/transport.py) must really set the consumer's fetch wait:
it touches a private attribute of aiokafka's consumer, which an upgrade could rename."""

from __future__ import annotations

import aiokafka

from agents.app import create_app
from agents.transport import ConsumerThread, Transport
from ops.settings import Settings


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
