"""Stock per (sku, warehouse) in Redis: on hand, reserved, and available = on hand - reserved.

Stock files are parsed and checked here in full before anything is written, and the write is
one Lua script, so a bad file is rejected whole and never half-applied.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import redis

from core.privacy import scrub_free_text
from state.keys import Keys
from state.redis import lua_source

MAX_QTY = 10**9
WHOLE_NUMBER = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() accepts '²'
# An operator's operation id: bounded, and no ':' '=' or space, so nothing else (an actor, a
# reason, an internal 'revert:'/'snapshot:' id) can be written into it or read out of it.
OP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NOT_IN_ACTOR = re.compile(r"[^A-Za-z0-9._@-]")  # the user names of core/access.py
MAX_ACTOR = 64
MAX_REASON = 200


class StockError(ValueError):
    """A stock operation that cannot be applied; the message says which row and why."""


class StockOpConflict(StockError):
    """The operation id was used before for another change: refused, nothing applied."""


class StockRequestError(StockError):
    """The request names what does not exist (sku, warehouse) or a malformed op id: the
    caller's mistake (HTTP 400), not a refusal by the stock (409)."""


@dataclass(frozen=True)
class StockRow:
    sku: str
    warehouse: str
    qty: int


@dataclass(frozen=True)
class StockLevel:
    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    inbound: int = 0  # purchase in transit
    sales_in_transit: int = 0  # shipped, not yet signed for

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def to_dict(self) -> dict[str, object]:
        return {
            "sku": self.sku,
            "warehouse": self.warehouse,
            "on_hand": self.on_hand,
            "reserved": self.reserved,
            "available": self.available,
            "inbound": self.inbound,
            "sales_in_transit": self.sales_in_transit,
        }


