"""The stock ledger: per-sku Redis streams shipped to ClickHouse (analytics/ledger.py), and exact
reads across both.

Every stock script appends its movements to ``<prefix>:ledger:{sku}`` in the same atomic step
as the change. The shipper moves them to ClickHouse ``stock_movements`` and then trims the
streams, so Redis memory stays bounded while the full history lives in ClickHouse.

Shipping protocol (per batch, under the ``ledger-shipper`` lock):
1. read entries after each sku's cursor (hash ``ledger_cursor``: sku -> last shipped id);
2. insert them (``movement_id = <sku>/<entry id>``: a re-insert collapses in the
   ReplacingMergeTree and every query groups by movement_id, so re-shipping is harmless);
3. advance the cursors (``ledger_advance.lua``: only forward, refused for a stale fencing
   token);
4. trim each stream below its cursor (XTRIM MINID keeps the cursor entry itself, so a stream
   that ever had an entry keeps its newest one: see ``read_ledgers``).
A crash anywhere repeats at most steps 2-4 for the same entries.

Exact reads (``read_ledgers``): what happened to a sku = ClickHouse entries up to the cursor +
stream entries after it. The cursor is read *after* the sku's hash and stream (those two in one
MULTI: same hash slot), and the ClickHouse part is cut at the newest entry id seen with the
hash. Everything up to the cursor was inserted before the cursor moved; nothing after it was
trimmed; so the two parts neither miss nor double an entry even while the shipper runs, and
the hash matches exactly the entries counted. No lock is needed for that, and the only
atomic read is one sku's hash + stream (one slot). Batching 200 skus into one MULTI, as
below, is a single-node shortcut: on a Redis Cluster it becomes one MULTI per sku.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import redis

from state.keys import Keys

log = logging.getLogger(__name__)

FIGURES = ("on_hand", "reserved", "inbound", "sit")  # stream field names, as in common.lua
FENCE_FIELD = "|fence"  # in the cursor hash; '|' can never be part of a sku
CHUNK = 200  # skus per pipeline / ClickHouse query
# Stream entries read per sku per round trip: a ledger not shipped for a while (a million-order
# flood) holds thousands per sku, and one reply of them all outlasts a client's read timeout.
PAGE = 1000

StreamId = tuple[int, int]
ZERO: StreamId = (0, 0)


# ---------------------------------------------------------------- stream ids


def parse_id(entry_id: str) -> StreamId:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def entry_time(entry_id: str) -> datetime:
    """Redis stamps stream ids with its own clock in milliseconds: the movement's time."""
    return datetime.fromtimestamp(parse_id(entry_id)[0] / 1000, tz=UTC)


def movement_id(sku: str, entry_id: str) -> str:
    """Deterministic, so shipping an entry twice writes the same fact twice (collapsed)."""
    return f"{sku}/{entry_id}"


Totals = Counter[str]  # figure -> sum, plus "entries"


@runtime_checkable
class ShippedLedger(Protocol):
    """The part of the ledger shipped out of Redis (analytics/ledger.py: ClickHouse)."""

    def totals(
        self,
        ranges: Mapping[str, tuple[StreamId, StreamId]],
        *,
        warehouse: str | None = None,
        kinds: Sequence[str] | None = None,
    ) -> dict[tuple[str, str], Totals]:
        """Sums per (sku, warehouse) of the shipped movements with entry ids in each sku's
        range (lo, hi]; a movement shipped twice counts once."""
        ...


def require_archive(archive: object) -> None:
    """A caller handing in something else (a bare ClickHouse client) fails here, by name."""
    if archive is not None and not isinstance(archive, ShippedLedger):
        raise TypeError(
            f"expected a ShippedLedger (analytics.ledger.ClickHouseLedger), got {type(archive)}"
        )


# ---------------------------------------------------------------- exact reads (sync: CLI)

Entry = tuple[str, dict[str, str]]


@dataclass
class SkuLedger:
    """One sku as of one instant: its hash, and its movements split into shipped/unshipped."""

    sku: str
    fields: dict[str, str]  # the stock hash (or the requested fields), read with the stream
    entries: list[Entry]  # in the stream, after max(after, cursor), up to ``last``
    cursor: StreamId  # ZERO: nothing shipped yet
    last: StreamId  # newest entry id when the hash was read; ZERO: no movement ever
    after: StreamId = ZERO

    @property
    def shipped(self) -> tuple[StreamId, StreamId] | None:
        """The id range (lo, hi] whose entries are only in ClickHouse (maybe trimmed here)."""
        hi = min(self.cursor, self.last)
        return (self.after, hi) if hi > self.after else None


