"""Order records in Redis: the authoritative state of every order the OMS has seen.

Kafka topics (and Faust changelogs) vanish when the local broker restarts, so the state that
decides what a replay does lives here. A record also keeps the messages each recent input
produced (its outbox): when a crash makes Kafka redeliver an input, the worker re-emits those
same messages (same ids) instead of deciding again. See docs/decisions/0001-at-least-once.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from state.allocation import ShortagePolicy
from state.keys import Keys
from state.redis import lua_source
from state.reservations import MAX_ATTEMPTS, ReserveRequest, StockEffect
from streams.messages import (
    AfterSalesKind,
    Allocation,
    CommandKind,
    CommandLine,
    EventKind,
    OrderState,
)
from streams.models import Address, Money, Order, OrderLine

OUTBOX_INPUTS = 16  # recent inputs whose outputs are kept for re-emission on replay
APPLIED_INPUTS = 256  # inputs recognised as applied beyond the outbox (digests)
# The trail kept in the record: the first entries (how the order began) and the latest ones;
# what falls between is counted in ``history_dropped`` (every event is in ClickHouse anyway).
HISTORY_HEAD = 20
HISTORY_MAX = 200
MAX_REASON = 200  # a history entry's reason (codes and ids; free text is clipped)
# Fences of an order's stock effects (docs/decisions/0013-decide-then-do.md): the decision
# saved as record version V numbers its effects V * FENCE_STRIDE + j, its reservation saga's
# attempts from V * FENCE_STRIDE + RESERVE_FENCE on.
FENCE_STRIDE = 64
RESERVE_FENCE = 16
# A decision's seqs: effects 0..15, its reservation's attempts 16..19, the fallback's 20..23;
# the next decision starts at the next multiple of 64. Overlap would let one decision's
# scripts answer for another's.
if RESERVE_FENCE + 2 * MAX_ATTEMPTS > FENCE_STRIDE:
    raise ValueError("a decision's seqs would overlap the next decision's")
# A decision's stock work is normally done within its batch; older than this, its worker died
# (the pending sweeper in agents/timers.py finishes it; verify reports it past twice this).
PENDING_GRACE_S = 30.0


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    event_id: str
    kind: EventKind
    from_state: OrderState | None = None
    to_state: OrderState | None = None
    reason: str = Field(default="", max_length=MAX_REASON)
    at: AwareDatetime
    actor: str = "system"
    repeats: int = 0  # the same note came this many more times (re-pushes, refusals)


class CommandStatus(StrEnum):
    SENT = "sent"
    ACCEPTED = "accepted"
    PICKED = "picked"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"  # the WMS confirmed nothing left (cancel/intercept succeeded)
    SUPERSEDED = "superseded"  # replaced by a re-sent outbound (short pick, exception)
    FAILED = "failed"  # short pick or exception: no longer being worked
    DONE = "done"  # a return inbound whose units all came back


LIVE_OUTBOUND = frozenset({CommandStatus.SENT, CommandStatus.ACCEPTED, CommandStatus.PICKED})


class CommandRef(BaseModel):
    """A command sent to the WMS for this order, and what the WMS has said about it since."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    kind: CommandKind
    warehouse: str
    shipment: str  # the reservation it fulfils: the order id, or an exchange's own id
    status: CommandStatus = CommandStatus.SENT
    attempt: int = 1
    carrier: str = ""
    tracking_number: str = ""
    lines: list[CommandLine] = Field(default_factory=list)
    primary: str = ""  # the order whose key carries a merged command ('' = this order)
    refers_to: str = ""


class AfterSalesEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    kind: AfterSalesKind
    line_ids: list[str] = Field(default_factory=list)
    status: str = "open"  # open | done | refused
    amount: Money | None = None
    exchange_sku: str = ""
    shipment: str = ""  # exchange: the replacement's reservation id


class Then(StrEnum):
    """What a reservation leads to once it is known (a saved decision's continuation)."""

    ROUTE = "route"  # carrier and release to the WMS, or hold / reject when short
    EXCHANGE = "exchange"  # an after-sales exchange's replacement ships, or is refused


