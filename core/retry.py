"""When to wait a failure out, and how long to wait: the one retry policy of every process.

Why one place: Redis refusing writes (a read-only replica after a failover, OOM under
``noeviction``, MISCONF when the AOF disk is full, LOADING after a restart, a script hogging the
server) comes back as a ``ResponseError``, the same class as a bug in a script. Code that tells
outages from poison by class alone dead-letters every input in flight during such an outage.
So Redis errors are classified by type *and* by the error code Redis sends (the first word of
its reply), here and nowhere else.

Why jitter: after one outage every worker fails at the same moment; a backoff without jitter
has them all retry at the same instants, in step, for as long as the outage lasts. Full jitter
(a delay drawn anywhere below the exponential ceiling) spreads them out.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError, KafkaTimeoutError
from redis import exceptions as redis_errors

# Replies by which Redis refuses a command for a while, whatever the command: the server is
# read-only, full, cannot persist, is loading, busy, has lost its master or replicas, or is a
# cluster mid-failover. NOSCRIPT: the script cache was emptied (a failover to a replica that
# never loaded it); redis-py loads the script again on the next attempt. NOPERM: an ACL change
# refuses every input alike, so it is an outage for operators to end, not one input's poison.
REDIS_OUTAGE_CODES = frozenset(
    {
        "READONLY",
        "OOM",
        "MISCONF",
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
        "NOSCRIPT",
        "MOVED",
        "ASK",
        "UNBLOCKED",
        "NOPERM",
    }
)
# The classes redis-py maps some of those codes to (and its connection-level errors, which
# include LOADING's BusyLoadingError and a full server's MaxClientsReachedError).
REDIS_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.NoScriptError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # and MasterDownError
    redis_errors.AskError,  # and MovedError
    redis_errors.NoPermissionError,
)
# The code starts the reply; in a pipeline redis-py puts "Command # N (...) of pipeline caused
# error: " before it.
_CODE = re.compile(r"(?:^|caused error: )([A-Z][A-Z0-9_]*)(?= |$)")


def redis_error_code(exc: BaseException) -> str:
    """The code Redis replied with ('READONLY', 'ERR', ...), '' when there is none. redis-py
    keeps it in ``status_code`` (from 6.x on) and strips it from the message of the classes
    it maps; older versions only leave it in the message of an unmapped ``ResponseError``."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    match = _CODE.search(str(exc))
    return match.group(1) if match else ""


def is_redis_outage(exc: BaseException) -> bool:
    """Redis cannot serve anyone right now (unreachable or refusing writes): wait, never DLQ."""
    if isinstance(exc, REDIS_OUTAGE_TYPES):
        return True
    return isinstance(exc, redis_errors.RedisError) and redis_error_code(exc) in REDIS_OUTAGE_CODES


def is_outage(exc: BaseException) -> bool:
    """Trouble that passes by itself and fails every input alike: a restarting or refusing
    Redis, a broker hiccup, a dropped connection, a timeout. Broker errors only when aiokafka
    calls them retriable: a message too large or a topic not authorised fails the same way
    every time."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    # OSError covers ConnectionError and TimeoutError (asyncio's too: a batch past its timeout)
    return isinstance(exc, OSError) or is_redis_outage(exc)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter: before retry ``attempt`` (1-based) wait
    anywhere in [0, min(cap_s, first_s * 2 ** (attempt - 1))].

    ``rng`` is the random source: tests pass a seeded ``random.Random``; the default draws from
    the OS, so processes forked from one parent never share a sequence."""

    first_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.SystemRandom, compare=False)

    def ceiling(self, attempt: int) -> float:
        return min(self.cap_s, self.first_s * 2.0 ** min(max(attempt - 1, 0), 64))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, self.ceiling(attempt))

    def delays(self, budget_s: float) -> Iterator[float]:
        """Delays for attempts 1, 2, ... that add up to ``budget_s`` at most (the last one is
        cut to what is left): a bounded wait. Empty when ``budget_s`` <= 0 (one try only)."""
        spent, attempt = 0.0, 0
        while spent < budget_s:
            attempt += 1
            step = min(self.delay(attempt), budget_s - spent)
            yield step
            spent += step
