"""Pure parts of state/lock.py: the retry schedule, lease timing, key layout."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from state.keys import Keys
from state.lock import (
    ACQUIRE_BACKOFF,
    MAX_DELAY_S,
    Lease,
    fence_key,
    lock_key,
    new_owner,
    stock_lock_name,
)


@pytest.mark.parametrize("wait_s", [0.05, 0.5, 3.0])
def test_acquire_waits_at_most_the_wait(wait_s: float) -> None:
    delays = list(ACQUIRE_BACKOFF.delays(wait_s))
    assert delays and sum(delays) == pytest.approx(wait_s)
    assert all(0 <= d <= MAX_DELAY_S for d in delays)


def test_no_wait_means_one_try() -> None:
    assert list(ACQUIRE_BACKOFF.delays(0)) == []
    assert list(ACQUIRE_BACKOFF.delays(-1)) == []


def test_lease_timing_is_measured_from_before_the_request() -> None:
    lease = Lease("job", "me", 3, ttl_ms=1000, started=100.0)
    assert lease.deadline == 101.0
    assert lease.remaining(now=100.2) == pytest.approx(0.8)
    assert lease.remaining(now=102.0) == 0.0
    assert not lease.renewal_due(now=100.4)
    assert lease.renewal_due(now=100.6)  # past half the TTL


def test_lock_and_fence_share_a_cluster_slot() -> None:
    keys = Keys("oms")
    name = stock_lock_name("W1")
    assert lock_key(keys, name) == "oms:lock:{stock:W1}"
    assert fence_key(keys, name) == "oms:fence:{stock:W1}"
    assert key_slot(lock_key(keys, name).encode()) == key_slot(fence_key(keys, name).encode())


def test_owner_tokens_are_unique() -> None:
    assert len({new_owner() for _ in range(1000)}) == 1000
