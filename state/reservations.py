"""The reservation engine: all-or-nothing per order, idempotent per order, never oversells.

Each sku's stock is one Redis hash reserved by one Lua script (one hash slot: Redis Cluster
ready). An order spanning several skus is reserved as a saga inside one call of
``reserve_many``: plan on a snapshot, reserve every sku in one pipelined round trip, and if any
sku came up short (another worker got there first), undo the skus that succeeded and plan
again. A crash between the steps leaves per-sku reservations the next delivery of the same
input finds (``existing``) and completes or undoes, so the order still ends all-or-nothing.
Why scripts and not locks: docs/decisions/0003-lua-for-reservations.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import redis.asyncio as aioredis

from state.allocation import (
    Available,
    Plan,
    ShortagePolicy,
    Stocked,
    format_parts,
    parse_parts,
    plan_allocation,
    take,
)
from state.channel_stock import quota_key_for
from state.keys import Keys
from state.redis import lua_source
from streams.messages import Allocation

MAX_ATTEMPTS = 4
SAGA_TTL_MS = 10_000  # a crashed worker's lease lapses well before Kafka redelivers its inputs
SAGA_WAIT_S = 2.0


class ReserveStatus(StrEnum):
    RESERVED = "reserved"  # reserved now
    EXISTING = "existing"  # reserved by an earlier delivery of the same input: returned as is
    BLOCKED = "blocked"  # the order's reservation was released for good (cancelled)
    SHORTAGE = "shortage"  # no plan fits the stock; nothing is reserved
    BUSY = "busy"  # another delivery of the same order is reserving it right now: try later


@dataclass(frozen=True)
class ReserveRequest:
    order_id: str
    quantities: dict[str, int]  # sku -> units, lines of one sku summed
    warehouses: Sequence[str]  # candidates in routing priority
    policy: ShortagePolicy = ShortagePolicy.HOLD
    shop: str = ""  # "CHANNEL/SHOP": its channel quotas apply ('' = none; state/channel_stock.py)


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReserveStatus
    allocations: list[Allocation] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in (ReserveStatus.RESERVED, ReserveStatus.EXISTING)

    @property
    def warehouses(self) -> list[str]:
        return sorted({a.warehouse for a in self.allocations})

    @property
    def warehouse(self) -> str:
        """The warehouse of a single-warehouse reservation; '' when split or empty."""
        whs = self.warehouses
        return whs[0] if len(whs) == 1 else ""


Quotas = dict[str, dict[str, str | None]]  # sku -> quota key -> field value (snapshot)


def _quota_charges(req: ReserveRequest, quotas: Quotas) -> list[tuple[str, str, int]] | None:
    """What the reserve script will charge the request's channel quotas, as (sku, key, units
    left); None when a quota cannot cover it."""
    charges = []
    for sku, qty in req.quantities.items() if req.shop else ():
        key = quota_key_for(req.shop, quotas.get(sku, {}))
        if key is not None:
            left = int(str(quotas[sku][key])) - qty
            if left < 0:
                return None
            charges.append((sku, key, left))
    return charges


def to_allocations(per_sku: dict[str, str]) -> list[Allocation]:
    return [
        Allocation(sku=sku, warehouse=wh, quantity=qty)
        for sku, text in sorted(per_sku.items())
        for wh, qty in parse_parts(text)
    ]


class StockEngine:
    """reserve / release / commit / settle, each one Lua call per sku, batched in pipelines."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._reserve = client.register_script(lua_source("stock_reserve"))
        self._release = client.register_script(lua_source("stock_release"))
        self._commit = client.register_script(lua_source("stock_commit"))
        self._settle = client.register_script(lua_source("stock_settle"))
        self._return = client.register_script(lua_source("stock_return"))
        self._short = client.register_script(lua_source("stock_short"))
        self._unlease = client.register_script(lua_source("lock_release"))

    def _sku_keys(self, sku: str) -> list[str]:
        return [self._keys.stock(sku), self._keys.ledger(sku)]

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Reservation]:
        """One result per request; an order repeated in the batch is reserved once and every
        occurrence gets that result (the snapshot is charged once).

        Each multi-sku order's saga runs under a short per-order lease, so two deliveries of one
        order (a redelivery during a consumer-group rebalance) never interleave their reserve
        and undo steps; an order whose lease another worker holds comes back BUSY. A single-sku
        order is one atomic script call and needs none.
        """
        first: dict[str, int] = {}
        for i, req in enumerate(requests):
            first.setdefault(req.order_id, i)
        results: dict[int, Reservation] = {}
        owner = uuid.uuid4().hex
        # One sku is one atomic script with nothing to undo: only multi-sku sagas need a lease.
        sagas = [oid for oid, i in first.items() if len(requests[i].quantities) > 1]
        leased = await self._lease_sagas(sagas, owner)
        try:
            pending = []
            for order_id, i in first.items():
                if order_id in leased or len(requests[i].quantities) == 1:
                    pending.append(i)
                else:
                    results[i] = Reservation(order_id, ReserveStatus.BUSY)
            for _ in range(MAX_ATTEMPTS):
                if not pending:
                    break
                pending = await self._attempt(requests, sorted(pending), results)
            for i in pending:
                results[i] = Reservation(requests[i].order_id, ReserveStatus.SHORTAGE)
        finally:
            await self._end_sagas(leased, owner)
        return [results[first[req.order_id]] for req in requests]

    def _saga_key(self, order_id: str) -> str:
        return f"{self._keys.prefix}:saga:{{{order_id}}}"

    async def _lease_sagas(self, order_ids: Sequence[str], owner: str) -> set[str]:
        """SET NX PX per order in one round trip, retrying the taken ones for a short while."""
        leased: set[str] = set()
        if not order_ids:
            return leased
        wanted = list(order_ids)
        deadline = time.monotonic() + SAGA_WAIT_S
        while wanted:
            pipe = self._client.pipeline(transaction=False)
            for oid in wanted:
                pipe.set(self._saga_key(oid), owner, nx=True, px=SAGA_TTL_MS)
            got = await pipe.execute()
            leased.update(oid for oid, ok in zip(wanted, got, strict=True) if ok)
            wanted = [oid for oid, ok in zip(wanted, got, strict=True) if not ok]
            if not wanted or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        return leased

    async def _end_sagas(self, order_ids: set[str], owner: str) -> None:
        if not order_ids:
            return
        pipe = self._client.pipeline(transaction=False)
        for oid in order_ids:
            await self._unlease(keys=[self._saga_key(oid)], args=[owner], client=pipe)
        await pipe.execute()

    async def _attempt(
        self,
        requests: Sequence[ReserveRequest],
        pending: list[int],
        results: dict[int, Reservation],
    ) -> list[int]:
        """One round: snapshot, plan, reserve every sku, undo partial orders. Returns the
        requests to try again (they lost a race for some sku)."""
        available, existing, quotas, stocked = await self._snapshot([requests[i] for i in pending])
        plans: dict[int, Plan] = {}
        stale: list[tuple[str, str]] = []  # (order, sku) left over from an interrupted saga
        for i in pending:
            req = requests[i]
            held = existing[req.order_id]
            if held and "-" in held.values():
                results[i] = Reservation(req.order_id, ReserveStatus.BLOCKED)
            elif held and set(held) == set(req.quantities):
                results[i] = Reservation(req.order_id, ReserveStatus.EXISTING, to_allocations(held))
            else:
                stale += [(req.order_id, sku) for sku in held]
                for sku, text in held.items():  # about to be undone: usable by this plan
                    for wh, qty in parse_parts(text):
                        available.setdefault(sku, {})[wh] = available[sku].get(wh, 0) + qty
                # Over its channel quota: short for good this round, no retry (the script would
                # refuse it anyway). Skipped when undoing leftovers gives quota back first.
                charges = [] if held else _quota_charges(req, quotas)
                plan = None
                if charges is not None:
                    plan = plan_allocation(
                        req.quantities, req.warehouses, available, req.policy, stocked
                    )
                if plan is None:
                    results[i] = Reservation(req.order_id, ReserveStatus.SHORTAGE)
                else:
                    take(available, plan)
                    for sku, key, left in charges or ():
                        quotas[sku][key] = str(left)
                    plans[i] = plan
        if stale:
            await self._undo(stale)
        outcome = await self._reserve_plans(requests, plans)
        retry: list[int] = []
        undo: list[tuple[str, str]] = []
        for i, per_sku in outcome.items():
            order_id = requests[i].order_id
            statuses = {status for status, _ in per_sku.values()}
            got = {sku: alloc for sku, (status, alloc) in per_sku.items() if status != "shortage"}
            if statuses <= {"reserved", "existing"} and "-" not in got.values():
                results[i] = Reservation(order_id, ReserveStatus.RESERVED, to_allocations(got))
            elif "-" in got.values():
                undo += [(order_id, sku) for sku, a in got.items() if a != "-"]
                results[i] = Reservation(order_id, ReserveStatus.BLOCKED)
            else:
                undo += [(order_id, sku) for sku in got]
                retry.append(i)
        if undo:
            await self._undo(undo)
        return retry

    async def _snapshot(
        self, requests: Sequence[ReserveRequest]
    ) -> tuple[Available, dict[str, dict[str, str]], Quotas, Stocked]:
        """Available units per sku/warehouse, this batch's existing per-sku reservations, the
        channel quotas its shops may use (sku -> quota key -> value) and where each sku is
        stocked at all (an on_hand field, even 0), in one round trip of HMGETs (never HGETALL:
        a hot sku's hash holds every open order)."""
        skus = sorted({sku for r in requests for sku in r.quantities})
        whs = sorted({wh for r in requests for wh in r.warehouses})
        orders_by_sku: dict[str, list[str]] = {sku: [] for sku in skus}
        quota_keys = sorted(
            {k for r in requests if r.shop for k in (r.shop, f"{r.shop.partition('/')[0]}/*")}
        )
        for r in requests:
            for sku in r.quantities:
                orders_by_sku[sku].append(r.order_id)
        pipe = self._client.pipeline(transaction=False)
        for sku in skus:
            fields = [f"on_hand:{wh}" for wh in whs] + [f"reserved:{wh}" for wh in whs]
            fields += [f"quota:{k}" for k in quota_keys]
            fields += [f"r:{oid}" for oid in orders_by_sku[sku]]
            pipe.hmget(self._keys.stock(sku), fields)
        available: Available = {}
        existing: dict[str, dict[str, str]] = {r.order_id: {} for r in requests}
        quotas: Quotas = {}
        stocked: dict[str, set[str]] = {}
        for sku, values in zip(skus, await pipe.execute(), strict=True):
            n, q = len(whs), len(quota_keys)
            available[sku] = {
                wh: int(values[k] or 0) - int(values[n + k] or 0) for k, wh in enumerate(whs)
            }
            stocked[sku] = {wh for k, wh in enumerate(whs) if values[k] is not None}
            quotas[sku] = dict(zip(quota_keys, values[2 * n : 2 * n + q], strict=True))
            for oid, value in zip(orders_by_sku[sku], values[2 * n + q :], strict=True):
                if value is not None:
                    existing[oid][sku] = value
        return available, existing, quotas, stocked

    async def _reserve_plans(
        self, requests: Sequence[ReserveRequest], plans: dict[int, Plan]
    ) -> dict[int, dict[str, tuple[str, str]]]:
        pipe = self._client.pipeline(transaction=False)
        calls: list[tuple[int, str]] = []
        for i, plan in plans.items():
            for sku, parts in sorted(plan.items()):
                await self._reserve(
                    keys=self._sku_keys(sku),
                    args=[requests[i].order_id, format_parts(parts), requests[i].shop],
                    client=pipe,
                )
                calls.append((i, sku))
        outcome: dict[int, dict[str, tuple[str, str]]] = {i: {} for i in plans}
        if calls:
            for (i, sku), reply in zip(calls, await pipe.execute(), strict=True):
                outcome[i][sku] = (reply[0], reply[1])
        return outcome

    async def _undo(self, pairs: Sequence[tuple[str, str]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for order_id, sku in pairs:
            await self._release(keys=self._sku_keys(sku), args=[order_id, "undo"], client=pipe)
        await pipe.execute()

    async def _per_sku(
        self, script, order_id: str, skus: Sequence[str], *extra: str
    ) -> list[Allocation]:  # type: ignore[no-untyped-def]
        pipe = self._client.pipeline(transaction=False)
        for sku in skus:
            await script(keys=self._sku_keys(sku), args=[order_id, *extra], client=pipe)
        done: dict[str, str] = {}
        for sku, reply in zip(skus, await pipe.execute(), strict=True):
            if reply[0] not in ("none",):
                done[sku] = reply[1]
        return to_allocations(done)

    async def release(self, order_id: str, skus: Sequence[str]) -> list[Allocation]:
        """Cancel, unpaid timeout or failed routing: units go back, and the order can never
        reserve these skus again. Returns what was given back."""
        return await self._per_sku(self._release, order_id, sorted(set(skus)), "final")

    async def undo(self, order_id: str, skus: Sequence[str]) -> list[Allocation]:
        """Give units back but let the order reserve again (re-routing after a short pick)."""
        return await self._per_sku(self._release, order_id, sorted(set(skus)), "undo")

    async def commit(
        self, order_id: str, skus: Sequence[str], warehouse: str = ""
    ) -> list[Allocation]:
        """Shipped: reserved units (of one warehouse's parcel, or all) leave on hand and become
        sales in transit."""
        return await self._per_sku(self._commit, order_id, sorted(set(skus)), warehouse)

    async def settle(
        self,
        order_id: str,
        skus: Sequence[str],
        *,
        returned: bool = False,
        sellable: bool = True,
        warehouse: str = "",
    ) -> list[Allocation]:
        """Delivered (in transit ends) or returned (in transit ends; on hand grows if sellable)."""
        outcome = "returned" if returned else "delivered"
        return await self._per_sku(
            self._settle, order_id, sorted(set(skus)), outcome, "1" if sellable else "0", warehouse
        )

    async def receive_return(
        self, order_id: str, units: Sequence[tuple[str, str, int]], *, sellable: bool, receipt: str
    ) -> list[Allocation]:
        """Returned (sku, warehouse, units) arrive; sellable ones restock. Once per receipt id
        and sku, so a replayed receipt restocks nothing twice."""
        pipe = self._client.pipeline(transaction=False)
        for sku, wh, qty in units:
            await self._return(
                keys=self._sku_keys(sku),
                args=[order_id, wh, qty, "1" if sellable else "0", f"ret:{receipt}:{wh}"],
                client=pipe,
            )
        back = []
        for (sku, _wh, _qty), reply in zip(units, await pipe.execute(), strict=True):
            if reply[0] == "returned":
                back += [
                    Allocation(sku=sku, warehouse=wh, quantity=qty)
                    for wh, qty in parse_parts(reply[1])
                    if qty
                ]
        return back

    async def short_pick(
        self, order_id: str, skus: Sequence[str], warehouse: str, short: dict[str, int]
    ) -> list[Allocation]:
        """The warehouse lacked ``short`` units (sku -> units): those are written off, and the
        order's reservation of ``skus`` is undone so it can be reserved elsewhere."""
        pipe = self._client.pipeline(transaction=False)
        ordered = sorted(set(skus))
        for sku in ordered:
            if short.get(sku):
                await self._short(
                    keys=self._sku_keys(sku), args=[order_id, warehouse, short[sku]], client=pipe
                )
            else:
                await self._release(keys=self._sku_keys(sku), args=[order_id, "undo"], client=pipe)
        done = {
            sku: reply[1]
            for sku, reply in zip(ordered, await pipe.execute(), strict=True)
            if reply[0] != "none"
        }
        return to_allocations(done)

    async def reservation(self, order_id: str, skus: Sequence[str]) -> dict[str, str]:
        """The order's raw per-sku reservation fields (active 'WH=qty', or '-' when closed)."""
        pipe = self._client.pipeline(transaction=False)
        for sku in skus:
            pipe.hget(self._keys.stock(sku), f"r:{order_id}")
        return {
            sku: value
            for sku, value in zip(skus, await pipe.execute(), strict=True)
            if value is not None
        }
