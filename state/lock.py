"""Distributed lock on Redis for operations that span many keys and are not one script
(a WMS stock snapshot, recounts, channel quota rebalancing, the single ledger shipper).

A lease is a key set with NX and a TTL holding a random owner token; extend and release are
Lua compare-and-act so only the owner can do either. Every acquisition also returns a
*fencing token* (INCR of a per-lock counter, issued atomically with the lease). A lease can
lapse without its holder noticing (GC pause, slow network, a long ClickHouse retry), so the
lock alone cannot stop a stale holder from writing; the writer must compare the token with the
highest one it has seen and refuse older ones (``stock_apply.lua`` per sku and warehouse,
``ledger_advance.lua`` for the shipper's cursors). When to use which: state/README.md.

``DistributedLock`` takes a ``redis.Redis`` (CLI), ``AsyncDistributedLock`` a
``redis.asyncio.Redis`` (workers); both run the same scripts (state/lua/lock_*.lua).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis

from core.retry import Backoff
from state.keys import Keys
from state.redis import lua_source

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 30_000
DEFAULT_WAIT_S = 10.0
FIRST_DELAY_S = 0.01
MAX_DELAY_S = 0.25


class LockTimeout(TimeoutError):
    """The lock was not free within the bounded wait."""


class LockLost(RuntimeError):
    """The lease lapsed (and may belong to someone else now): stop writing."""


def lock_key(keys: Keys, name: str) -> str:
    """``<prefix>:lock:{name}``: the hash tag puts the lease and its counter in one slot, so the
    acquire script (SET NX + INCR) runs on a Redis Cluster too."""
    return f"{keys.prefix}:lock:{{{name}}}"


def fence_key(keys: Keys, name: str) -> str:
    """``<prefix>:fence:{name}``: the fencing counter; never expires, so tokens only grow."""
    return f"{keys.prefix}:fence:{{{name}}}"


def stock_lock_name(warehouse: str) -> str:
    """The one lock every fenced writer of a warehouse's stock takes. Tokens of different
    counters are not comparable, so snapshot, recount and rebalance must all use this name."""
    return f"stock:{warehouse}"


LEDGER_SHIPPER = "ledger-shipper"


def new_owner() -> str:
    """Random per acquisition; host and pid only help an operator see who holds a lock."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    fence: int  # fencing token: pass it to every write made under this lease
    ttl_ms: int
    started: float  # time.monotonic() just *before* the request: the lease ends no later

    @property
    def deadline(self) -> float:
        return self.started + self.ttl_ms / 1000

    def remaining(self, now: float | None = None) -> float:
        """Seconds the lease is surely still ours (by our clock; Redis may keep it longer)."""
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    def renewal_due(self, now: float | None = None) -> bool:
        """Renew once half the TTL is gone: leaves a whole half for a slow round trip."""
        return self.remaining(now) < self.ttl_ms / 2000


# Sleeps between attempts: jittered so waiters do not retry in step, never past the wait.
ACQUIRE_BACKOFF = Backoff(FIRST_DELAY_S, MAX_DELAY_S)


