"""agents/batches.py: a batch is retried until it lands, counted once, a poison input is
dead-lettered alone, transient trouble never dead-letters, and a cancelled batch is held back
from the consumer's acks. Events are stand-ins with the one attribute the runner touches."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from pydantic import BaseModel, ConfigDict, ValidationError
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.batches import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    POISON_ATTEMPTS,
    BatchRunner,
    describe,
    hold_back,
    is_transient,
)
from core.retry import Backoff
from order.plan import BatchResult
from order.record import Output


@dataclass
class Message:
    offset: int
    acked: bool = False


@dataclass
class Event:
    value: str
    message: Message


def events(*values: str) -> list[Any]:
    return [Event(v, Message(i)) for i, v in enumerate(values)]


@dataclass
class Harness:
    """The runner with a recording send and a sleep that only counts."""

    fail_send: list[BaseException] = field(default_factory=list)
    sent: list[Output] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    def runner(self) -> BatchRunner:
        async def send(outputs: Sequence[Output]) -> None:
            if self.fail_send:
                raise self.fail_send.pop(0)
            self.sent.extend(outputs)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        async def dead_letter(event: Any, exc: BaseException) -> Output:
            return ("dlq", event.value, describe(exc))

        return BatchRunner("intake", send, self.counters, dead_letter, sleep)


def result_of(batch: Sequence[Any]) -> BatchResult:
    result = BatchResult()
    for event in batch:
        result.outputs.append(("out", event.value, "ok"))
        result.counts["inputs"] += 1
    return result


async def test_transient_failures_are_waited_out_and_counted_once() -> None:
    h = Harness()
    failures = [RedisConnectionError("refused")] * 12 + [TimeoutError()]
    calls = 0

    async def work(batch: Sequence[Any]) -> BatchResult:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return result_of(batch)

    await h.runner().run(events("a", "b"), work)
    assert calls == 14  # far beyond POISON_ATTEMPTS: transient trouble never dead-letters
    assert h.sent == [("out", "a", "ok"), ("out", "b", "ok")]
    assert h.counters["inputs"] == 2 and h.counters["dlq"] == 0
    assert h.counters["intake_retries"] == 13
    assert all(0 <= s <= BACKOFF_MAX_S for s in h.sleeps)


async def test_a_failed_send_reruns_the_work_and_counts_once() -> None:
    h = Harness(fail_send=[RedisConnectionError("x"), OSError("broker gone")])
    calls = 0

    async def work(batch: Sequence[Any]) -> BatchResult:
        nonlocal calls
        calls += 1
        return result_of(batch)

    await h.runner().run(events("a"), work)
    assert calls == 3
    assert h.sent == [("out", "a", "ok")] and h.counters["inputs"] == 1


async def test_a_poison_input_is_dead_lettered_and_the_rest_go_through() -> None:
    h = Harness()
    tries: Counter[str] = Counter()

    async def work(batch: Sequence[Any]) -> BatchResult:
        for event in batch:
            tries[event.value] += 1
            if event.value == "bad":
                raise ValueError("cannot handle this one")
        return result_of(batch)

    await h.runner().run(events("a", "bad", "c"), work)
    assert ("out", "a", "ok") in h.sent and ("out", "c", "ok") in h.sent
    assert ("dlq", "bad", "ValueError: cannot handle this one") in h.sent
    assert not [o for o in h.sent if o[0] == "out" and o[1] == "bad"]
    assert h.counters["inputs"] == 2
    assert h.counters["dlq"] == h.counters["dlq_processing_error"] == 1
    # POISON_ATTEMPTS as a batch, then POISON_ATTEMPTS alone.
    assert tries["bad"] == 2 * POISON_ATTEMPTS


async def test_a_cancelled_batch_is_held_back_from_the_acks() -> None:
    h = Harness()
    started = asyncio.Event()

    async def work(batch: Sequence[Any]) -> BatchResult:
        started.set()
        await asyncio.sleep(3600)
        return result_of(batch)

    batch = events("a", "b")
    task = asyncio.ensure_future(h.runner().run(batch, work))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(e.message.acked for e in batch)
    assert h.sent == [] and h.counters["inputs"] == 0


async def test_a_batch_that_lands_is_left_to_faust_to_ack() -> None:
    h = Harness()
    batch = events("a")

    async def work(items: Sequence[Any]) -> BatchResult:
        return result_of(items)

    await h.runner().run(batch, work)
    assert not batch[0].message.acked


def test_hold_back_marks_every_event() -> None:
    batch = events("a", "b", "c")
    hold_back(batch)
    assert [e.message.acked for e in batch] == [True, True, True]


def test_which_failures_are_transient() -> None:
    assert is_transient(RedisConnectionError("refused"))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert is_transient(KafkaConnectionError())
    assert is_transient(KafkaTimeoutError())
    assert not is_transient(MessageSizeTooLargeError())  # fails the same way every time
    assert not is_transient(ValueError("bug"))
    assert not is_transient(KeyError("x"))


async def test_a_future_cancelled_under_the_work_is_retried_not_held_back() -> None:
    """A producer future cancelled under a send raises CancelledError in a task nobody
    cancelled: a failure like any other, retried; the batch is not held back."""
    h = Harness()
    batch = events("a")
    calls = 0

    async def work(items: Sequence[Any]) -> BatchResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        return result_of(items)

    await h.runner().run(batch, work)
    assert calls == 2 and h.sent == [("out", "a", "ok")]
    assert not batch[0].message.acked


def test_describe_is_one_bounded_line() -> None:
    text = describe(ValueError("first line\nsecond line with a phone 13812345678"))
    assert text == "ValueError: first line"
    assert len(describe(ValueError("x" * 5000))) == 500
    assert describe(KeyError()) == "KeyError: "


class Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    qty: int = 0


def validation_error(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        Forbid.model_validate(data)
    return raised.value


def test_describe_of_a_huge_validation_error_never_builds_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """90,000 unknown fields: str() of that error is 16 MB. It must never be built, nor the
    error list read: only the count is told."""
    exc = validation_error({f"k{i}": i for i in range(90_000)})

    def never(*_: Any, **__: Any) -> str:
        raise AssertionError("the whole error was turned into text")

    monkeypatch.setattr(ValidationError, "__str__", never)
    monkeypatch.setattr(ValidationError, "__repr__", never)
    monkeypatch.setattr(ValidationError, "errors", never)
    assert describe(exc) == "ValidationError: 90000 errors (too many to list)"


def test_describe_of_a_small_validation_error_names_its_fields() -> None:
    text = describe(validation_error({"qty": "many", "note\nforged": "x" * 5000}))
    assert text.startswith("ValidationError: qty: Input should be a valid integer")
    assert "note\\nforged: Extra inputs are not permitted" in text
    assert "\n" not in text and len(text) <= 500


def test_describe_turns_an_exception_into_text_once() -> None:
    calls = 0

    class Loud(Exception):
        def __str__(self) -> str:
            nonlocal calls
            calls += 1
            return "y" * 100_000

    assert describe(Loud()) == f"Loud: {'y' * 494}"
    assert calls == 1


@pytest.mark.parametrize(
    "reply",
    [
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Errors writing to the AOF file: No space left on device",
        "NOREPLICAS Not enough good replicas to write.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    ],
    ids=lambda reply: reply.split()[0],
)
async def test_redis_refusing_writes_is_waited_out_not_dead_lettered(reply: str) -> None:
    """Regression: these are ResponseErrors, like a script's bug, and every input in flight was
    dead-lettered as processing_error after the retries (READONLY: after 9). An outage is
    waited out however long it lasts (classification: tests/unit/test_retry.py)."""
    h = Harness()
    failures = [BaseParser.parse_error(reply) for _ in range(4 * POISON_ATTEMPTS)]

    async def work(batch: Sequence[Any]) -> BatchResult:
        if failures:
            raise failures.pop(0)
        return result_of(batch)

    await h.runner().run(events("a", "b"), work)
    assert h.sent == [("out", "a", "ok"), ("out", "b", "ok")]
    assert h.counters["dlq"] == 0 and h.counters["intake_retries"] == 4 * POISON_ATTEMPTS


async def test_two_runners_do_not_retry_in_step() -> None:
    """Jitter: two workers hit by the same outage wait different times before each retry."""
    sleeps: list[list[float]] = []
    for seed in (1, 2):
        h = Harness()
        outage = [RedisConnectionError("refused")] * 8

        async def work(batch: Sequence[Any], outage: list[BaseException] = outage) -> BatchResult:
            if outage:
                raise outage.pop(0)
            return result_of(batch)

        runner = h.runner()
        runner.backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S, rng=random.Random(seed))
        await runner.run(events("a"), work)
        assert len(h.sleeps) == 8 and all(0 <= s <= BACKOFF_MAX_S for s in h.sleeps)
        sleeps.append(h.sleeps)
    assert sleeps[0] != sleeps[1]
