"""Batches that always finish: nothing but cancellation leaves an agent's batch unfinished.

Why this exists: Faust's ``take_events`` acks a batch's events in a ``finally`` when the agent
body raises, and its supervisor then restarts the body on a stream already past them. An
exception in the order path (Redis restarting, a send that timed out, a bug that one payload
trips) would so commit the offsets of inputs that never took effect: orders lost without a trace.
So a batch is retried until it succeeds. Infrastructure trouble (connection refused, Redis
refusing writes, timeouts, broker errors: core/retry.py) is waited out for as long as it lasts,
with jittered backoff: the partition stalls, nothing is skipped.
Anything else is a bug or a poison input: after ``POISON_ATTEMPTS`` the batch is split and each
input retried on its own, and an input that still fails alone is dead-lettered with reason
``processing_error`` (visible, countable, replayable once fixed) so it cannot stall its
partition for good.

Two failures do stall their partition until someone acts, by design: a batch that keeps running
past OMS_BATCH_TIMEOUT_S (a timeout is infrastructure trouble, never poison) and a broker error
that is not retriable for the whole batch's outputs; both are logged at every attempt and
counted (``<agent>_retries``).

Cancelling the agent's task (shutdown, rebalance) is the one way out mid-batch, and it first
takes the batch's events out of the ack bookkeeping: the consumer sees a gap and does not commit
past it, and the partition's next reader (this worker after a restart, or any member after the
rebalance's seek to the committed offsets) reads those inputs again. A ``CancelledError`` that
does not cancel the task (a producer future cancelled under a send) is a failure like any other.
Redelivery is safe because every effect is idempotent (docs/decisions/0001-at-least-once.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from faust.types import EventT
from faust.types.tuples import ack_lock
from pydantic import ValidationError

from core.retry import Backoff, is_outage
from order.record import Output
from streams.channels.base import describe_validation

log = logging.getLogger(__name__)

POISON_ATTEMPTS = 3  # failures of one batch (or input) before it counts as poison
BACKOFF_FIRST_S = 0.2  # quick on a blip
BACKOFF_MAX_S = 5.0  # no hot loop through an outage, and a backlog drains soon after it
MAX_DESCRIBED_CHARS = 500  # a failure's description in a DLQ detail or a log line


class Outcome(Protocol):
    """What a batch's work returns: what to send, and what to count once it is sent."""

    @property
    def outputs(self) -> Sequence[Output]: ...

    @property
    def counts(self) -> Counter[str]: ...


Work = Callable[[Sequence[EventT]], Awaitable[Outcome]]
Send = Callable[[Sequence[Output]], Awaitable[None]]
DeadLetter = Callable[[EventT, BaseException], Awaitable[Output]]


def is_transient(exc: BaseException) -> bool:
    """Trouble that passes by itself: wait, never DLQ. An outage (core/retry.py: Redis down or
    refusing writes, a retriable broker error, a timeout), or a ``CancelledError`` that did not
    cancel the task (see BatchRunner.run)."""
    return isinstance(exc, asyncio.CancelledError) or is_outage(exc)


def task_cancelled() -> bool:
    """The running task itself was cancelled (shutdown, rebalance), as opposed to a future it
    awaited having been cancelled under it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def describe(exc: BaseException) -> str:
    """The exception's class and first line, bounded: a DLQ detail and a log line. Never the
    payload (the DLQ record carries that, and logs must not). A pydantic ValidationError is
    described from its first errors (``describe_validation``), never from ``str()``: with
    90,000 errors that string alone is megabytes, built on the event loop. Anything else is
    turned into text once and clipped before it is split."""
    if isinstance(exc, ValidationError):
        text = describe_validation(exc, "input")
    else:
        text = str(exc)[:MAX_DESCRIBED_CHARS]
        text = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {text}"[:MAX_DESCRIBED_CHARS]


def hold_back(events: Sequence[EventT]) -> None:
    """Mark the events done without acking them to the consumer: Faust's ``finally`` then acks
    nothing, the committed offset stays below them, and they are read again."""
    with ack_lock:
        for event in events:
            event.message.acked = True


@dataclass
class BatchRunner:
    """Runs one agent's batches to completion (see the module docstring)."""

    name: str
    send: Send
    counters: Counter[str]
    dead_letter: DeadLetter
    sleep: Callable[[float], Awaitable[Any]] = field(default=asyncio.sleep)
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S))

    async def run(self, events: Sequence[EventT], work: Work) -> None:
        try:
            await self._settle(events, work)
        except BaseException:  # the task is cancelled or the process is going down
            hold_back(events)
            raise

    async def _settle(self, events: Sequence[EventT], work: Work) -> None:
        poison = await self._retry(events, work)
        if poison is None:
            return
        if len(events) > 1:
            for event in events:  # find the input that fails, let the others through
                await self._settle([event], work)
            return
        await self._send_until_sent(events[0], poison)
        self.counters["dlq"] += 1
        self.counters["dlq_processing_error"] += 1
        log.error("%s: input dead-lettered as processing_error: %s", self.name, describe(poison))

    async def _retry(self, events: Sequence[EventT], work: Work) -> BaseException | None:
        """Attempts until one lands (None) or the failures look like poison (the last)."""

        async def land() -> None:
            outcome = await work(events)
            await self.send(outcome.outputs)
            self.counters.update(outcome.counts)  # once: only the attempt that landed counts

        return await self._attempt(land, len(events), poison_after=POISON_ATTEMPTS)

    async def _send_until_sent(self, event: EventT, poison: BaseException) -> None:
        """The poison input's DLQ record, sent whatever it takes: it is the input's only trace."""

        async def send_record() -> None:
            await self.send([await self.dead_letter(event, poison)])

        await self._attempt(send_record, 1, poison_after=None)

    async def _attempt(
        self, action: Callable[[], Awaitable[None]], size: int, *, poison_after: int | None
    ) -> BaseException | None:
        """Run ``action`` until it succeeds (None), with backoff between attempts; with
        ``poison_after``, give up after that many failures that are not transient and return
        the last. Only the task's own cancellation gets out."""
        attempt = poison_failures = 0
        while True:
            attempt += 1
            try:
                await action()
                return None
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and task_cancelled():
                    raise
                self._note_failure(exc, attempt, size)
                if not is_transient(exc):
                    poison_failures += 1
                    if poison_after is not None and poison_failures >= poison_after:
                        return exc
                await self.sleep(self.backoff.delay(attempt))

    def _note_failure(self, exc: BaseException, attempt: int, size: int) -> None:
        """Expected trouble is a warning; anything else an error, with its traceback once."""
        self.counters[f"{self.name}_retries"] += 1
        transient = is_transient(exc)
        log.log(
            logging.WARNING if transient else logging.ERROR,
            "%s: batch of %d failed (attempt %d), retrying: %s",
            self.name,
            size,
            attempt,
            describe(exc),
            exc_info=not transient and attempt == 1,
        )
