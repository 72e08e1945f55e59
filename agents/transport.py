"""Faust's aiokafka transport with the consumer's fetch wait under our control.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting to change it.
A broker may hold a fetch that long before answering even when a message has arrived (the
local Tansu broker does: measured 390 ms median, 740 ms worst from produce to consume at
1500 ms, 3 ms at 10 ms), and every order waits that long before its batch starts. The
transport is registered under its own URL scheme, so the app picks it with ``broker=`` alone;
everything else is Faust's. See docs/decisions/0008-throughput.md.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "oms-kafka"


DEFAULT_FETCH_MAX_WAIT_MS = 50


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher (no public setter).
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        thread = ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        # create_app puts the setting on the app: Faust's own settings object takes no extras.
        thread.fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", thread.fetch_max_wait_ms)
        return thread


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def register() -> str:
    """Make ``oms-kafka://`` URLs resolve to this transport; returns the scheme."""
    drivers.TRANSPORTS.data.setdefault(SCHEME, f"{__name__}:Transport")
    return SCHEME
