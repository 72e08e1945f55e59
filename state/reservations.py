"""Reservations: all-or-nothing per order, idempotent per order id, one Lua call each.

Why a script and not a lock: the check (available >= wanted for every line) and the write
(reserved += wanted) must be one atomic step, and a Lua script is exactly that in Redis with one
round trip and no lock to leak. A batch of orders goes out as one pipeline, so a worker pays
one round trip per batch, not per order. See docs/decisions/0003-lua-for-reservations.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import orjson
import redis.asyncio as aioredis

from state.keys import Keys
from state.redis import lua_source
from streams.messages import Allocation


class ReserveStatus(StrEnum):
    RESERVED = "reserved"  # reserved now
    EXISTING = "existing"  # a replay: the first result is returned unchanged
    SHORTAGE = "shortage"  # no candidate warehouse can serve the whole order; nothing changed


@dataclass(frozen=True)
class ReserveRequest:
    order_id: str
    quantities: dict[str, int]  # sku -> units, lines of one sku summed
    warehouses: Sequence[str]  # candidates in priority order


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReserveStatus
    active: bool = False  # the units are still held (not released)
    allocations: list[Allocation] = field(default_factory=list)

    @property
    def warehouse(self) -> str:
        return self.allocations[0].warehouse if self.allocations else ""


def _parse(order_id: str, status: str, record: str) -> Reservation:
    if not record:
        return Reservation(order_id, ReserveStatus(status))
    data = orjson.loads(record)
    allocations = data.get("allocations") or []  # cjson encodes an empty table as {}
    return Reservation(
        order_id,
        ReserveStatus(status),
        active=data.get("status") == "reserved",
        allocations=[Allocation(**a) for a in allocations] if isinstance(allocations, list) else [],
    )


class ReservationStore:
    """The only writer of ``reserved`` figures besides stock loads."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._reserve = client.register_script(lua_source("reserve"))
        self._release = client.register_script(lua_source("release"))

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Reservation]:
        """One pipelined round trip for the whole batch; each order stays all-or-nothing."""
        if not requests:
            return []
        pipe = self._client.pipeline(transaction=False)
        for req in requests:
            skus = sorted(req.quantities)
            keys = [self._keys.reservation(req.order_id), *(self._keys.stock(s) for s in skus)]
            args: list[str | int] = [req.order_id, len(skus)]
            args += [req.quantities[s] for s in skus]
            args += skus
            args += list(req.warehouses)
            await self._reserve(keys=keys, args=args, client=pipe)
        results = await pipe.execute()
        return [
            _parse(req.order_id, status, record)
            for req, (status, record) in zip(requests, results, strict=True)
        ]

    async def release(self, order_id: str) -> Reservation:
        """Return the units; afterwards the order can never reserve again (a replay is a no-op).

        The returned reservation carries the allocations that were given back (empty when there
        was nothing to give back) so the caller can record the stock movement.
        """
        for _ in range(5):
            current = await self.get(order_id)
            stock_keys = [self._keys.stock(a.sku) for a in current.allocations] if current else []
            status, record = await self._release(
                keys=[self._keys.reservation(order_id), *stock_keys], args=[order_id]
            )
            if status == "retry":
                continue
            released = _parse(order_id, ReserveStatus.EXISTING, record)
            given_back = released.allocations if status == "released" else []
            return Reservation(
                order_id, ReserveStatus.EXISTING, active=False, allocations=given_back
            )
        raise RuntimeError(f"reservation of {order_id} kept changing during release")

    async def get(self, order_id: str) -> Reservation | None:
        raw = await self._client.get(self._keys.reservation(order_id))
        return _parse(order_id, ReserveStatus.EXISTING, raw) if raw else None