class _LockBase:
    def __init__(
        self,
        client: Any,
        keys: Keys,
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.name = name
        self.ttl_ms = ttl_ms
        self.wait_s = wait_s
        self.key = lock_key(keys, name)
        self.fence_key = fence_key(keys, name)
        self._acquire = client.register_script(lua_source("lock_acquire"))
        self._extend = client.register_script(lua_source("lock_extend"))
        self._release = client.register_script(lua_source("lock_release"))
        self._client = client
        self.lease: Lease | None = None

    def _require(self) -> Lease:
        if self.lease is None:
            raise LockLost(f"lock {self.name} is not held")
        return self.lease


class DistributedLock(_LockBase):
    """Blocking (bounded) lock for synchronous callers.

    >>> with DistributedLock(client, keys, "stock:W1") as lease:
    ...     apply_changes(..., fence=lease.fence)
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        super().__init__(client, keys, name, ttl_ms=ttl_ms, wait_s=wait_s)

    def try_acquire(self) -> Lease | None:
        """One attempt, no waiting."""
        owner = new_owner()
        started = time.monotonic()
        fence = int(self._acquire(keys=[self.key, self.fence_key], args=[owner, self.ttl_ms]))
        if not fence:
            return None
        self.lease = Lease(self.name, owner, fence, self.ttl_ms, started)
        return self.lease

    def acquire(self, wait_s: float | None = None) -> Lease | None:
        """Retry with backoff until acquired or ``wait_s`` (default: the lock's) is spent."""
        lease = self.try_acquire()
        for delay in ACQUIRE_BACKOFF.delays(self.wait_s if wait_s is None else wait_s):
            if lease is not None:
                break
            time.sleep(delay)
            lease = self.try_acquire()
        return lease

    def extend(self) -> bool:
        """A full TTL again, if still the owner. False means the lease is gone: stop writing."""
        lease = self._require()
        started = time.monotonic()
        if int(self._extend(keys=[self.key], args=[lease.owner, self.ttl_ms])):
            self.lease = Lease(lease.name, lease.owner, lease.fence, self.ttl_ms, started)
            return True
        self.lease = None
        return False

    def renew_if_due(self) -> Lease:
        """Cheap to call in a loop: extends only past half the TTL; raises LockLost if gone."""
        lease = self._require()
        if lease.renewal_due() and not self.extend():
            raise LockLost(f"lock {self.name} lapsed (fence {lease.fence})")
        return self._require()

    def release(self) -> bool:
        """Only the owner's key is deleted; False if the lease had lapsed already."""
        if self.lease is None:
            return False
        owner, self.lease = self.lease.owner, None
        return bool(int(self._release(keys=[self.key], args=[owner])))

    def holder(self) -> str | None:
        """Owner token of whoever holds the lock now (diagnostics only)."""
        value = self._client.get(self.key)
        return None if value is None else str(value)

    def __enter__(self) -> Lease:
        lease = self.acquire()
        if lease is None:
            holder = self.holder()
            raise LockTimeout(f"lock {self.name} still held by {holder} after {self.wait_s}s")
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.lease is not None and not self.release():
            log.warning("lock %s had lapsed before release", self.name)


class AsyncDistributedLock(_LockBase):
    """The same lock for asyncio code (workers); ``async with`` acquires and releases."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        name: str,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        super().__init__(client, keys, name, ttl_ms=ttl_ms, wait_s=wait_s)

    async def try_acquire(self) -> Lease | None:
        owner = new_owner()
        started = time.monotonic()
        fence = int(await self._acquire(keys=[self.key, self.fence_key], args=[owner, self.ttl_ms]))
        if not fence:
            return None
        self.lease = Lease(self.name, owner, fence, self.ttl_ms, started)
        return self.lease

    async def acquire(self, wait_s: float | None = None) -> Lease | None:
        lease = await self.try_acquire()
        for delay in ACQUIRE_BACKOFF.delays(self.wait_s if wait_s is None else wait_s):
            if lease is not None:
                break
            await asyncio.sleep(delay)
            lease = await self.try_acquire()
        return lease

    async def extend(self) -> bool:
        lease = self._require()
        started = time.monotonic()
        if int(await self._extend(keys=[self.key], args=[lease.owner, self.ttl_ms])):
            self.lease = Lease(lease.name, lease.owner, lease.fence, self.ttl_ms, started)
            return True
        self.lease = None
        return False

    async def renew_if_due(self) -> Lease:
        lease = self._require()
        if lease.renewal_due() and not await self.extend():
            raise LockLost(f"lock {self.name} lapsed (fence {lease.fence})")
        return self._require()

    async def release(self) -> bool:
        if self.lease is None:
            return False
        owner, self.lease = self.lease.owner, None
        return bool(int(await self._release(keys=[self.key], args=[owner])))

    async def holder(self) -> str | None:
        value = await self._client.get(self.key)
        return None if value is None else str(value)

    async def __aenter__(self) -> Lease:
        lease = await self.acquire()
        if lease is None:
            holder = await self.holder()
            raise LockTimeout(f"lock {self.name} still held by {holder} after {self.wait_s}s")
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.lease is not None and not await self.release():
            log.warning("lock %s had lapsed before release", self.name)
