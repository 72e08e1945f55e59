"""The fact sink's loop and its own process (analytics/fact_consumer.py run_fact_sink,
analytics/sink_process.py)
without a broker, Redis or ClickHouse: fakes stand in for the consumer, the FactSink and the
heartbeat client.

What the process relies on: a stop between batches lands and commits the batch in hand first;
the partitions gauge makes the heartbeat ready; a stop that the sink cannot honour in time (a
write stuck on ClickHouse) cancels it uncommitted; a crash of the sink ends the process with
its exception; the heartbeat goes away with the process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner

from analytics import fact_consumer as sink_module
from analytics import sink_process
from core.settings import REPO_ROOT, Settings
from ops.cli import main
from streams import topics
from streams.messages import DlqReason, DlqRecord

SETTINGS = Settings(sink_flush_s=0.01, redis_prefix="unit")
DLQ_TOPIC = topics.DLQ.name(SETTINGS.topic_prefix)


@dataclass
class Rec:
    topic: str
    value: bytes


def a_dlq_value(i: int) -> bytes:
    record = DlqRecord(
        dlq_id=f"D{i}",
        reason=DlqReason.MALFORMED_JSON,
        detail="not json",
        source_topic="oms.raw.jd",
        payload="{",
        received_at=datetime(2024, 11, 11, tzinfo=UTC),
    )
    return record.model_dump_json().encode()


class FakeConsumer:
    """Hands out ``batches`` (one per getmany), then nothing; records what the loop does."""

    batches: ClassVar[list[list[Rec]]] = []
    log: ClassVar[list[str]] = []

    def __init__(self, *topics_: str, **_kwargs: Any) -> None:
        self.topics = topics_

    async def start(self) -> None:
        self.log.append("start")

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[str, list[Rec]]:
        if self.batches:
            return {"tp": self.batches.pop(0)}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[str]:
        return {"tp0", "tp1"}

    async def commit(self) -> None:
        self.log.append("commit")

    async def stop(self) -> None:
        self.log.append("stop")


class FakeSink:
    """Lands every batch (``hang``: never returns, like a write retrying on ClickHouse)."""

    hang = False

    def __init__(self, settings: Settings, counters: Counter[str]) -> None:
        self.counters = counters

    async def write(self, batch: list[Any]) -> None:
        FakeConsumer.log.append(f"write {len(batch)}")
        if self.hang:
            await asyncio.Event().wait()

    async def close(self) -> None:
        FakeConsumer.log.append("close")


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    FakeConsumer.batches, FakeConsumer.log = [], []
    FakeSink.hang = False
    monkeypatch.setattr(sink_module, "AIOKafkaConsumer", FakeConsumer)
    monkeypatch.setattr(sink_module, "FactSink", FakeSink)
    return FakeConsumer


async def wait_until(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_stop_lands_and_commits_the_batch_in_hand(fakes: type[FakeConsumer]) -> None:
    fakes.batches = [[Rec(DLQ_TOPIC, a_dlq_value(1)), Rec(DLQ_TOPIC, b"{not json")]]
    counters: Counter[str] = Counter()
    stop = asyncio.Event()
    task = asyncio.create_task(sink_module.run_fact_sink(SETTINGS, counters, stop=stop))
    await wait_until(lambda: "commit" in fakes.log)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert fakes.log == ["start", "write 1", "commit", "stop", "close"]
    assert counters["facts"] == 1 and counters["bad_facts"] == 1
    assert counters["sink_partitions"] == 2


async def test_cancel_while_writing_commits_nothing(fakes: type[FakeConsumer]) -> None:
    fakes.batches = [[Rec(DLQ_TOPIC, a_dlq_value(1))]]
    FakeSink.hang = True
    task = asyncio.create_task(sink_module.run_fact_sink(SETTINGS, Counter()))
    await wait_until(lambda: "write 1" in fakes.log)
    await sink_process.finish(task, grace_s=0.05)  # cancelled, not raised
    assert task.cancelled()
    assert fakes.log == ["start", "write 1", "stop", "close"]  # no commit: replayed later


def test_heartbeat_is_ready_once_the_consumer_has_partitions() -> None:
    starting = sink_process.heartbeat_value(7, Counter(), 100.0)
    assert starting == {"pid": 7, "ready": False, "partitions": 0, "ts": 100.0, "counters": {}}
    counters = Counter({"sink_partitions": 4, "facts": 10, "bad_facts": 1, "sink_retries": 2})
    beat = sink_process.heartbeat_value(7, counters, 101.0)
    assert beat["ready"] and beat["partitions"] == 4
    assert beat["counters"] == dict(counters)
    assert orjson.loads(orjson.dumps(beat)) == beat


async def test_finish_reraises_a_crash() -> None:
    async def crash() -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError, match="bug"):
        await sink_process.finish(asyncio.create_task(crash()), grace_s=1.0)


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.closed = False

    async def set(self, key: str, value: bytes, ex: int) -> None:
        assert ex == sink_process.HEARTBEAT_TTL_S
        self.values[key] = value

    async def delete(self, key: str) -> None:
        self.values.pop(key, None)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def redis(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    client = FakeRedis()
    monkeypatch.setattr(sink_process, "connect_async", lambda _settings: client)
    return client


async def test_serve_beats_until_stopped_then_removes_its_heartbeat(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_sink(_s: Settings, counters: Counter[str], *, stop: asyncio.Event) -> None:
        counters["sink_partitions"] = 3
        counters["facts"] += 5
        await stop.wait()

    monkeypatch.setattr(sink_process, "run_fact_sink", fake_sink)
    stop = asyncio.Event()
    task = asyncio.create_task(sink_process.serve(SETTINGS, stop))
    await wait_until(lambda: "unit:sink" in redis.values)
    beat = orjson.loads(redis.values["unit:sink"])
    assert beat["pid"] == os.getpid()
    stop.set()
    counters = await asyncio.wait_for(task, 5)
    assert counters["facts"] == 5
    assert redis.values == {} and redis.closed


async def test_serve_ends_with_the_sinks_crash(
    redis: FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_sink(_s: Settings, _c: Counter[str], *, stop: asyncio.Event) -> None:
        raise RuntimeError("consumer failed")

    monkeypatch.setattr(sink_process, "run_fact_sink", broken_sink)
    with pytest.raises(RuntimeError, match="consumer failed"):
        await asyncio.wait_for(sink_process.serve(SETTINGS, asyncio.Event()), 5)
    assert redis.values == {} and redis.closed


def test_cli_has_the_sink_command() -> None:
    result = CliRunner().invoke(main, ["sink", "--help"])
    assert result.exit_code == 0
    assert "fact sink" in result.output and "OMS_SINK_IN_WORKER" in result.output


def test_sink_without_a_broker_is_one_clear_error() -> None:
    env = {
        **os.environ,
        "OMS_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "OMS_REDIS_URL": "redis://127.0.0.1:1/0",
        "OMS_HOME": "/tmp/oms-nowhere",
    }
    result = subprocess.run(
        [str(REPO_ROOT / "oms"), "sink"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "error: Kafka at 127.0.0.1:1 not usable" in result.stderr
    assert "Traceback" not in result.stderr