def parse_stock_file(path: Path, warehouses: Iterable[str]) -> list[StockRow]:
    """CSV (header sku,warehouse,qty) or JSON (a list of objects with those keys)."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise StockError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix.lower() in {".json", ".jsonl"} or content.lstrip()[:1] in (b"[", b"{"):
        records = _json_records(content, path)
    else:
        records = _csv_records(content, path)
    return validate_rows(records, set(warehouses))


def _json_records(content: bytes, path: Path) -> list[dict[str, object]]:
    try:
        if path.suffix.lower() == ".jsonl":
            data: object = [orjson.loads(line) for line in content.splitlines() if line.strip()]
        else:
            data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise StockError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(data, dict):
        data = data.get("rows", [data])
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise StockError(f"{path}: expected a list of objects with sku, warehouse, qty")
    return data


def _csv_records(content: bytes, path: Path) -> list[dict[str, object]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StockError(f"{path}: not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = {"sku", "warehouse", "qty"} - set(header)
    if missing:
        raise StockError(f"{path}: header must have sku,warehouse,qty (missing {sorted(missing)})")
    return [{(k or "").strip(): v for k, v in row.items()} for row in reader]


def validate_rows(records: list[dict[str, object]], warehouses: set[str]) -> list[StockRow]:
    """Every problem in the file is reported, not just the first, so one fix round suffices."""
    rows: list[StockRow] = []
    errors: list[str] = []
    seen: set[tuple[str, str]] = set()
    for number, record in enumerate(records, start=1):
        sku = str(record.get("sku") or "").strip()
        warehouse = str(record.get("warehouse") or "").strip()
        raw_qty = record.get("qty")
        problem = _row_problem(sku, warehouse, raw_qty, warehouses)
        if problem is None and (sku, warehouse) in seen:
            problem = f"duplicate row for {sku} at {warehouse}"
        if problem:
            errors.append(f"row {number}: {problem}")
            continue
        seen.add((sku, warehouse))
        rows.append(StockRow(sku, warehouse, int(str(raw_qty).strip())))
    if errors:
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise StockError(f"{len(errors)} bad row(s), nothing applied:\n  {shown}{more}")
    if not rows:
        raise StockError("no stock rows found")
    return rows


def _row_problem(sku: str, warehouse: str, raw_qty: object, warehouses: set[str]) -> str | None:
    if not sku:
        return "sku is empty"
    if len(sku) > 128 or any(c in sku for c in "|{}\n\r\t"):
        return f"sku {sku[:40]!r} has forbidden characters or is too long"
    if warehouse not in warehouses:
        return f"unknown warehouse {warehouse!r} (known: {', '.join(sorted(warehouses))})"
    text = str(raw_qty).strip() if raw_qty is not None and not isinstance(raw_qty, bool) else ""
    if not WHOLE_NUMBER.fullmatch(text):
        return f"qty {raw_qty!r} is not a whole number"
    qty = int(text)
    if qty < 0:
        return f"qty {qty} is negative"
    if qty > MAX_QTY:
        return f"qty {qty} is implausibly large"
    return None


class StockOp(StrEnum):
    """Kinds of operator or WMS changes to stock; each lands in the ledger under its kind."""

    LOAD = "load"  # set on hand from a file
    ADJUST = "adjust"  # add/remove units (count correction, damage, found stock)
    SNAPSHOT = "snapshot"  # the WMS's full count, applied under the stock lock
    INBOUND = "inbound"  # purchase order placed: inbound grows
    RECEIVE = "receive"  # purchase received: inbound shrinks, on hand grows


@dataclass(frozen=True)
class StockChange:
    sku: str
    warehouse: str
    field: str  # on_hand | inbound
    mode: str  # set | add
    value: int

    def arg(self) -> str:
        return f"{self.warehouse}|{self.field}|{self.mode}|{self.value}"


def operation_id(given: str = "") -> str:
    """The idempotency key of an operator's stock operation (`./oms stock load|adjust`, POST
    /stock/adjust): the op id given, checked, or a new random one for the caller to print (a
    retry reuses it). The id alone: who and why are fields of the movement (``apply_changes``),
    so a retry with another reason is the same operation, and no actor can be put into it."""
    if not given:
        return new_op_id()
    if not OP_ID.fullmatch(given):
        raise StockRequestError(
            f"op id {given[:80]!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(no ':', '=' or spaces), starting with a letter or digit"
        )
    return given


def movement_note(actor: str, reason: str) -> tuple[str, str]:
    """The actor and reason as the ledger (and so ClickHouse's stock_movements) keeps them:
    bounded, the actor to the characters of a user name, the reason scrubbed of what may name
    a person (it is free text: a phone number, an e-mail, a quoted name)."""
    actor = NOT_IN_ACTOR.sub("_", actor.strip())[:MAX_ACTOR]
    reason = scrub_free_text(" ".join(reason.split()))[:MAX_REASON]
    return actor, reason


def apply_changes(
    client: redis.Redis,
    keys: Keys,
    kind: StockOp,
    op_id: str,
    changes: list[StockChange],
    *,
    fence: int = 0,
    actor: str = "",
    reason: str = "",
) -> int:
    """Apply changes to many skus as one operation: every sku or none.

    Each sku is one script call (one hash slot). Every sku is first checked by a dry run in one
    round trip, so a bad file is refused before anything changes. If a sku still refuses at
    apply time (a reservation landed in between), the skus already applied are reverted; if a
    revert is itself refused (reservations took those units meanwhile), the error says so
    instead of claiming nothing was applied. ``op_id`` makes a retried operation a no-op; the
    same id with other changes raises StockOpConflict (see ``claim_operation``). ``actor`` and
    ``reason`` go on every ledger entry (``movement_note``). Returns the number of skus changed.
    """
    script = client.register_script(lua_source("stock_apply"))
    note = movement_note(actor, reason)
    by_sku: dict[str, list[StockChange]] = {}
    for change in changes:
        by_sku.setdefault(change.sku, []).append(change)

    def call(sku: str, op: str, op_kind: str, args: list[str], target: Any = None) -> Any:
        return script(
            keys=[keys.stock(sku), keys.ledger(sku)],
            args=[op, op_kind, fence, *note, *args],
            client=target,
        )

    pipe = client.pipeline(transaction=False)
    for sku, sku_changes in by_sku.items():
        call(sku, op_id, f"dry-run:{kind.value}", [c.arg() for c in sku_changes], pipe)
    refused = [
        f"{sku}: {reply[1]}"
        for sku, reply in zip(by_sku, pipe.execute(), strict=True)
        if reply[0] not in ("ok", "duplicate")
    ]
    if refused:
        raise StockError("nothing applied:\n  " + "\n  ".join(refused))
    claim_operation(client, keys, kind, op_id, changes)

    applied: list[tuple[str, list[list[object]]]] = []
    for sku, sku_changes in by_sku.items():
        status, detail, *rest = call(sku, op_id, kind.value, [c.arg() for c in sku_changes])
        if status == "applied":
            applied.append((sku, rest[0] if rest else []))
        elif status != "duplicate":
            stuck = [
                done
                for done, moves in applied
                if call(done, f"revert:{op_id}", "revert", _inverse(moves))[0] != "applied"
            ]
            if stuck:
                raise StockError(
                    f"{sku}: {detail}; partially applied: {', '.join(stuck)} could "
                    "not be reverted (reservations took the units meanwhile)"
                )
            raise StockError(f"nothing applied: {sku}: {detail}")
    if by_sku:
        client.sadd(keys.skus, *by_sku)
    return len(applied)


def claim_operation(
    client: redis.Redis, keys: Keys, kind: StockOp, op_id: str, changes: list[StockChange]
) -> None:
    """Tie ``op_id`` to this exact change (kind, skus, warehouses, figures, values) the first
    time, in ``<prefix>:stock-ops``; a later use of the id with another change is refused.
    The per-sku ``op:`` markers cannot tell: a retry naming another sku finds none there.
    Claimed after the dry run, so an id whose change was refused outright stays free."""
    body = "\n".join([kind.value, *(f"{c.sku}|{c.arg()}" for c in changes)])
    fingerprint = hashlib.sha256(body.encode()).hexdigest()[:32]
    if client.hsetnx(keys.stock_ops, op_id, fingerprint):
        return
    if client.hget(keys.stock_ops, op_id) != fingerprint:
        raise StockOpConflict(
            f"op id {op_id!r} was used before for another change; nothing applied "
            "(a retry must repeat the same change: use a new op id for a new one)"
        )


def _inverse(moves: list[list[object]]) -> list[str]:
    inverse = []
    for wh, on_hand, _reserved, inbound, _sit in moves:
        if int(str(on_hand)):
            inverse.append(f"{wh}|on_hand|add|{-int(str(on_hand))}")
        if int(str(inbound)):
            inverse.append(f"{wh}|inbound|add|{-int(str(inbound))}")
    return inverse


def load_stock(
    client: redis.Redis, keys: Keys, rows: list[StockRow], *, op_id: str = "", actor: str = ""
) -> int:
    """Set on hand for every row, all rows or none; registers skus it has not seen. Without
    ``op_id`` every call is a new load (loading a file again on purpose must apply)."""
    changes = [StockChange(r.sku, r.warehouse, "on_hand", "set", r.qty) for r in rows]
    op = operation_id(op_id)
    return apply_changes(client, keys, StockOp.LOAD, op, changes, actor=actor)


@dataclass(frozen=True)
class Adjusted:
    op_id: str  # print it: a retry with it changes nothing
    applied: bool  # False: this op id was applied before, with the same change


def adjust_stock(
    client: redis.Redis,
    keys: Keys,
    warehouses: Iterable[str],
    sku: str,
    warehouse: str,
    delta: int,
    *,
    field: str = "on_hand",
    op_id: str = "",
    actor: str = "",
    reason: str = "",
) -> Adjusted:
    """`./oms stock adjust` and POST /stock/adjust: add ``delta`` units (negative: remove) of
    ``field`` (on_hand or inbound) of a known sku at a known warehouse, once per op id
    (``operation_id``; the same id with another sku, warehouse, field or delta is refused)."""
    op = operation_id(op_id)
    known = set(warehouses)
    if warehouse not in known:
        raise StockRequestError(
            f"unknown warehouse {warehouse!r} (known: {', '.join(sorted(known))})"
        )
    if sku not in known_skus(client, keys):
        raise StockRequestError(f"unknown sku {sku!r}: load it first with `./oms stock load`")
    change = StockChange(sku, warehouse, field, "add", delta)
    applied = apply_changes(client, keys, StockOp.ADJUST, op, [change], actor=actor, reason=reason)
    return Adjusted(op, applied > 0)


def new_op_id() -> str:
    return uuid.uuid4().hex


def stock_levels(client: redis.Redis, keys: Keys, sku: str) -> list[StockLevel]:
    fields: dict[str, str] = client.hgetall(keys.stock(sku))  # type: ignore[assignment]
    return levels_from(sku, fields)


FIGURES = ("on_hand", "reserved", "inbound", "sit")


def levels_from(sku: str, fields: dict[str, str]) -> list[StockLevel]:
    figures = {
        (name, wh): int(value)
        for key, value in fields.items()
        for name, _, wh in [key.partition(":")]
        if name in FIGURES
    }
    warehouses = sorted({wh for _, wh in figures})
    return [
        StockLevel(
            sku,
            wh,
            figures.get(("on_hand", wh), 0),
            figures.get(("reserved", wh), 0),
            figures.get(("inbound", wh), 0),
            figures.get(("sit", wh), 0),
        )
        for wh in warehouses
    ]


def known_skus(client: redis.Redis, keys: Keys) -> set[str]:
    return set(client.smembers(keys.skus))  # type: ignore[arg-type]


def all_levels(client: redis.Redis, keys: Keys) -> list[StockLevel]:
    """Every (sku, warehouse) the OMS knows, in one pipelined round trip."""
    skus = sorted(known_skus(client, keys))
    pipe = client.pipeline(transaction=False)
    for sku in skus:
        pipe.hgetall(keys.stock(sku))
    levels: list[StockLevel] = []
    for sku, fields in zip(skus, pipe.execute(), strict=True):
        levels.extend(levels_from(sku, fields))
    return levels
