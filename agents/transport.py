"""Faust's aiokafka transport with the consumer's fetch wait and its memory under our control.

*Fetch wait.* Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting to
change it. A broker may hold a fetch that long before answering even when a message has arrived
(the local Tansu broker does: measured 390 ms median, 740 ms worst from produce to consume at
1500 ms, 3 ms at 10 ms), and every order waits that long before its batch starts. See
docs/decisions/0008-throughput.md. Once no record came for a while, the wait is made long
(core/kafka.py FetchPacing), so an idle worker does not keep the broker busy.

*Memory.* Faust bounds what a worker holds by message count (4,096 per stream buffer) and
aiokafka prefetches up to 50 MB: harmless for 2 KB orders, but a flood of payloads near the 1 MB
message limit would sit in memory whole (`./oms chaos`'s burst_over_memory saw a worker at
812 MB for a 904 MB burst). So the consumer also counts the bytes it handed out and that are not
acked yet, and fetches nothing more while they exceed OMS_CONSUMER_BUFFER_BYTES; aiokafka's own
prefetch is capped at half of that. The input waits in Kafka, where it is durable anyway.
See docs/decisions/0010-chaos.md.

The transport is registered under its own URL scheme, so the app picks it with ``broker=``
alone; everything else is Faust's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiokafka
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from core.kafka import FetchPacing

SCHEME = "oms-kafka"
DEFAULT_FETCH_MAX_WAIT_MS = 50
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024
ACK_WAIT_S = 1.0


class InFlight:
    """Bytes of messages handed out and not acked yet, per partition, by offset.

    An ack of offset N settles every message of that partition up to N (a skipped or redelivered
    one included), so the figure cannot drift upward; a seek forgets a partition, since what it
    held is read again."""

    def __init__(self) -> None:
        self._pending: dict[TP, deque[tuple[int, int]]] = {}
        self.bytes = 0

    def add(self, tp: TP, offset: int, size: int) -> None:
        self._pending.setdefault(tp, deque()).append((offset, size))
        self.bytes += size

    def settle(self, tp: TP, offset: int) -> None:
        pending = self._pending.get(tp)
        while pending and pending[0][0] <= offset:
            self.bytes -= pending.popleft()[1]

    def forget(self, tp: TP | None = None) -> None:
        """One partition (None: all) is read again from its committed offset."""
        for key in [tp] if tp is not None else list(self._pending):
            self.bytes -= sum(size for _, size in self._pending.pop(key, ()))

    def over(self, budget: int) -> bool:
        return self.bytes >= budget


def message_size(message: Message) -> int:
    return max(message.serialized_key_size or 0, 0) + max(message.serialized_value_size or 0, 0)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, building the aiokafka consumer with our wait and prefetch."""

    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS
    fetch_max_bytes: int = DEFAULT_BUFFER_BYTES // 2

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher (no public setter).
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        consumer._fetch_max_bytes = self.fetch_max_bytes
        return consumer


def buffer_budget(app: Any) -> int:
    """create_app puts the setting on the app: Faust's own settings object takes no extras."""
    return int(getattr(app, "consumer_buffer_bytes", DEFAULT_BUFFER_BYTES))


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # builds the consumer thread (_new_consumer_thread)
        self.buffer_bytes = buffer_budget(self.app)
        self.in_flight = InFlight()
        self.pacing = FetchPacing(
            getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS),
            getattr(self.app, "idle_fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS),
        )
        self._room = asyncio.Event()  # set by every ack: the fetch loop may look again

    def _new_consumer_thread(self) -> ConsumerThread:
        thread = ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", thread.fetch_max_wait_ms)
        thread.fetch_max_bytes = max(buffer_budget(self.app) // 2, 1)
        return thread

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        await self.wait_for_room()
        got = False
        async for tp, message in super().getmany(timeout):
            got = True
            self.in_flight.add(tp, message.offset, message_size(message))
            yield tp, message
        self.pacing.pace(getattr(self._thread, "_consumer", None), got)

    async def wait_for_room(self) -> None:
        """Fetch nothing more while the bytes in hand are over budget (an ack or a seek makes
        room); bounded waits, so a stop is seen."""
        while self.in_flight.over(self.buffer_bytes) and not self.should_stop:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), ACK_WAIT_S)

    def ack(self, message: Message) -> bool:
        acked = super().ack(message)
        self.in_flight.settle(message.tp, message.offset)
        self._room.set()
        return acked

    async def seek_to_committed(self) -> Mapping[TP, int]:
        self.in_flight.forget()  # every rebalance ends here (Faust's perform_seek)
        self._room.set()
        return await super().seek_to_committed()

    async def seek(self, partition: TP, offset: int) -> None:
        self.in_flight.forget(partition)
        self._room.set()
        await super().seek(partition, offset)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def register() -> str:
    """Make ``oms-kafka://`` URLs resolve to this transport; returns the scheme."""
    drivers.TRANSPORTS.data.setdefault(SCHEME, f"{__name__}:Transport")
    return SCHEME