class ReserveIntent(BaseModel):
    """A decision to reserve, saved before anything is reserved."""

    model_config = ConfigDict(extra="forbid")

    shipment: str  # reservation id: the order, or an exchange's own id
    quantities: dict[str, int]
    warehouses: list[str]
    policy: ShortagePolicy = ShortagePolicy.HOLD
    shop: str = ""
    fallback: dict[str, int] | None = None  # the order without its gifts, tried when short
    then: Then = Then.ROUTE
    request_id: str = ""  # EXCHANGE: the after-sales request
    reason: str = ""  # EXCHANGE: what the buyer gave as the reason

    def requests(self, version: int) -> tuple[ReserveRequest, ReserveRequest | None]:
        """The saga's request, and the fallback's, fenced by the version that saved them."""
        base = version * FENCE_STRIDE + RESERVE_FENCE
        first = ReserveRequest(
            self.shipment,
            self.quantities,
            tuple(self.warehouses),
            self.policy,
            shop=self.shop,
            seq=base,
            seq_limit=(version + 1) * FENCE_STRIDE,
        )
        if self.fallback is None:
            return first, None
        return first, replace(first, quantities=self.fallback, seq=base + MAX_ATTEMPTS)


class Pending(BaseModel):
    """What a saved decision still has to do to stock: its effects (fenced by the saved
    version) and a reservation whose outcome decides what happens next. Carried out by whoever
    loads the record next (the deciding worker at once, a redelivery, any later input, or the
    pending sweeper), always before anything else is decided about the order."""

    model_config = ConfigDict(extra="forbid")

    input_id: str  # whose outputs the continuation adds to
    actor: str = "system"
    effects: list[StockEffect] = Field(default_factory=list)
    reserve: ReserveIntent | None = None


class OrderRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    state: OrderState
    order: Order
    fingerprint: str
    version: int = 0  # CAS counter, maintained by the save script
    warehouse: str = ""
    allocations: list[Allocation] = Field(default_factory=list)
    hold_reason: str = ""
    reject_reason: str = ""
    duplicates: int = 0
    ship_to: Address | None = None  # an after-sales address change; else the order's address
    carrier: str = ""
    weight_g: int = 0
    gift_lines: list[OrderLine] = Field(default_factory=list)
    commands: list[CommandRef] = Field(default_factory=list)
    merge_group: str = ""  # set while the order waits in its merge window
    merged_with: list[str] = Field(default_factory=list)  # every order of its merged shipment
    excluded_warehouses: list[str] = Field(default_factory=list)  # short-picked there
    aftersales: list[AfterSalesEntry] = Field(default_factory=list)
    refunded: Money = Decimal("0")
    merge_due: float = 0.0  # unix seconds its merge window closes (while merge_group is set)
    close_due: float = 0.0  # unix seconds its after-sales window ends (once delivered)
    history: list[HistoryEntry] = Field(default_factory=list)
    last_seq: int = 0  # seq of the newest event (the history may be compacted)
    history_dropped: int = 0  # entries left out of the middle of the trail (HISTORY_MAX)
    # Inputs whose outputs are kept for their redeliveries, newest last: each input's outputs
    # are the field out:<input id> of the order's hash, beside the record, not in it (saved once,
    # read only on a redelivery: OrderStore.outputs).
    outbox: list[str] = Field(default_factory=list)
    applied: list[str] = Field(default_factory=list)  # digests of inputs applied, newest last
    pending: Pending | None = None  # a saved decision's stock work not yet known done

    @property
    def next_seq(self) -> int:
        return max(self.last_seq, len(self.history)) + 1

    def add_history(self, entry: HistoryEntry) -> None:
        """Append to the trail: a note repeating the last one is counted on it, and the
        trail keeps its head and its newest entries (``HISTORY_MAX``)."""
        self.last_seq = entry.seq
        last = self.history[-1] if self.history else None
        if (
            last is not None
            and entry.to_state is None
            and last.to_state is None
            and (last.kind, last.reason, last.actor) == (entry.kind, entry.reason, entry.actor)
        ):
            last.repeats += 1
            return
        self.history.append(entry)
        if len(self.history) > HISTORY_MAX:
            del self.history[HISTORY_HEAD]
            self.history_dropped += 1

    @property
    def address(self) -> Address:
        """Where the goods go: an after-sales change wins over what the channel sent."""
        return self.ship_to or self.order.address

    @property
    def lines(self) -> list[OrderLine]:
        """What ships: the channel's lines and the gifts promotions added."""
        return [*self.order.lines, *self.gift_lines]

    @property
    def quantities(self) -> dict[str, int]:
        """Units per sku of the order's own reservation, gifts included."""
        totals: dict[str, int] = {}
        for line in self.lines:
            totals[line.sku] = totals.get(line.sku, 0) + line.quantity
        return totals

    def live_commands(self, kind: CommandKind = CommandKind.OUTBOUND) -> list[CommandRef]:
        return [c for c in self.commands if c.kind is kind and c.status in LIVE_OUTBOUND]

    def command(self, command_id: str) -> CommandRef | None:
        return next((c for c in self.commands if c.command_id == command_id), None)

    @field_validator("outbox", mode="before")
    @classmethod
    def _outbox_ids(cls, value: Any) -> Any:
        """Records saved before the outputs moved beside the record kept them in it: their
        input ids are what is still known (those outputs are not re-sent any more)."""
        return list(value) if isinstance(value, dict) else value

    def remember_outputs(self, input_id: str) -> list[str]:
        """Note that an input's outputs are kept (a decision's continuation adds to its
        entry), and its digest for redeliveries beyond; returns the inputs whose kept outputs
        are dropped now (the oldest beyond OUTBOX_INPUTS)."""
        if input_id not in self.outbox:
            self.outbox.append(input_id)
        dropped = self.outbox[:-OUTBOX_INPUTS]
        del self.outbox[:-OUTBOX_INPUTS]
        digest = input_digest(input_id)
        if digest not in self.applied:
            self.applied.append(digest)
            del self.applied[:-APPLIED_INPUTS]
        return dropped

    def has_applied(self, input_id: str) -> bool:
        """Applied before, even if its outputs left the outbox since."""
        return input_id in self.outbox or input_digest(input_id) in self.applied