def read_ledgers(
    client: redis.Redis,
    keys: Keys,
    skus: Sequence[str],
    *,
    after: StreamId = ZERO,
    fields: Sequence[str] | None = None,
) -> list[SkuLedger]:
    """Hash + movements after ``after`` for each sku, consistent per sku (module docstring).

    ``fields`` reads only those hash fields (HMGET; a hot sku's hash holds every open order).
    """
    if not skus:
        return []
    before = _cursors(client, keys, skus)  # only to read less of the stream: cursors only grow
    pipe = client.pipeline(transaction=True)  # hash and stream of a sku in one step
    for sku in skus:
        if fields is None:
            pipe.hgetall(keys.stock(sku))
        else:
            pipe.hmget(keys.stock(sku), list(fields))
        start = max(after, before[sku])
        pipe.xrange(keys.ledger(sku), min=_after(start), count=PAGE)
        pipe.xrevrange(keys.ledger(sku), count=1)
    replies = pipe.execute()
    values_of: dict[str, Mapping[str, str]] = {}
    streams: dict[str, list[Entry]] = {}
    lasts: dict[str, StreamId] = {}
    for k, sku in enumerate(skus):
        raw, stream, newest = replies[3 * k : 3 * k + 3]
        values_of[sku] = (
            raw if fields is None else {f: v for f, v in zip(fields, raw, strict=True) if v}
        )
        streams[sku] = list(stream)
        lasts[sku] = parse_id(newest[0][0]) if newest else ZERO
    _read_rest(client, keys, streams, lasts)
    # Read after the rest of each stream: an entry above this cursor was never trimmed.
    cursors = _cursors(client, keys, skus)
    out = []
    for sku in skus:
        floor = max(after, cursors[sku])
        out.append(
            SkuLedger(
                sku=sku,
                fields=dict(values_of[sku]),
                entries=[(eid, e) for eid, e in streams[sku] if parse_id(eid) > floor],
                cursor=cursors[sku],
                last=lasts[sku],
                after=after,
            )
        )
    return out


def _after(start: StreamId) -> str:
    return f"({format_id(start)}" if start > ZERO else "-"


def _read_rest(
    client: redis.Redis,
    keys: Keys,
    streams: dict[str, list[Entry]],
    lasts: Mapping[str, StreamId],
) -> None:
    """Pages each stream on from its first page up to the newest entry seen with the hash, a
    page per sku per round trip. Entries up to that id never change, and the shipper trims only
    entries at or below its cursor, which is read after this (read_ledgers), so the pages
    outside the MULTI are as exact as the first: the MULTI only bounds the stream's end."""
    behind = [sku for sku, entries in streams.items() if _more(entries, lasts[sku], PAGE)]
    while behind:
        pipe = client.pipeline(transaction=False)
        for sku in behind:
            start = parse_id(streams[sku][-1][0])
            pipe.xrange(keys.ledger(sku), min=_after(start), max=format_id(lasts[sku]), count=PAGE)
        pages = pipe.execute()
        for sku, page in zip(behind, pages, strict=True):
            streams[sku].extend(page)
        behind = [
            sku for sku, page in zip(behind, pages, strict=True) if _more(page, lasts[sku], PAGE)
        ]


def _more(page: Sequence[Entry], last: StreamId, size: int) -> bool:
    """A full page that stops short of the newest entry: the stream goes on."""
    return len(page) == size and parse_id(page[-1][0]) < last


def _cursors(client: redis.Redis, keys: Keys, skus: Sequence[str]) -> dict[str, StreamId]:
    values = client.hmget(keys.ledger_cursor, list(skus))
    return {sku: parse_id(v) if v else ZERO for sku, v in zip(skus, values, strict=True)}  # type: ignore[arg-type]


def stream_totals(entries: Iterable[Entry]) -> dict[str, Totals]:
    """warehouse -> figure sums (and "entries") of stream entries."""
    out: dict[str, Totals] = {}
    for _, entry in entries:
        totals = out.setdefault(entry["wh"], Counter())
        totals["entries"] += 1
        for figure in FIGURES:
            totals[figure] += int(entry.get(figure, 0))
    return out
