"""The reservation engine: all-or-nothing per order, idempotent per order, never oversells.

Each sku's stock is one Redis hash reserved by one Lua script (one hash slot: Redis Cluster
ready). An order spanning several skus is reserved as a saga inside one call of
``reserve_many``: plan on a snapshot, reserve every sku in one pipelined round trip, and if any
sku came up short (another order got there first), undo the skus that succeeded and plan again.

On the order path every request carries a ``seq``: the order record saved the decision to
reserve before anything is reserved (docs/decisions/0013-decide-then-do.md), and attempt k of
the saga runs at ``seq + k``. Each sku's script decides once per (reservation, seq) and keeps
the decision, so two workers carrying out the same saved decision at once (a rebalance, a crash
and its redelivery) read the same outcome per sku and come to the same result: no lease is
needed, and an interrupted saga is finished, not doubled, by whoever comes next. The verdict
``shortage`` is only ever drawn from decisions the scripts recorded, never from a snapshot.
Why scripts and not locks: docs/decisions/0003-lua-for-reservations.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from order.allocation import (
    Available,
    Stocked,
    format_parts,
    parse_parts,
    plan_allocation,
    take,
)
from order.reservation import (
    EffectKind,
    Reservation,
    ReserveRequest,
    ReserveStatus,
    StockEffect,
    next_step,
    to_allocations,
)
from state.channel_stock import quota_key_for
from state.keys import Keys
from state.redis import lua_source
from streams.messages import Allocation

Quotas = dict[str, dict[str, str | None]]  # sku -> quota key -> field value (snapshot)


def _quota_charges(req: ReserveRequest, quotas: Quotas) -> list[tuple[str, str, int]] | None:
    """What the reserve script will charge the request's channel quotas, as (sku, key, units
    left); None when a quota cannot cover it."""
    charges: list[tuple[str, str, int]] = []
    if req.shop is None:
        return charges
    for sku, qty in req.quantities.items():
        key = quota_key_for(req.shop, quotas.get(sku, {}))
        if key is not None:
            left = int(str(quotas[sku][key])) - qty
            if left < 0:
                return None
            charges.append((sku, key, left))
    return charges


_HOLDING = frozenset({"reserved", "existing"})


def planned_nothing(per_sku: dict[str, list[str]]) -> bool:
    """Every sku's decision at this attempt was an empty plan: whoever decided first saw no way
    to serve the order (stock or quota short everywhere, in a snapshot of this very attempt).
    Final: another attempt would only find the skus sold out again, and every worker at this
    seq reads the same recorded decisions, so every one concludes the same."""
    return bool(per_sku) and all(r[3:4] == ["none"] for r in per_sku.values())


def _units(text: str) -> int:
    return sum(qty for _, qty in parse_parts(text)) if text and text != "-" else 0


class StockEngine:
    """reserve / release / commit / settle as Lua calls per sku, batched in pipelines (a
    reserve call carries every request of the batch for its sku)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._reserve = client.register_script(lua_source("stock_reserve"))
        self._release = client.register_script(lua_source("stock_release"))
        self._commit = client.register_script(lua_source("stock_commit"))
        self._settle = client.register_script(lua_source("stock_settle"))
        self._return = client.register_script(lua_source("stock_return"))
        self._short = client.register_script(lua_source("stock_short"))

    def _sku_keys(self, sku: str) -> list[str]:
        return [self._keys.stock(sku), self._keys.ledger(sku)]

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Reservation]:
        """One result per request; a reservation id repeated in the batch is reserved once and
        every occurrence gets that result (the snapshot is charged once)."""
        first: dict[str, int] = {}
        for i, req in enumerate(requests):
            first.setdefault(req.order_id, i)
        results: dict[int, Reservation] = {}
        attempts = dict.fromkeys(first.values(), 0)  # request -> attempt to run next
        while attempts:
            attempts = await self._attempt(requests, attempts, results)
        return [results[first[req.order_id]] for req in requests]

    async def _attempt(
        self,
        requests: Sequence[ReserveRequest],
        attempts: dict[int, int],
        results: dict[int, Reservation],
    ) -> dict[int, int]:
        """One round: snapshot, plan, ask every sku's script, undo partial orders. Returns the
        requests to try again, with the attempt each goes on at. Every sku of a request is asked
        even when no plan fits (with an empty plan): only the scripts' recorded decisions say
        'shortage' (module docstring). A request whose every sku recorded an empty plan is
        short at once; one that lost a race (a sku short under its plan) tries again."""
        pending = sorted(attempts)
        available, existing, quotas, stocked = await self._snapshot([requests[i] for i in pending])
        plans: dict[int, dict[str, str]] = {}
        for i in pending:
            req = requests[i]
            held = existing[req.order_id]
            if "-" in held.values():  # closed for good: the scripts will say so (blocked)
                plans[i] = dict.fromkeys(req.quantities, "")
                continue
            if set(held) == set(req.quantities) and all(
                _units(held[sku]) == qty for sku, qty in req.quantities.items()
            ):  # held already as asked: the scripts keep it; nothing more to plan or take
                plans[i] = dict(held)
                continue
            for sku, text in held.items():  # kept or replaced: usable by it
                for wh, qty in parse_parts(text):
                    available.setdefault(sku, {})[wh] = available[sku].get(wh, 0) + qty
            # Quotas this plan would charge; skipped when it keeps what is held (charged then).
            charges = [] if held else _quota_charges(req, quotas)
            plan = None
            if charges is not None:
                plan = plan_allocation(
                    req.quantities, req.warehouses, available, req.policy, stocked, req.together
                )
            if plan is not None:
                take(available, plan)
                for sku, key, left in charges or ():
                    quotas[sku][key] = str(left)
            plans[i] = {sku: format_parts(plan[sku]) if plan else "" for sku in req.quantities}
        outcome = await self._reserve_plans(requests, plans, attempts)
        retry: dict[int, int] = {}
        undo: list[tuple[ReserveRequest, str, int]] = []
        for i, per_sku in outcome.items():
            req, attempt = requests[i], attempts[i]
            statuses = {reply[0] for reply in per_sku.values()}
            got = {sku: reply[1] for sku, reply in per_sku.items() if reply[0] in _HOLDING}
            got = {sku: a for sku, a in got.items() if a}
            complete = statuses <= _HOLDING and all(
                _units(got.get(sku, "")) == qty for sku, qty in req.quantities.items()
            )
            if planned_nothing(per_sku):
                results[i] = Reservation(req.order_id, ReserveStatus.SHORTAGE)
                continue
            later = max((int(r[2]) for r in per_sku.values() if r[0] == "stale"), default=None)
            verdict = next_step(req, attempt, later)
            # Overtaken by a later decision: what this attempt reads as held may be what the
            # decision settled on and later ones built on (a parcel shipped since): never undo.
            # Otherwise every worker at this seq reads the same per-sku decisions, so undoing
            # the failed attempt's parts is what they all do (an undo runs at the seq it undoes).
            compensate = verdict is not ReserveStatus.SUPERSEDED
            if "-" in got.values():
                if compensate:
                    undo += [(req, sku, attempt) for sku, a in got.items() if a != "-"]
                results[i] = Reservation(req.order_id, ReserveStatus.BLOCKED)
                continue
            if complete:
                status = (
                    ReserveStatus.EXISTING if statuses == {"existing"} else ReserveStatus.RESERVED
                )
                results[i] = Reservation(req.order_id, status, to_allocations(got))
                continue
            if compensate:
                undo += [(req, sku, attempt) for sku in got]
            if isinstance(verdict, ReserveStatus):
                results[i] = Reservation(req.order_id, verdict)
            else:
                retry[i] = verdict
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
        quota_keys = sorted({k for r in requests if r.shop for k in (r.shop, r.shop.pool)})
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
        self,
        requests: Sequence[ReserveRequest],
        plans: dict[int, dict[str, str]],
        attempts: dict[int, int],
    ) -> dict[int, dict[str, list[str]]]:
        """Every sku of every request asked in one round trip, one script call per sku with
        the requests in order: the script's reply per request and sku (status, allocation, for
        'stale' the seq that overtook it, and a fourth part 'none' when the decision at that
        seq was an empty plan)."""
        by_sku: dict[str, list[int]] = {}
        args: dict[str, list[str]] = {}
        for i, per_sku in plans.items():
            req = requests[i]
            seq = req.attempt_seq(attempts[i])
            for sku, parts in per_sku.items():
                by_sku.setdefault(sku, []).append(i)
                args.setdefault(sku, []).extend((req.order_id, parts, req.shop or "", seq))
        outcome: dict[int, dict[str, list[str]]] = {i: {} for i in plans}
        if not by_sku:
            return outcome
        pipe = self._client.pipeline(transaction=False)
        skus = sorted(by_sku)
        for sku in skus:
            await self._reserve(keys=self._sku_keys(sku), args=args[sku], client=pipe)
        for sku, replies in zip(skus, await pipe.execute(), strict=True):
            for i, reply in zip(by_sku[sku], replies, strict=True):
                outcome[i][sku] = [str(part) for part in reply[:4]]
        return outcome

    async def _undo(self, items: Sequence[tuple[ReserveRequest, str, int]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for req, sku, attempt in items:
            await self._release(
                keys=self._sku_keys(sku),
                args=[req.order_id, "undo", req.attempt_seq(attempt)],
                client=pipe,
            )
        await pipe.execute()

    def _calls(self, effect: StockEffect) -> list[tuple[AsyncScript, str, list[str | int]]]:
        """The script calls (script, sku, args) that carry out one effect, in order."""
        seq = "" if effect.seq is None else str(effect.seq)
        skus = sorted(set(effect.skus))
        kind, ship, wh = effect.kind, effect.shipment, effect.warehouse
        if kind is EffectKind.RELEASE:
            return [(self._release, sku, [ship, "final", seq]) for sku in skus]
        if kind is EffectKind.UNDO:
            return [(self._release, sku, [ship, "undo", seq]) for sku in skus]
        if kind is EffectKind.COMMIT:  # units: what the WMS says left ('' = what is reserved)
            shipped = dict(effect.units)
            return [(self._commit, sku, [ship, wh, seq, shipped.get(sku, "")]) for sku in skus]
        if kind is EffectKind.SETTLE:
            outcome = "returned" if effect.returned else "delivered"
            sellable = "1" if effect.sellable else "0"
            return [(self._settle, sku, [ship, outcome, sellable, wh, seq]) for sku in skus]
        if kind is EffectKind.RETURN:
            sellable = "1" if effect.sellable else "0"
            marker = f"ret:{effect.receipt}:{wh}"
            return [
                (self._return, sku, [ship, wh, qty, sellable, marker, seq])
                for sku, qty in effect.units
            ]
        short = dict(effect.units)  # SHORT_PICK: missing units written off, the rest undone
        return [
            (self._short, sku, [ship, wh, short[sku], seq])
            if short.get(sku)
            else (self._release, sku, [ship, "undo", seq])
            for sku in skus
        ]

    async def apply(self, effects: Sequence[StockEffect]) -> list[list[Allocation]]:
        """Carry out effects in order, in one round trip; per effect, what each sku's script
        moved (an effect applied already, or overtaken by a later one, moves nothing)."""
        pipe = self._client.pipeline(transaction=False)
        calls = [(n, sku) for n, e in enumerate(effects) for _, sku, _ in self._calls(e)]
        for effect in effects:
            for script, sku, args in self._calls(effect):
                await script(keys=self._sku_keys(sku), args=args, client=pipe)
        moved: list[list[Allocation]] = [[] for _ in effects]
        if not calls:
            return moved
        for (n, sku), reply in zip(calls, await pipe.execute(), strict=True):
            if reply[0] != "none":
                moved[n] += [
                    Allocation(sku=sku, warehouse=wh, quantity=qty)
                    for wh, qty in parse_parts(reply[1])
                    if qty
                ]
        return moved

    async def _one(self, effect: StockEffect) -> list[Allocation]:
        return (await self.apply([effect]))[0]

    async def release(
        self, order_id: str, skus: Sequence[str], *, seq: int | None = None
    ) -> list[Allocation]:
        """Cancel, unpaid timeout or failed routing: units go back, and the order can never
        reserve these skus again. Returns what was given back."""
        return await self._one(
            StockEffect(kind=EffectKind.RELEASE, shipment=order_id, skus=tuple(skus), seq=seq)
        )

    async def undo(
        self, order_id: str, skus: Sequence[str], *, seq: int | None = None
    ) -> list[Allocation]:
        """Give units back but let the order reserve again (re-routing after a short pick)."""
        return await self._one(
            StockEffect(kind=EffectKind.UNDO, shipment=order_id, skus=tuple(skus), seq=seq)
        )

    async def commit(
        self, order_id: str, skus: Sequence[str], warehouse: str = "", *, seq: int | None = None
    ) -> list[Allocation]:
        """Shipped: reserved units (of one warehouse's parcel, or all) leave on hand and become
        sales in transit."""
        effect = StockEffect(
            kind=EffectKind.COMMIT,
            shipment=order_id,
            skus=tuple(skus),
            warehouse=warehouse,
            seq=seq,
        )
        return await self._one(effect)

    async def settle(
        self,
        order_id: str,
        skus: Sequence[str],
        *,
        returned: bool = False,
        sellable: bool = True,
        warehouse: str = "",
        seq: int | None = None,
    ) -> list[Allocation]:
        """Delivered (in transit ends) or returned (in transit ends; on hand grows if sellable)."""
        effect = StockEffect(
            kind=EffectKind.SETTLE,
            shipment=order_id,
            skus=tuple(skus),
            warehouse=warehouse,
            sellable=sellable,
            returned=returned,
            seq=seq,
        )
        return await self._one(effect)

    async def receive_return(
        self,
        order_id: str,
        warehouse: str,
        units: Sequence[tuple[str, int]],
        *,
        sellable: bool,
        receipt: str,
        seq: int | None = None,
    ) -> list[Allocation]:
        """Returned (sku, units) arrive at a warehouse; sellable ones restock. Once per receipt
        id and sku, so a replayed receipt restocks nothing twice."""
        effect = StockEffect(
            kind=EffectKind.RETURN,
            shipment=order_id,
            skus=tuple(sku for sku, _ in units),
            warehouse=warehouse,
            units=tuple(units),
            sellable=sellable,
            receipt=receipt,
            seq=seq,
        )
        return await self._one(effect)

    async def short_pick(
        self,
        order_id: str,
        skus: Sequence[str],
        warehouse: str,
        short: dict[str, int],
        *,
        seq: int | None = None,
    ) -> list[Allocation]:
        """The warehouse lacked ``short`` units (sku -> units): those are written off, and the
        order's reservation of ``skus`` is undone so it can be reserved elsewhere."""
        effect = StockEffect(
            kind=EffectKind.SHORT_PICK,
            shipment=order_id,
            skus=tuple(skus),
            warehouse=warehouse,
            units=tuple(sorted(short.items())),
            seq=seq,
        )
        return await self._one(effect)

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
