"""The stock ledger's ClickHouse side: the shipper that moves ledger entries out of the Redis
streams into ``stock_movements``, and the sums of what was shipped (``ClickHouseLedger``, the
``state.ledger.ShippedLedger`` that verify and snapshots read). The protocol and the exact
reads are explained in ``state/ledger.py``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from analytics.client import QueryClient
from analytics.facts import StockMovement
from state.keys import Keys
from state.ledger import CHUNK, Entry, StreamId, Totals, entry_time, movement_id
from state.lock import LEDGER_SHIPPER, AsyncDistributedLock, LockLost
from state.redis import lua_source

log = logging.getLogger(__name__)


def to_movement(sku: str, entry_id: str, entry: Mapping[str, str]) -> StockMovement:
    return StockMovement(
        movement_id=movement_id(sku, entry_id),
        sku=sku,
        warehouse=entry["wh"],
        kind=entry.get("kind", ""),
        on_hand_delta=int(entry.get("on_hand", 0)),
        reserved_delta=int(entry.get("reserved", 0)),
        at=entry_time(entry_id),
        ref=entry.get("ref", ""),
        inbound_delta=int(entry.get("inbound", 0)),
        sit_delta=int(entry.get("sit", 0)),
        actor=entry.get("actor", ""),
        reason=entry.get("reason", ""),
    )


# Per-sku id ranges (lo, hi] as parallel arrays: m_i is the sku's position in them. The entry
# id is what follows "<sku>/" in movement_id (skus may contain '/'). 18.16 and current.
_SHIPPED_SQL = """
SELECT m_sku, m_warehouse, count() AS n, sum(m_on_hand) AS s_on_hand,
       sum(m_reserved) AS s_reserved, sum(m_inbound) AS s_inbound, sum(m_sit) AS s_sit
FROM
(
    SELECT m_sku, m_warehouse, m_on_hand, m_reserved, m_inbound, m_sit,
           indexOf(%(skus)s, m_sku) AS m_i,
           splitByChar('-', substring(movement_id, length(m_sku) + 2)) AS m_eid,
           toUInt64(m_eid[1]) AS m_ms,
           toUInt64(m_eid[2]) AS m_seq
    FROM
    (
        SELECT movement_id, any(sku) AS m_sku, any(warehouse) AS m_warehouse,
               any(on_hand_delta) AS m_on_hand, any(reserved_delta) AS m_reserved,
               any(inbound_delta) AS m_inbound, any(sit_delta) AS m_sit
        FROM stock_movements
        WHERE sku IN %(sku_set)s{filters}
        GROUP BY movement_id
    )
)
WHERE (m_ms > arrayElement(%(lo_ms)s, m_i)
       OR (m_ms = arrayElement(%(lo_ms)s, m_i) AND m_seq > arrayElement(%(lo_seq)s, m_i)))
  AND (m_ms < arrayElement(%(hi_ms)s, m_i)
       OR (m_ms = arrayElement(%(hi_ms)s, m_i) AND m_seq <= arrayElement(%(hi_seq)s, m_i)))
