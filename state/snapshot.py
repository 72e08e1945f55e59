"""Apply a full WMS stock count of one warehouse while orders keep flowing.

A count is taken at ``as_of`` and arrives later. In between, orders were reserved (units
still on the shelf: the count includes them), shipped (units gone: the count includes them
too, but they have already left on hand here) and returned or received (units arrived: the
count missed them). So for each sku the new on hand is

    counted + on-hand movements of kind commit / returned / receive after as_of

read from the ledger (stream, and ClickHouse for what the shipper already moved), while
reserved is never touched. The write is an *add* of (target - on hand as read), applied by
``stock_apply.lua`` in one step with the fencing token, so movements that land between our read
and our write are kept too, and a writer whose lock lapsed is refused ('stale_fence').

Choices an operator should know (also in state/README.md):
- target below reserved: on hand is set to reserved (available 0) and the sku is reported as a
  conflict with its shortfall. Setting the count as is would turn accepted orders into an
  oversell; cancelling orders is a business decision, not the snapshot's.
- a ``load`` or ``snapshot`` movement of the sku after as_of means a newer count is already
  applied: the sku is skipped as ``superseded`` (an old file applied late must not win).
- operator ``adjust`` movements after as_of are not carried over: the count replaces them.
- skus missing from the file are left alone unless ``zero_missing`` (then counted as 0).
- stream ids carry the Redis server's clock, ``as_of`` the WMS's: skew between the two
  shifts which movements count as "after".
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from state.keys import Keys
from state.ledger import (
    CHUNK,
    ShippedLedger,
    StreamId,
    Totals,
    parse_id,
    read_ledgers,
    require_archive,
)
from state.lock import DEFAULT_TTL_MS, DistributedLock, stock_lock_name
from state.redis import lua_source, texts
from state.stock import MAX_QTY, WHOLE_NUMBER, StockError, StockOp, known_skus

FLOW_KINDS = ("commit", "commit_unreserved", "returned", "receive")  # units that left / arrived
COUNT_KINDS = ("load", "snapshot")  # a newer count of the same sku
MAX_SEQ = 2**64 - 1
ATTEMPTS = 5  # re-reads of a sku whose reserved grew between our read and our write


class SnapshotError(StockError):
    """The snapshot cannot be applied as asked; nothing more is written."""


class StaleFence(SnapshotError):
    """A newer lock holder has written this warehouse: this snapshot must stop."""


@dataclass(frozen=True)
class SnapshotRow:
    sku: str
    counted: int
    as_of: datetime | None = None  # when this sku was counted; None: the snapshot's as_of


@dataclass(frozen=True)
class SnapshotLine:
    sku: str
    status: str  # applied | unchanged | duplicate | superseded
    counted: int = 0
    moved_after: int = 0  # on-hand flow after as_of (shipments < 0, returns/receipts > 0)
    before: int = 0  # on hand when read
    on_hand: int = 0  # on hand we set (before + the change)
    reserved: int = 0

    @property
    def target(self) -> int:
        return self.counted + self.moved_after

    @property
    def shortfall(self) -> int:
        """Units the count is short of open reservations (0: no conflict)."""
        if self.status not in ("applied", "unchanged"):
            return 0
        return max(0, self.reserved - self.target)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "status": self.status,
            "counted": self.counted,
            "moved_after": self.moved_after,
            "before": self.before,
            "on_hand": self.on_hand,
            "reserved": self.reserved,
            "shortfall": self.shortfall,
        }


@dataclass
class SnapshotResult:
    warehouse: str
    op_id: str
    fence: int
    as_of: datetime | None  # the snapshot's; rows may carry their own
    lines: list[SnapshotLine] = field(default_factory=list)

    @property
    def applied(self) -> list[SnapshotLine]:
        return [ln for ln in self.lines if ln.status == "applied"]

    @property
    def conflicts(self) -> list[SnapshotLine]:
        """Lines left at their reserved units because the count was short of them."""
        return [ln for ln in self.lines if ln.shortfall > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "warehouse": self.warehouse,
            "op_id": self.op_id,
            "fence": self.fence,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "applied": len(self.applied),
            "conflicts": [ln.to_dict() for ln in self.conflicts],
            "shortfall_units": sum(ln.shortfall for ln in self.conflicts),
            "lines": [ln.to_dict() for ln in self.lines],
        }


def snapshot_op_id(
    warehouse: str, as_of: datetime | None, rows: Sequence[SnapshotRow], zero_missing: bool
) -> str:
    """Same file, same warehouse, same as_of -> same id: applying it twice is a no-op."""
    file_ms = _as_of_ms(as_of) if as_of else 0
    digest = hashlib.sha256(f"{warehouse}|{file_ms}|{int(zero_missing)}".encode())
    for row in sorted(rows, key=lambda r: r.sku):
        row_ms = _as_of_ms(row.as_of) if row.as_of else 0
        digest.update(f"\n{row.sku}|{row.counted}|{row_ms}".encode())
    return f"snapshot:{digest.hexdigest()[:24]}"


def apply_snapshot(
    client: redis.Redis,
    keys: Keys,
    warehouse: str,
    rows: Sequence[SnapshotRow],
    as_of: datetime | None,
    *,
    archive: ShippedLedger | None = None,
    zero_missing: bool = False,
    op_id: str | None = None,
    lock_wait_s: float = 10.0,
    lock_ttl_ms: int = DEFAULT_TTL_MS,
) -> SnapshotResult:
    """Take the ``stock:<warehouse>`` lock (bounded wait: LockTimeout) and apply the count.

    ``archive`` (analytics/ledger.py) is needed once movements after ``as_of`` have been shipped
    to ClickHouse (SnapshotError otherwise: checked before the first write, and again per batch
    in case the shipper moves on meanwhile; a rerun with the same file is a no-op for skus
    done)."""
    require_archive(archive)
    lock = DistributedLock(
        client, keys, stock_lock_name(warehouse), ttl_ms=lock_ttl_ms, wait_s=lock_wait_s
    )
    with lock as lease:
        return apply_snapshot_fenced(
            client,
            keys,
            warehouse,
            rows,
            as_of,
            fence=lease.fence,
            renew=lock.renew_if_due,
            archive=archive,
            zero_missing=zero_missing,
            op_id=op_id,
        )


def apply_snapshot_fenced(
    client: redis.Redis,
    keys: Keys,
    warehouse: str,
    rows: Sequence[SnapshotRow],
    as_of: datetime | None,
    *,
    fence: int,
    renew: Callable[[], object] | None = None,
    archive: ShippedLedger | None = None,
    zero_missing: bool = False,
    op_id: str | None = None,
) -> SnapshotResult:
    """The snapshot under a lease the caller holds: ``fence`` is its token and ``renew``
    (raising LockLost) is called between steps. Split out so a caller already holding the
    lock (a recount spanning several steps) and the tests can drive it."""
    counted, counted_at = _check_rows(rows, as_of, zero_missing)
    op_id = op_id or snapshot_op_id(warehouse, as_of, rows, zero_missing)
    result = SnapshotResult(warehouse, op_id, fence, as_of)
    if zero_missing and as_of is not None:
        missing = _stocked_skus(client, keys, warehouse) - set(counted)
        counted_at |= dict.fromkeys(missing, _as_of_ms(as_of))
    if archive is None:
        _require_unshipped(client, keys, counted_at)
    by_time: dict[int, list[str]] = {}
    for sku in sorted(counted_at):
        by_time.setdefault(counted_at[sku], []).append(sku)
    script = client.register_script(lua_source("stock_apply"))
    for at_ms, skus in sorted(by_time.items()):
        after: StreamId = (at_ms, MAX_SEQ)  # ids strictly after the as_of millisecond
        for start in range(0, len(skus), CHUNK):
            pending = skus[start : start + CHUNK]
            for _ in range(ATTEMPTS):
                if renew is not None:
                    renew()
                pending = _apply_chunk(
                    client, keys, script, result, pending, counted, after, archive, fence
                )
                if not pending:
                    break
            if pending:
                raise SnapshotError(
                    f"{warehouse}: reservations kept changing under {len(pending)} sku(s) "
                    f"({', '.join(pending[:5])}); other skus may be applied, run again"
                )
    if counted:
        client.sadd(keys.skus, *counted)
    return result


def _apply_chunk(
    client: redis.Redis,
    keys: Keys,
    script: Any,
    result: SnapshotResult,
    skus: list[str],
    counted: dict[str, int],
    after: StreamId,
    archive: ShippedLedger | None,
    fence: int,
) -> list[str]:
    """Read, compute and write each sku once; returns the skus to read again (raced)."""
    wh = result.warehouse
    fields = [f"on_hand:{wh}", f"reserved:{wh}", f"op:{result.op_id}"]
    ledgers = read_ledgers(client, keys, skus, after=after, fields=fields)
    ranges = {lg.sku: lg.shipped for lg in ledgers if lg.shipped is not None}
    if ranges and archive is None:
        raise SnapshotError(
            f"movements after as_of of {len(ranges)} sku(s) were already shipped to "
            "ClickHouse: a ClickHouse connection is needed to apply this snapshot"
        )
    flows: dict[tuple[str, str], Totals] = {}
    counts: dict[tuple[str, str], Totals] = {}
    if ranges and archive is not None:
        flows = archive.totals(ranges, warehouse=wh, kinds=FLOW_KINDS)
        counts = archive.totals(ranges, warehouse=wh, kinds=COUNT_KINDS)
    retry: list[str] = []
    for lg in ledgers:
        sku = lg.sku
        if lg.fields.get(f"op:{result.op_id}"):
            result.lines.append(SnapshotLine(sku, "duplicate", counted.get(sku, 0)))
            continue
        mine = [e for _, e in lg.entries if e["wh"] == wh]
        newer_count = counts.get((sku, wh), Counter())["entries"] > 0 or any(
            e.get("kind") in COUNT_KINDS for e in mine
        )
        moved = flows.get((sku, wh), Counter())["on_hand"] + sum(
            int(e.get("on_hand", 0)) for e in mine if e.get("kind") in FLOW_KINDS
        )
        before = int(lg.fields.get(f"on_hand:{wh}", 0))
        reserved = int(lg.fields.get(f"reserved:{wh}", 0))
        line = SnapshotLine(sku, "applied", counted.get(sku, 0), moved, before, before, reserved)
        if newer_count:
            result.lines.append(replace(line, status="superseded"))
            continue
        new = max(line.target, reserved)
        if new == before:
            result.lines.append(replace(line, status="unchanged"))
            continue
        status, detail, *_ = script(
            keys=[keys.stock(sku), keys.ledger(sku)],
            # no actor or reason (''): the snapshot's op id and kind say where it came from
            args=[
                result.op_id,
                StockOp.SNAPSHOT.value,
                fence,
                "",
                "",
                f"{wh}|on_hand|add|{new - before}",
            ],
        )
        if status == "stale_fence":
            raise StaleFence(f"{sku}: {detail}; snapshot stopped (fence {fence})")
        if status == "error":  # reserved grew (or on hand fell) since the read: read again
            retry.append(sku)
        elif status == "duplicate":
            result.lines.append(replace(line, status="duplicate"))
        else:
            result.lines.append(replace(line, on_hand=new))
    return retry


def _check_rows(
    rows: Sequence[SnapshotRow], as_of: datetime | None, zero_missing: bool
) -> tuple[dict[str, int], dict[str, int]]:
    """sku -> counted, and sku -> as_of in ms; every bad row reported, nothing applied."""
    counted: dict[str, int] = {}
    counted_at: dict[str, int] = {}
    errors = []
    if zero_missing and as_of is None:
        errors.append("zero_missing needs the snapshot's as_of (when were the others counted?)")
    for n, row in enumerate(rows, start=1):
        when = row.as_of or as_of
        if not row.sku or any(c in row.sku for c in "|{}\n\r\t"):
            errors.append(f"row {n}: sku {row.sku!r} is empty or has forbidden characters")
        elif row.sku in counted:
            errors.append(f"row {n}: duplicate sku {row.sku}")
        elif not 0 <= row.counted <= MAX_QTY:
            errors.append(f"row {n}: counted {row.counted} out of range")
        elif when is None:
            errors.append(f"row {n}: no as_of for {row.sku} (row or snapshot)")
        else:
            counted[row.sku] = row.counted
            counted_at[row.sku] = _as_of_ms(when)
    if errors:
        raise SnapshotError(f"{len(errors)} bad row(s), nothing applied:\n  " + "\n  ".join(errors))
    return counted, counted_at


def _require_unshipped(client: redis.Redis, keys: Keys, counted_at: dict[str, int]) -> None:
    skus = sorted(counted_at)
    cursors = texts(client.hmget(keys.ledger_cursor, skus)) if skus else []
    shipped = [
        sku
        for sku, cursor in zip(skus, cursors, strict=True)
        if cursor and parse_id(cursor)[0] > counted_at[sku]
    ]
    if shipped:
        raise SnapshotError(
            f"movements after as_of of {len(shipped)} sku(s) ({', '.join(shipped[:5])}) were "
            "already shipped to ClickHouse: a ClickHouse connection is needed, nothing applied"
        )


def _stocked_skus(client: redis.Redis, keys: Keys, warehouse: str) -> set[str]:
    """Known skus with any figure at the warehouse (what a full count should have listed)."""
    skus = sorted(known_skus(client, keys))
    pipe = client.pipeline(transaction=False)
    for sku in skus:
        pipe.hmget(keys.stock(sku), [f"on_hand:{warehouse}", f"reserved:{warehouse}"])
    return {sku for sku, values in zip(skus, pipe.execute(), strict=True) if any(v for v in values)}


def _as_of_ms(as_of: datetime) -> int:
    """Naive means UTC, like every stored time."""
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    return int(as_of.timestamp() * 1000)


def parse_snapshot_file(path: Path) -> tuple[list[SnapshotRow], datetime | None]:
    """A WMS count file: CSV with header ``sku,qty`` (or ``counted``) and an optional
    ``as_of`` column, or JSON ``{"as_of": ..., "rows": [{"sku", "qty", "as_of"?}]}`` (or the
    bare list). Times are ISO 8601 with a UTC offset: a naive WMS time would be read in the
    wrong zone and misplace every movement after it. Returns (rows, the file's as_of)."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from exc
    as_of: object = None
    if path.suffix.lower() == ".json" or content.lstrip()[:1] in (b"[", b"{"):
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict):
            as_of, data = data.get("as_of"), data.get("rows")
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise SnapshotError(f"{path}: expected a list of objects with sku, qty")
        records: list[dict[str, Any]] = data
    else:
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SnapshotError(f"{path}: not UTF-8 text") from exc
        reader = csv.DictReader(io.StringIO(text))
        records = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    rows: list[SnapshotRow] = []
    errors: list[str] = []
    file_as_of = _parse_time(as_of, "as_of", errors) if as_of is not None else None
    for n, rec in enumerate(records, start=1):
        sku = str(rec.get("sku") or "").strip()
        raw = rec.get("qty", rec.get("counted"))
        text = "" if raw is None or isinstance(raw, bool) else str(raw).strip()
        if not WHOLE_NUMBER.fullmatch(text):
            errors.append(f"row {n}: qty {raw!r} is not a whole number")
            continue
        row_as_of = rec.get("as_of")
        when = _parse_time(row_as_of, f"row {n}: as_of", errors) if row_as_of else None
        rows.append(SnapshotRow(sku, int(text), when))
    if errors:
        raise SnapshotError(f"{len(errors)} bad row(s), nothing applied:\n  " + "\n  ".join(errors))
    if not rows:
        raise SnapshotError(f"{path}: no rows")
    times = {r.as_of for r in rows}
    if file_as_of is None and len(times) == 1:
        file_as_of = times.pop()  # one count time for the whole file (CSV column)
    return rows, file_as_of


def _parse_time(value: object, what: str, errors: list[str]) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value).strip())
    except ValueError:
        errors.append(f"{what} {value!r} is not an ISO 8601 time")
        return None
    if when.tzinfo is None:
        errors.append(f"{what} {value!r} has no UTC offset")
        return None
    return when
