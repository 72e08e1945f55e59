"""core/retry.py: which failures are outages (waited out) and which are not (a bug, a poison
input), and the one backoff schedule. Redis errors are made by redis-py's own reply parser
from the reply Redis sends, so the classification is tested on what the client really raises."""

from __future__ import annotations

import random

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.retry import Backoff, is_outage, redis_error_code

# What Redis replies when it refuses a command for a while, whatever the command.
REFUSALS = [
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "MISCONF Errors writing to the AOF file: No space left on device",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
    "LOADING Redis is loading the dataset in memory",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "NOREPLICAS Not enough good replicas to write.",
    "NOSCRIPT No matching script. Please use EVAL.",
    "MOVED 3999 127.0.0.1:6381",
    "ASK 3999 127.0.0.1:6381",
    "UNBLOCKED force unblock from blocking operation, instance state changed",
    "NOPERM this user has no permissions to run the 'evalsha' command",
]
# Replies that depend on the input or the code: retrying the same input fails the same way.
NOT_OUTAGES = [
    "ERR Error running script (call to f_x): @user_script:12: bad argument",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR value is not an integer or out of range",
    "EXECABORT Transaction discarded because of previous errors.",
]


def reply_error(reply: str) -> Exception:
    return BaseParser.parse_error(reply)


@pytest.mark.parametrize("reply", REFUSALS, ids=[r.split()[0] for r in REFUSALS])
def test_redis_refusing_is_an_outage(reply: str) -> None:
    exc = reply_error(reply)
    assert is_outage(exc), type(exc).__name__
    assert redis_error_code(exc) == reply.split()[0]


@pytest.mark.parametrize("reply", REFUSALS, ids=[r.split()[0] for r in REFUSALS])
def test_a_refusal_inside_a_pipeline_is_an_outage(reply: str) -> None:
    """redis-py puts the failing command before the reply: the code is found after it, also
    where the client keeps no status code (redis-py before 6)."""
    code, _, text = reply.partition(" ")
    plain = ResponseError(f"Command # 1 (EVALSHA ab12 2 k1 k2) of pipeline caused error: {reply}")
    assert redis_error_code(plain) == code and is_outage(plain)
    annotated = reply_error(reply)
    annotated.args = (f"Command # 2 (SET k v) of pipeline caused error: {text}",)
    assert is_outage(annotated)


@pytest.mark.parametrize("reply", NOT_OUTAGES, ids=[r.split()[0] for r in NOT_OUTAGES])
def test_a_bad_command_or_script_is_not_an_outage(reply: str) -> None:
    assert not is_outage(reply_error(reply))


def test_connection_trouble_and_retriable_broker_errors_are_outages() -> None:
    assert is_outage(RedisConnectionError("refused"))
    assert is_outage(reply_error("ERR max number of clients reached"))
    assert is_outage(TimeoutError()) and is_outage(ConnectionResetError())
    assert is_outage(KafkaConnectionError()) and is_outage(KafkaTimeoutError())
    assert not is_outage(MessageSizeTooLargeError())  # fails the same way every time
    assert not is_outage(ValueError("bug")) and not is_outage(KeyError("x"))


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0))
def test_delays_stay_under_the_capped_exponential_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(0.2, 5.0, rng=random.Random(seed))
    assert backoff.ceiling(attempt) == min(5.0, 0.2 * 2 ** min(attempt - 1, 64))
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)
    assert 0 <= backoff.delay(attempt) <= backoff.ceiling(attempt)


def test_two_sources_retry_at_different_moments() -> None:
    """Full jitter: two workers failing at the same moment do not retry in step."""
    first, second = Backoff(0.2, 5.0, rng=random.Random(1)), Backoff(0.2, 5.0, rng=random.Random(2))
    assert [first.delay(a) for a in range(1, 9)] != [second.delay(a) for a in range(1, 9)]


@pytest.mark.parametrize("budget", [0.05, 0.5, 3.0])
def test_delays_fill_the_budget_and_no_more(budget: float) -> None:
    delays = list(Backoff(0.01, 0.25, rng=random.Random(7)).delays(budget))
    assert delays and sum(delays) == pytest.approx(budget)
    assert all(0 <= d <= 0.25 for d in delays)


def test_no_budget_means_no_delay() -> None:
    assert list(Backoff(0.01, 0.25).delays(0)) == list(Backoff(0.01, 0.25).delays(-1)) == []