GROUP BY m_sku, m_warehouse
"""


def shipped_sql(*, warehouse: bool = False, kinds: bool = False) -> str:
    """The query, optionally filtered by ``%(warehouse)s`` and ``%(kinds)s`` (a tuple)."""
    filters = (" AND warehouse = %(warehouse)s" if warehouse else "") + (
        " AND kind IN %(kinds)s" if kinds else ""
    )
    return _SHIPPED_SQL.replace("{filters}", filters)


def shipped_totals(
    ch: QueryClient,
    ranges: Mapping[str, tuple[StreamId, StreamId]],
    *,
    warehouse: str | None = None,
    kinds: Sequence[str] | None = None,
) -> dict[tuple[str, str], Totals]:
    """Sums of the movements in ClickHouse per (sku, warehouse), for entry ids in each sku's
    range (lo, hi]; duplicates (a re-shipped entry) count once."""
    out: dict[tuple[str, str], Totals] = {}
    items = sorted((sku, r) for sku, r in ranges.items() if r[1] > r[0])
    sql = shipped_sql(warehouse=warehouse is not None, kinds=bool(kinds))
    for start in range(0, len(items), CHUNK):
        chunk = items[start : start + CHUNK]
        params: dict[str, Any] = {
            "skus": [sku for sku, _ in chunk],
            "sku_set": tuple(sku for sku, _ in chunk),
            "lo_ms": [lo[0] for _, (lo, _hi) in chunk],
            "lo_seq": [lo[1] for _, (lo, _hi) in chunk],
            "hi_ms": [hi[0] for _, (_lo, hi) in chunk],
            "hi_seq": [hi[1] for _, (_lo, hi) in chunk],
        }
        if warehouse is not None:
            params["warehouse"] = warehouse
        if kinds:
            params["kinds"] = tuple(kinds)
        for sku, wh, n, on_hand, reserved, inbound, sit in ch.execute(sql, params):
            out[(sku, wh)] = Counter(
                entries=int(n),
                on_hand=int(on_hand),
                reserved=int(reserved),
                inbound=int(inbound),
                sit=int(sit),
            )
    return out


@dataclass(frozen=True)
class ClickHouseLedger:
    """The shipped part of the ledger, read from ClickHouse."""

    ch: QueryClient

    def totals(
        self,
        ranges: Mapping[str, tuple[StreamId, StreamId]],
        *,
        warehouse: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> dict[tuple[str, str], Totals]:
        return shipped_totals(self.ch, ranges, warehouse=warehouse, kinds=kinds)


class MovementWriter(Protocol):
    """What the shipper needs of analytics.sink.FactSink: returns once the rows are stored."""

    def write_stock_movements(self, movements: Iterable[StockMovement]) -> Awaitable[None]: ...


@dataclass
class ShipResult:
    acquired: bool  # False: another shipper holds the lock; nothing done
    entries: int = 0
    skus: int = 0
    batches: int = 0
    invalid: int = 0  # entries that could not be read as movements (logged, skipped)
    fence: int = 0
    lost: bool = False  # the lease lapsed mid-way: stopped before moving a cursor
    pending: bool = False  # stopped on the time or batch budget with more to ship


@dataclass
class LedgerShipper:
    """Moves ledger entries of every registered sku to ClickHouse; one at a time cluster-wide.

    Each ``ship`` call takes the lock without waiting (another worker's timer is doing the
    job), ships batches until caught up or out of budget, and releases the lock, so whichever
    worker is alive ships next and ``verify`` can take the lock between calls. A holder that
    dies keeps the lock at most ``lock_ttl_ms``.
    """

    client: aioredis.Redis
    keys: Keys
    sink: MovementWriter
    batch_entries: int = 5000
    per_sku: int = 1000  # entries of one sku per batch: a hot sku cannot starve the rest
    lock_ttl_ms: int = 15_000
    _start: int = field(default=0, repr=False)  # round-robin position in the sku list

    def __post_init__(self) -> None:
        self._advance = self.client.register_script(lua_source("ledger_advance"))

    async def ship(self, *, max_batches: int = 20, budget_s: float = 2.0) -> ShipResult:
        lock = AsyncDistributedLock(
            self.client, self.keys, LEDGER_SHIPPER, ttl_ms=self.lock_ttl_ms, wait_s=0
        )
        lease = await lock.try_acquire()
        if lease is None:
            return ShipResult(acquired=False)
        result = ShipResult(acquired=True, fence=lease.fence)
        deadline = time.monotonic() + budget_s
        try:
            while True:
                full = await self._ship_batch(lock, result)
                if not full:
                    break
                if result.batches >= max_batches or time.monotonic() >= deadline:
                    result.pending = True
                    break
        except LockLost:
            result.lost = True
            log.warning("ledger shipper lease (fence %d) lapsed; another takes over", lease.fence)
        finally:
            await lock.release()
        return result

    async def _ship_batch(self, lock: AsyncDistributedLock, result: ShipResult) -> bool:
        """One batch; True when it was full (more may be waiting)."""
        skus = sorted(await self.client.smembers(self.keys.skus))  # type: ignore[misc]
        if not skus:
            return False
        start = self._start % len(skus)
        order = skus[start:] + skus[:start]
        taken: dict[str, list[Entry]] = {}
        total = 0
        more = False  # some sku had more than we took
        resume = start
        for offset in range(0, len(order), CHUNK):
            chunk = order[offset : offset + CHUNK]
            cursors = await self.client.hmget(self.keys.ledger_cursor, chunk)  # type: ignore[misc]
            pipe = self.client.pipeline(transaction=False)
            for sku, cursor in zip(chunk, cursors, strict=True):
                low = f"({cursor}" if cursor else "-"
                pipe.xrange(self.keys.ledger(sku), min=low, count=self.per_sku)
            for k, (sku, entries) in enumerate(zip(chunk, await pipe.execute(), strict=True)):
                if not entries:
                    continue
                more = more or len(entries) >= self.per_sku
                entries = entries[: self.batch_entries - total]
                taken[sku] = entries
                total += len(entries)
                if total >= self.batch_entries:
                    resume = start + offset + k + 1
                    break
            if total >= self.batch_entries:
                break
        self._start = resume
        if not taken:
            return False

        movements = []
        for sku, entries in taken.items():
            for eid, entry in entries:
                try:
                    movements.append(to_movement(sku, eid, entry))
                except (KeyError, ValueError):
                    result.invalid += 1
                    log.error("ledger entry %s of %s is not a movement: %r", eid, sku, entry)
        await lock.renew_if_due()
        await self.sink.write_stock_movements(movements)
        lease = await lock.renew_if_due()  # a lapsed lease must not move cursors (fence too)

        args: list[Any] = [lease.fence]
        for sku, entries in taken.items():
            args += [sku, entries[-1][0]]
        status, _detail = await self._advance(keys=[self.keys.ledger_cursor], args=args)
        if status != "ok":
            raise LockLost(f"cursor write refused: fence {lease.fence} is stale")
        pipe = self.client.pipeline(transaction=False)
        for sku, entries in taken.items():
            pipe.xtrim(self.keys.ledger(sku), minid=entries[-1][0], approximate=False)
        await pipe.execute()
        result.entries += total
        result.skus += len(taken)
        result.batches += 1
        return more or total >= self.batch_entries
