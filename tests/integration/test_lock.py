"""The distributed lock on the test Redis: mutual exclusion, TTL, owner-only extend/release,
fencing tokens, and the writer refusing a stale token (state/lock.py, stock_apply.lua)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from core.settings import Settings
from state.keys import Keys
from state.lock import (
    AsyncDistributedLock,
    DistributedLock,
    LockLost,
    LockTimeout,
    lock_key,
    stock_lock_name,
)
from state.redis import connect, connect_async
from state.stock import StockChange, StockError, StockOp, apply_changes, stock_levels

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(redis_settings: Settings) -> Keys:
    return Keys(redis_settings.redis_prefix)


@pytest.fixture
def clients(redis_settings: Settings) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """Two connections: two processes as far as Redis can tell."""
    a, b = connect(redis_settings), connect(redis_settings)
    yield a, b
    a.close()
    b.close()


def test_mutual_exclusion_across_clients(
    clients: tuple[redis.Redis, redis.Redis], keys: Keys
) -> None:
    a, b = clients
    first = DistributedLock(a, keys, "job", ttl_ms=5000)
    second = DistributedLock(b, keys, "job", ttl_ms=5000)
    lease = first.acquire(wait_s=0)
    assert lease is not None
    assert second.acquire(wait_s=0) is None
    started = time.monotonic()
    assert second.acquire(wait_s=0.3) is None  # bounded wait, then gives up
    assert 0.25 <= time.monotonic() - started < 2
    with pytest.raises(LockTimeout):
        DistributedLock(b, keys, "job", wait_s=0.05).__enter__()
    assert first.release()
    assert second.acquire(wait_s=0) is not None
    assert second.release()


def test_critical_section_never_overlaps(redis_settings: Settings, keys: Keys) -> None:
    """Six threads, each with its own connection, do a read-modify-write under the lock."""
    counter_key = f"{keys.prefix}:counter"
    inside = {"now": 0, "max": 0}
    guard = threading.Lock()

    def work() -> None:
        client = connect(redis_settings)
        lock = DistributedLock(client, keys, "rmw", ttl_ms=5000, wait_s=20)
        for _ in range(15):
            with lock:
                with guard:
                    inside["now"] += 1
                    inside["max"] = max(inside["max"], inside["now"])
                value = int(client.get(counter_key) or 0)
                time.sleep(0.001)
                client.set(counter_key, value + 1)
                with guard:
                    inside["now"] -= 1
        client.close()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert inside["max"] == 1
    assert int(connect(redis_settings).get(counter_key) or 0) == 6 * 15  # no lost update


def test_ttl_expiry_lets_another_in_and_only_the_owner_acts(
    clients: tuple[redis.Redis, redis.Redis], keys: Keys
) -> None:
    a, b = clients
    old = DistributedLock(a, keys, "job", ttl_ms=150)
    new = DistributedLock(b, keys, "job", ttl_ms=5000)
    old_lease = old.acquire(wait_s=0)
    assert old_lease is not None
    new_lease = new.acquire(wait_s=3)  # the holder "died": the TTL frees the lock
    assert new_lease is not None and new_lease.fence > old_lease.fence

    assert old.extend() is False  # not the owner any more: cannot revive it
    with pytest.raises(LockLost):
        old.renew_if_due()
    assert old.release() is False  # and cannot free the new owner's lock
    assert b.get(lock_key(keys, "job")) == new_lease.owner
    assert new.extend() is True
    assert new.release() is True
    assert b.get(lock_key(keys, "job")) is None


def test_release_by_a_stranger_is_refused(
    clients: tuple[redis.Redis, redis.Redis], keys: Keys
) -> None:
    a, b = clients
    owner = DistributedLock(a, keys, "job")
    lease = owner.acquire(wait_s=0)
    assert lease is not None
    stranger = DistributedLock(b, keys, "job")
    # A stranger that somehow learnt the name but not the token: compare-and-delete refuses.
    assert int(stranger._release(keys=[stranger.key], args=["someone-else"])) == 0
    assert int(stranger._extend(keys=[stranger.key], args=["someone-else", 1])) == 0
    assert a.get(lock_key(keys, "job")) == lease.owner
    assert a.pttl(lock_key(keys, "job")) > 1000
    owner.release()


def test_fencing_tokens_only_grow(redis_settings: Settings, keys: Keys) -> None:
    client = connect(redis_settings)
    lock = DistributedLock(client, keys, "job")
    tokens = []
    for _ in range(5):
        with lock as lease:
            tokens.append(lease.fence)
    assert tokens == sorted(tokens) and len(set(tokens)) == 5
    other = DistributedLock(client, keys, "other")  # each lock has its own counter
    with other as lease:
        assert lease.fence == 1


def test_renew_if_due_keeps_a_long_job_alive(redis_settings: Settings, keys: Keys) -> None:
    client = connect(redis_settings)
    lock = DistributedLock(client, keys, "long", ttl_ms=300)
    with lock:
        for _ in range(6):  # 0.6 s of work with a 0.3 s TTL
            time.sleep(0.1)
            lock.renew_if_due()
        assert DistributedLock(client, keys, "long").acquire(wait_s=0) is None


def test_stale_fencing_token_is_refused_by_the_stock_writer(
    clients: tuple[redis.Redis, redis.Redis], keys: Keys
) -> None:
    """A holder paused past its TTL wakes up and writes with its old token: refused."""
    a, b = clients
    apply_changes(
        a, keys, StockOp.LOAD, "load-1", [StockChange("SKU1", "W1", "on_hand", "set", 10)]
    )
    name = stock_lock_name("W1")
    paused = DistributedLock(a, keys, name, ttl_ms=100)
    old = paused.acquire(wait_s=0)
    assert old is not None
    time.sleep(0.2)  # lease lapses while "paused"
    with DistributedLock(b, keys, name) as lease:
        apply_changes(
            b,
            keys,
            StockOp.SNAPSHOT,
            "count-new",
            [StockChange("SKU1", "W1", "on_hand", "set", 7)],
            fence=lease.fence,
        )
    with pytest.raises(StockError, match="newer fencing token"):
        apply_changes(
            a,
            keys,
            StockOp.SNAPSHOT,
            "count-old",
            [StockChange("SKU1", "W1", "on_hand", "set", 3)],
            fence=old.fence,
        )
    assert stock_levels(a, keys, "SKU1")[0].on_hand == 7


async def test_async_lock(redis_settings: Settings, keys: Keys) -> None:
    a, b = connect_async(redis_settings), connect_async(redis_settings)
    try:
        first = AsyncDistributedLock(a, keys, "job", ttl_ms=200)
        second = AsyncDistributedLock(b, keys, "job", ttl_ms=5000)
        lease = await first.acquire(wait_s=0)
        assert lease is not None
        assert await second.acquire(wait_s=0.05) is None
        async with second as taken:  # waits out the first lease's TTL
            assert taken.fence > lease.fence
            assert await first.extend() is False
            assert await first.release() is False
            assert await second.holder() == taken.owner
        assert await second.holder() is None

        results = await asyncio.gather(
            *(AsyncDistributedLock(a, keys, "race").acquire(wait_s=0) for _ in range(20))
        )
        assert sum(r is not None for r in results) == 1
    finally:
        await a.aclose()
        await b.aclose()
