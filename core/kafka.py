"""Kafka plumbing: client arguments, the admin client and topic creation, producing files and
floods, reading a topic from the beginning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.security import kafka_security
from core.settings import Settings


class KafkaSetupError(RuntimeError):
    """Topics could not be declared (the broker did not list them in time)."""


Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


def client_kwargs(settings: Settings) -> dict[str, object]:
    """bootstrap servers and security settings (TLS context, SASL) every aiokafka client of
    the OMS uses; holds the SASL password in clear, so never log it."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security(settings)}


def consumer_kwargs(settings: Settings) -> dict[str, object]:
    """client_kwargs plus the fetch wait every OMS consumer uses (see agents/transport.py)."""
    return {**client_kwargs(settings), "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms}


IDLE_AFTER_S = 2.0  # no record for this long: the consumer is idle, its fetches may wait longer


class FetchPacing:
    """How long a consumer's next fetch may wait at the broker: the short wait
    (OMS_KAFKA_FETCH_MAX_WAIT_MS) while records flow, the idle wait
    (OMS_KAFKA_IDLE_FETCH_MAX_WAIT_MS) once none came for IDLE_AFTER_S.

    Why: every consumer of an idle stack asks the broker every 50 ms, and a broker answering
    dozens of multi-partition fetches a second cost an idle local stack a fifth of a core.
    Apache Kafka answers a waiting fetch as soon as a record arrives, so the long idle wait costs
    nothing there; the local Tansu broker answers a multi-partition fetch only after part of the
    wait (about a third, measured), so on it the first input after a pause waits that much
    longer, and nothing changes under load (every fetch finds records).
    """

    def __init__(
        self,
        busy_ms: int,
        idle_ms: int,
        idle_after_s: float = IDLE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.busy_ms, self.idle_ms = busy_ms, max(busy_ms, idle_ms)
        self.idle_after_s = idle_after_s
        self._clock = clock
        self._last_record = clock()

    @classmethod
    def of(cls, settings: Settings) -> FetchPacing:
        return cls(settings.kafka_fetch_max_wait_ms, settings.kafka_idle_fetch_max_wait_ms)

    def wait_ms(self, got_records: bool) -> int:
        """The wait for the next fetch, after a poll that did (not) return records."""
        now = self._clock()
        if got_records:
            self._last_record = now
            return self.busy_ms
        return self.idle_ms if now - self._last_record >= self.idle_after_s else self.busy_ms

    def pace(self, consumer: Any, got_records: bool) -> None:
        """Set the wait of ``consumer``'s next fetch requests (aiokafka reads its fetcher's
        ``_fetch_max_wait_ms`` for every request it builds; there is no public setter)."""
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = self.wait_ms(got_records)


async def produce(
    settings: Settings,
    records: Iterable[Record],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send everything and wait for every ack; returns the count sent."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings), linger_ms=5, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[object]] = []
        for topic, key, value, headers in records:
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            sent += 1
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                if progress:
                    progress(len(pending))
                pending = []
        await asyncio.gather(*pending)
        if progress and pending:
            progress(len(pending))
    finally:
        await producer.stop()
    return sent


@dataclass(frozen=True)
class TopicRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


async def read_topic(settings: Settings, topic: str, limit: int | None = None) -> list[TopicRecord]:
    """Everything currently on a topic, from the beginning, without joining a group."""
    consumer = AIOKafkaConsumer(
        **consumer_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        await consumer.start()  # inside: a consumer that failed to start is closed too
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[TopicRecord] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            if not batch:
                break
            for tp, messages in batch.items():
                for m in messages:
                    out.append(
                        TopicRecord(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    )
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            if limit is not None and len(out) >= limit:
                break
        return out
    finally:
        await consumer.stop()


def bootstrap_servers(settings: Settings) -> list[str]:
    """``settings.kafka_bootstrap`` as a client list, without any ``kafka://`` scheme."""
    servers = [s.strip().split("://", 1)[-1] for s in settings.kafka_bootstrap.split(",")]
    return [s for s in servers if s]


def kafka_admin(settings: Settings, timeout_s: float = 5.0) -> Any:
    """A kafka-python admin client with bounded timeouts.

    Only options the installed kafka-python knows are passed (2.x rejects unknown ones,
    3.x added ``bootstrap_timeout_ms``), so either major version works.
    """
    from kafka.admin import KafkaAdminClient

    timeout_ms = int(timeout_s * 1000)
    wanted = {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": "oms-stack",
        "request_timeout_ms": timeout_ms,
        "bootstrap_timeout_ms": timeout_ms,
        "api_version_auto_timeout_ms": timeout_ms,
        # retry a refused bootstrap quickly: a broker that is just starting answers soon
        "reconnect_backoff_max_ms": 250,
        **kafka_security(settings),  # kafka-python takes aiokafka's names,
    }
    known = KafkaAdminClient.DEFAULT_CONFIG
    config = {k: v for k, v in wanted.items() if k in known and v is not None}
    return KafkaAdminClient(**config)


def ensure_topics(
    settings: Settings,
    specs: Iterable[tuple[str, int]],
    *,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create the topics of ``specs`` (name, partitions) that do not exist; returns the
    names created. Existing topics are left as they are, whatever their partition count.

    Needed because the local broker keeps topics in memory: after a broker restart every
    topic is gone and must be declared again before producers and Faust agents use it.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted: dict[str, int] = {}
    for name, partitions in specs:
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        wanted[name] = partitions
    if not wanted:
        return []
    admin = kafka_admin(settings, timeout_s=min(timeout_s, 10.0))
    try:
        existing = set(admin.list_topics())
        created = []
        for name, partitions in wanted.items():
            if name in existing:
                continue
            # one request per topic: a concurrent creator ("already exists") must not hide
            # the result of the others
            try:
                admin.create_topics(
                    [NewTopic(name, partitions, replication_factor)],
                    timeout_ms=int(timeout_s * 1000),
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        _wait_for_topics(admin, set(wanted), timeout_s)
    finally:
        admin.close()
    return created


def _wait_for_topics(admin: Any, names: set[str], timeout_s: float) -> None:
    """Until metadata lists every topic (old kafka-python returns errors instead of raising)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = names - set(admin.list_topics())
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise KafkaSetupError(f"topics not created after {timeout_s:.0f} s: {sorted(missing)}")
        time.sleep(0.2)