def input_digest(input_id: str) -> str:
    return hashlib.blake2b(input_id.encode(), digest_size=8).hexdigest()


def effect_seq(version: int, index: int) -> int:
    """The fence of the ``index``-th stock effect of the decision saved as ``version``."""
    if not 0 <= index < RESERVE_FENCE:
        raise ValueError(f"a decision has at most {RESERVE_FENCE} stock effects")
    return version * FENCE_STRIDE + index


NEEDS_A_PERSON = frozenset({OrderState.HELD, OrderState.EXCEPTION})
# Goods with the buyer and money settled: closed when the after-sales window ends.
CLOSABLE = frozenset({OrderState.DELIVERED, OrderState.RETURNED, OrderState.REFUNDED})


def index_args(record: OrderRecord, now: float) -> list[str | float]:
    """What the save script files the record under: held list, close timer, merge window,
    stock work pending."""
    held = "1" if record.state in NEEDS_A_PERSON else "0"
    closing = f"{record.close_due:.3f}" if record.state in CLOSABLE and record.close_due else ""
    merge = ""
    if record.merge_group:
        waiting = record.state is OrderState.ROUTED
        merge = f"join:{record.merge_due:.3f}" if waiting else "leave"
    return [held, now, closing, merge, "1" if record.pending else "0"]


Output = tuple[str, str, str]  # topic, key, value JSON


@dataclass(frozen=True)
class Save:
    """One record to CAS-save: ``expected`` version, and what the saving input adds to the
    outputs kept beside it (``input_id``'s entry) and drops (the inputs in ``dropped``)."""

    record: OrderRecord
    expected: int
    input_id: str = ""
    outputs: Sequence[Output] = ()
    dropped: Sequence[str] = ()


def encode_outputs(outputs: Sequence[Output]) -> str:
    """One JSON array per line: the save script appends lines to an input's entry."""
    return "\n".join(orjson.dumps(list(output)).decode() for output in outputs)


def decode_outputs(text: str | None) -> list[Output] | None:
    if text is None:
        return None
    return [tuple(orjson.loads(line)) for line in text.split("\n") if line]  # type: ignore[misc]


@dataclass(frozen=True)
class LoadedRecord:
    record: OrderRecord | None
    version: int  # 0 when the order is new
    doc: str = ""  # the stored JSON the record was parsed from
    done: int = 0  # the version whose pending stock work is known carried out

    @property
    def unsettled(self) -> bool:
        """A saved decision's stock work may not have been carried out yet."""
        return (
            self.record is not None
            and self.record.pending is not None
            and (self.done != self.version)
        )

    def private_copy(self) -> OrderRecord:
        """A copy to change (a lost race must leave the loaded one intact): parsed again from
        the stored JSON, three times cheaper than a deep model copy."""
        assert self.record is not None
        return (
            OrderRecord.model_validate_json(self.doc)
            if self.doc
            else self.record.model_copy(deep=True)
        )


class OrderStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._save = client.register_script(lua_source("save_order"))
        self._settled = client.register_script(lua_source("settle_order"))

    async def load_many(self, order_ids: Sequence[str]) -> dict[str, LoadedRecord]:
        pipe = self._client.pipeline(transaction=False)
        for oid in order_ids:
            pipe.hmget(self._keys.order(oid), ["version", "doc", "done"])
        out: dict[str, LoadedRecord] = {}
        for oid, (version, doc, done) in zip(order_ids, await pipe.execute(), strict=True):
            record = OrderRecord.model_validate_json(doc) if doc else None
            out[oid] = LoadedRecord(record, int(version or 0), doc or "", int(done or 0))
        return out

    async def mark_settled(self, items: Sequence[tuple[str, int]]) -> None:
        """(order id, version): that version's pending stock work is carried out (only if it
        is still the saved version), and the order leaves the pending index."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for oid, version in items:
            keys = [self._keys.order(oid), self._keys.pending]
            await self._settled(keys=keys, args=[version, oid], client=pipe)
        await pipe.execute()

    async def pending_since(self, before: float, limit: int) -> list[tuple[str, float]]:
        """(order, since) of the orders whose stock work has been pending since before
        ``before`` (unix seconds)."""
        found = await self._client.zrangebyscore(
            self._keys.pending, "-inf", before, 0, limit, withscores=True
        )
        return [(oid, float(since)) for oid, since in found]

    async def load(self, order_id: str) -> OrderRecord | None:
        return (await self.load_many([order_id]))[order_id].record

    async def save_many(self, items: Sequence[tuple[OrderRecord, int]]) -> list[bool]:
        """CAS-save (record, expected version) pairs in one round trip; False = lost a race."""
        return await self.save_groups([[Save(record, expected)] for record, expected in items])

    async def save_groups(self, groups: Sequence[Sequence[Save]]) -> list[bool]:
        """CAS-save groups of records in one round trip: each group lands whole or not at all
        (a merged shipment moves all its orders at once), with the outputs each input added
        and the dropped inputs' outputs gone. One bool per group."""
        pipe = self._client.pipeline(transaction=False)
        now = time.time()
        for group in groups:
            keys: list[str] = []
            args: list[str | int | float] = []
            for save in group:
                record = save.record
                record.version = save.expected + 1
                keys += self._index_keys(record)
                args += [
                    save.expected,
                    record.model_dump_json(),
                    record.order_id,
                    *index_args(record, now),
                    save.input_id,
                    encode_outputs(save.outputs),
                    orjson.dumps(save.dropped).decode(),
                ]
            await self._save(keys=keys, args=args, client=pipe)
        return [bool(r) for r in await pipe.execute()]

    async def outputs(self, wanted: Sequence[tuple[str, str]]) -> list[list[Output] | None]:
        """(order id, input id) -> what that input produced, or None when no longer kept."""
        if not wanted:
            return []
        pipe = self._client.pipeline(transaction=False)
        for oid, input_id in wanted:
            pipe.hget(self._keys.order(oid), f"out:{input_id}")
        return [decode_outputs(text) for text in await pipe.execute()]

    def _index_keys(self, record: OrderRecord) -> list[str]:
        k = self._keys
        return [
            k.order(record.order_id),
            k.external(record.order.channel.value, record.order.external_id),
            k.held,
            k.closing,
            k.merge_group(record.merge_group or "-"),
            k.merge_due,
            k.pending,
        ]

    async def find(self, ref: str) -> list[OrderRecord]:
        """An OMS order id, or ``CHANNEL:EXTERNAL_ID`` (several shops may share a number)."""
        if ":" in ref:
            channel, external_id = ref.split(":", 1)
            ids = sorted(
                await self._client.smembers(self._keys.external(channel.lower(), external_id))
            )
        else:
            ids = [ref]
        loaded = await self.load_many(ids)
        return [lr.record for lr in loaded.values() if lr.record]

    async def held_ids(self, limit: int = 1000, since: float = 0.0, offset: int = 0) -> list[str]:
        """Held orders, oldest hold first; ``since`` (unix seconds) skips older holds, ``offset``
        pages on."""
        return list(
            await self._client.zrangebyscore(
                self._keys.held, since or "-inf", "+inf", offset, limit
            )
        )
