"""Order records in Redis: the authoritative state of every order the OMS has seen.

Kafka topics (and Faust changelogs) vanish when the local broker restarts, so the state that
decides what a replay does lives here. A record also keeps the messages each recent input
produced (its outbox): when a crash makes Kafka redeliver an input, the worker re-emits those
same messages (same ids) instead of deciding again. See docs/decisions/0001-at-least-once.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import orjson
import redis.asyncio as aioredis

from order.deadlines import DUE_SOON_S, head_start_s
from order.lifecycle import CLOSABLE, NEEDS_A_PERSON, TO_SHIP
from order.reasons import Reason
from order.record import OrderRecord, Output
from state.keys import Keys
from state.redis import lua_source, scored, texts
from streams.messages import OrderState
from streams.models import json_with_order


def held_as_unpaid(record: OrderRecord) -> bool:
    """Waiting for a person because the buyer has not paid: what the unpaid index files."""
    return record.state in NEEDS_A_PERSON and record.hold_reason == Reason.UNPAID


def held_out_of_stock(record: OrderRecord) -> bool:
    """A backorder: waiting for stock, which the retry timer (agents/timers.py) watches."""
    return record.state is OrderState.HELD and record.hold_reason == Reason.OUT_OF_STOCK


def backorder_entry(record: OrderRecord, held_at: float) -> tuple[float, str] | None:
    """(score, JSON units per sku) of a backorder, None for any other order: scored by the
    hold time less the order's priority head start (order/deadlines.py), so higher
    priorities and older holds are retried first."""
    if not held_out_of_stock(record):
        return None
    return held_at - head_start_s(record.priority), orjson.dumps(record.quantities).decode()


def backorder_arg(record: OrderRecord, now: float) -> str:
    """'' or '<score> <JSON units per sku>': the save script's backorder argument."""
    entry = backorder_entry(record, now)
    return f"{entry[0]:.3f} {entry[1]}" if entry else ""


def deadline_arg(record: OrderRecord) -> str:
    """The ship-by deadline the deadline index files a still-to-ship order under, else ''."""
    return f"{record.ship_by:.3f}" if record.ship_by and record.state in TO_SHIP else ""


def index_args(record: OrderRecord, now: float) -> list[str | float]:
    """What the save script files the record under: held list, close timer, merge window,
    stock work pending (the backorder and deadline indexes go last, after the outputs)."""
    held = "u" if held_as_unpaid(record) else "1" if record.state in NEEDS_A_PERSON else "0"
    closing = f"{record.close_due:.3f}" if record.state in CLOSABLE and record.close_due else ""
    merge = ""
    if record.merge_group:
        merge = f"join:{record.merge_due:.3f}" if record.in_merge_window else "leave"
    return [held, now, closing, merge, "1" if record.pending else "0"]


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
    """One line per output, which the save script appends to an input's entry: the topic and
    key as a JSON array, a tab, then the value as it is (a message's JSON has no raw newline,
    so it is not escaped again: a value would otherwise be stored as JSON inside JSON). A value
    with a raw newline is stored as the older form, one JSON array of all three."""
    return "\n".join(
        orjson.dumps(list(output)).decode()
        if "\n" in output[2]
        else f"{orjson.dumps(output[:2]).decode()}\t{output[2]}"
        for output in outputs
    )


def decode_outputs(text: str | None) -> list[Output] | None:
    """Both line forms: the JSON array form has no raw tab (JSON escapes it)."""
    if text is None:
        return None
    return [_decode_output(line) for line in text.split("\n") if line]


def _decode_output(line: str) -> Output:
    head, tab, value = line.partition("\t")
    if not tab:
        topic, key, value = orjson.loads(line)
        return (topic, key, value)
    topic, key = orjson.loads(head)
    return (topic, key, value)


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
        return [(oid, float(since)) for oid, since in scored(found)]

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
                    json_with_order(record),
                    record.order_id,
                    *index_args(record, now),
                    save.input_id,
                    encode_outputs(save.outputs),
                    orjson.dumps(save.dropped).decode(),
                    backorder_arg(record, now),
                    deadline_arg(record),
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
            k.unpaid,
            k.backorders,
            k.backorder_skus,
            k.deadlines,
        ]

    async def find(self, ref: str) -> list[OrderRecord]:
        """An OMS order id, or ``CHANNEL:EXTERNAL_ID`` (several shops may share a number)."""
        if ":" in ref:
            channel, external_id = ref.split(":", 1)
            members = await self._client.smembers(self._keys.external(channel.lower(), external_id))
            ids = sorted(texts(members))
        else:
            ids = [ref]
        loaded = await self.load_many(ids)
        return [lr.record for lr in loaded.values() if lr.record]

    async def index_unpaid(self, page: int = 1000) -> int:
        """File the held orders missing from the unpaid and backorder indexes, scored by their
        hold time (NX): records saved before those indexes existed are in the held index only.
        Returns how many were filed. Safe while workers save (each save files or unfiles its
        order itself); ZSCAN returns every order held throughout the scan."""
        filed, cursor = 0, 0
        while True:
            cursor, held = await self._client.zscan(self._keys.held, cursor, count=page)
            if held:
                filed += await self._file_held(scored(held))
            if not cursor:
                return filed

    async def _file_held(self, held: Sequence[tuple[str, float]]) -> int:
        loaded = await self.load_many([oid for oid, _ in held])
        unpaid, backorders = {}, {}
        for oid, since in held:
            record = loaded[oid].record
            if record is not None and held_as_unpaid(record):
                unpaid[oid] = since
            elif record is not None and (entry := backorder_entry(record, since)):
                backorders[oid] = entry
        filed = 0
        if unpaid:
            filed += cast(int, await self._client.zadd(self._keys.unpaid, unpaid, nx=True))
        if backorders:
            scores = {oid: score for oid, (score, _) in backorders.items()}
            filed += cast(int, await self._client.zadd(self._keys.backorders, scores, nx=True))
            await self._client.hset(
                self._keys.backorder_skus,
                mapping={oid: units for oid, (_, units) in backorders.items()},
            )
        return filed

    async def queue_figures(self, now: float) -> dict[str, int]:
        """What an operator watches on a peak night, counted without loading an order: orders
        held for a person, past their ship-by deadline, due within DUE_SOON_S, backordered."""
        keys = self._keys
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(keys.held)
        pipe.zcount(keys.deadlines, "-inf", now)
        pipe.zcount(keys.deadlines, f"({now}", now + DUE_SOON_S)
        pipe.zcard(keys.backorders)
        held, late, soon, backorders = await pipe.execute()
        return {"held": held, "late": late, "due_soon": soon, "backorders": backorders}

    async def held_ids(self, limit: int = 1000, since: float = 0.0, offset: int = 0) -> list[str]:
        """Held orders, oldest hold first; ``since`` (unix seconds) skips older holds, ``offset``
        pages on."""
        held = await self._client.zrangebyscore(
            self._keys.held, since or "-inf", "+inf", offset, limit
        )
        return texts(held)
