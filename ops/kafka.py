"""Kafka plumbing for the CLI: produce files and floods, read a topic from the beginning."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ops.security import kafka_security
from ops.settings import Settings

Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


def client_kwargs(settings: Settings) -> dict[str, object]:
    """bootstrap servers and security settings (TLS context, SASL) every aiokafka client of
    the OMS uses; holds the SASL password in clear, so never log it."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security(settings)}


def consumer_kwargs(settings: Settings) -> dict[str, object]:
    """client_kwargs plus the fetch wait every OMS consumer uses (see agents/transport.py)."""
    return {**client_kwargs(settings), "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms}


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
    await consumer.start()
    try:
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
