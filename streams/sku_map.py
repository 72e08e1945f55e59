"""Merchant sku codes -> OMS skus, per channel and shop: one to one, many to one, and bundles.

``config/sku_map.csv`` has the header ``channel,shop_id,channel_sku,sku,qty,share``; ``qty``
and ``share`` may be left out (an older four-column file loads as it did). A channel code with
one row of qty 1 maps to that sku; several codes may map to one sku (many to one). A code with
several rows, or one row of qty above 1, is a bundle (组合商品/套装, one to many): the channel
sells it as one line, the warehouses stock its components. Each row is one component: ``qty``
units per bundle and ``share``, its part of the bundle's price (the shares of a bundle of
several components are all given and add up to exactly 1), which splits what the buyer paid
over the components for the facts and for refunds (docs/decisions/0026-bundles.md).

``shop_id`` ``*`` (or empty) is every shop of the channel; a shop's own row wins over it.
Bundles do not nest: a component is an OMS sku, never another bundle's code.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from core.config import ConfigError, read_text
from streams.models import MAX_CODE_CHARS, Channel

HEADER: Final = ("channel", "shop_id", "channel_sku", "sku", "qty", "share")
WILDCARD: Final = "*"
MAX_COMPONENTS: Final = 20  # components of one bundle: a kit, not a catalogue
MAX_COMPONENT_QTY: Final = 1000  # units of one component per bundle
MAX_SHARE_PLACES: Final = 6
CENT: Final = Decimal("0.01")
_CHANNELS: Final = frozenset(c.value for c in Channel)

Key = tuple[str, str, str]  # (channel, shop_id or '*', channel code)


class SkuMapError(ConfigError):
    """A sku map that cannot be used; names the file, the line and the field."""


@dataclass(frozen=True)
class Component:
    """One warehouse sku of a bundle: ``qty`` units per bundle, ``share`` of its price."""

    sku: str
    qty: int = 1
    share: Decimal = Decimal(1)


@dataclass(frozen=True)
class SkuMap:
    """Merchant sku code -> OMS sku (``rows``) or bundle components (``bundles``); identity for
    a code neither lists. Keys are (channel, shop, code) with ``*`` as the wildcard shop."""

    rows: Mapping[Key, str] = field(default_factory=dict)
    bundles: Mapping[Key, tuple[Component, ...]] = field(default_factory=dict)

    def resolve(self, channel: str, shop_id: str, code: str) -> str:
        """The one sku of a code that is not a bundle (a bundle's code is returned as is)."""
        return (
            self.rows.get((channel, shop_id, code))
            or self.rows.get((channel, WILDCARD, code))
            or code
        )

    def components(self, channel: str, shop_id: str, code: str) -> tuple[Component, ...] | None:
        """The components of a bundle code, or None when the code maps to one sku. The shop's
        own row (bundle or not) wins over the channel's wildcard row."""
        if not self.bundles:
            return None
        for shop in (shop_id, WILDCARD):
            key = (channel, shop, code)
            if key in self.bundles:
                return self.bundles[key]
            if key in self.rows:
                return None
        return None

    @classmethod
    def load(cls, path: Path, known_skus: Collection[str] | None = None) -> SkuMap:
        """The map in ``path`` (a missing file means identity), every row checked; components
        must be in ``known_skus`` when given (config/skus.csv)."""
        if not path.exists():
            return cls()
        return build_map(read_rows(path), path, known_skus)


@dataclass(frozen=True)
class MapRow:
    """One row of the file, as written (validated by build_map)."""

    channel: str
    shop_id: str
    channel_sku: str
    sku: str
    qty: str = ""
    share: str = ""

    @property
    def key(self) -> Key:
        return (self.channel, self.shop_id or WILDCARD, self.channel_sku)

    def cells(self) -> tuple[str, ...]:
        return (
            self.channel,
            self.shop_id or WILDCARD,
            self.channel_sku,
            self.sku,
            self.qty,
            self.share,
        )


def read_rows(path: Path) -> list[MapRow]:
    """The file's rows, stripped; a header without the four required columns is an error."""
    reader = csv.DictReader(io.StringIO(read_text(path, SkuMapError, encoding="utf-8-sig")))
    header = {(h or "").strip() for h in reader.fieldnames or []}
    if not set(HEADER[:4]) <= header:
        raise SkuMapError.listing(path, "sku map", [f"header must be {','.join(HEADER)}"])
    rows = []
    for raw in reader:
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        rows.append(MapRow(*(row.get(name, "") for name in HEADER)))
    return rows


def build_map(
    rows: Iterable[MapRow], source: str | Path, known_skus: Collection[str] | None = None
) -> SkuMap:
    """Rows -> SkuMap, or SkuMapError listing every problem with its line (the header is
    line 1) and field."""
    errors: list[str] = []
    grouped: dict[Key, list[tuple[int, MapRow, Component]]] = {}
    for line_no, row in enumerate(rows, start=2):
        component = check_row(row, line_no, errors)
        if component is None:
            continue
        entries = grouped.setdefault(row.key, [])
        if any(c.sku == component.sku for _, _, c in entries):
            errors.append(
                f"line {line_no}: sku: {component.sku!r} listed twice for {'/'.join(row.key)}"
            )
            continue
        entries.append((line_no, row, component))
    one_to_one: dict[Key, str] = {}
    bundles: dict[Key, tuple[Component, ...]] = {}
    for key, entries in grouped.items():
        components = tuple(c for _, _, c in entries)
        first_line = entries[0][0]
        if len(components) == 1 and components[0].qty == 1:
            if entries[0][1].share not in ("", "1"):
                errors.append(f"line {first_line}: share: a code of one sku takes no share")
            one_to_one[key] = components[0].sku
            continue
        errors.extend(check_bundle(key, entries, known_skus))
        bundles[key] = components
    codes = {(channel, code) for channel, _, code in bundles}
    for (channel, _, code), components in bundles.items():
        nested = [c.sku for c in components if (channel, c.sku) in codes]
        if nested:
            errors.append(
                f"{channel} {code}: component {nested[0]!r} is itself a bundle "
                "(bundles do not nest)"
            )
    if errors:
        raise SkuMapError.listing(source, "sku map", errors)
    return SkuMap(one_to_one, bundles)


def check_row(row: MapRow, line_no: int, errors: list[str]) -> Component | None:
    """One row's fields, or None after adding what is wrong with it to ``errors``."""
    problems = []
    if row.channel not in _CHANNELS:
        known = ", ".join(sorted(_CHANNELS))
        problems.append(f"channel: {row.channel[:32]!r} is not one of {known}")
    for name, value in (
        ("shop_id", row.shop_id),
        ("channel_sku", row.channel_sku),
        ("sku", row.sku),
    ):
        if len(value) > MAX_CODE_CHARS:
            problems.append(f"{name}: longer than {MAX_CODE_CHARS} characters")
        elif not value and name != "shop_id":
            problems.append(f"{name}: empty")
    qty = parse_qty(row.qty, problems)
    share = parse_share(row.share, problems)
    errors.extend(f"line {line_no}: {problem}" for problem in problems)
    if problems:
        return None
    return Component(row.sku, qty, share)


def parse_qty(text: str, problems: list[str]) -> int:
    if not text:
        return 1
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_COMPONENT_QTY:
        problems.append(f"qty: {text[:32]!r} is not a whole number 1-{MAX_COMPONENT_QTY}")
        return 1
    return int(text)


def parse_share(text: str, problems: list[str]) -> Decimal:
    if not text:
        return Decimal(1)
    try:
        share = Decimal(text) if len(text) <= 32 else Decimal("NaN")
    except InvalidOperation:
        share = Decimal("NaN")
    places = -share.as_tuple().exponent if share.is_finite() else 0  # type: ignore[operator]
    if not share.is_finite() or not 0 < share <= 1 or places > MAX_SHARE_PLACES:
        problems.append(
            f"share: {text[:32]!r} is not a number above 0 and at most 1 "
            f"(at most {MAX_SHARE_PLACES} decimal places)"
        )
        return Decimal(1)
    return share


def check_bundle(
    key: Key,
    entries: list[tuple[int, MapRow, Component]],
    known_skus: Collection[str] | None,
) -> list[str]:
    """What is wrong with one bundle's components: count, shares, unknown skus."""
    where = f"line {entries[0][0]}: {'/'.join(key)}"
    errors = []
    if len(entries) > MAX_COMPONENTS:
        errors.append(f"{where}: more than {MAX_COMPONENTS} components")
    if len(entries) == 1 and entries[0][1].share not in ("", "1"):
        errors.append(f"{where}: share: a bundle of one sku takes its whole price (1)")
    if len(entries) > 1:
        unshared = [line_no for line_no, row, _ in entries if not row.share]
        total = sum((c.share for _, _, c in entries), Decimal(0))
        if unshared:
            errors.append(
                f"{where}: share: every component of a bundle needs one "
                f"(missing on line {unshared[0]})"
            )
        elif total != 1:
            errors.append(f"{where}: share: the components' shares add up to {total}, not 1")
    if known_skus is not None:
        errors.extend(
            f"line {line_no}: sku: {c.sku!r} is not in skus.csv"
            for line_no, _, c in entries
            if c.sku not in known_skus
        )
    return errors


def split_amount(amount: Decimal, components: tuple[Component, ...]) -> list[Decimal]:
    """``amount`` over the components by share, exactly: each but the last gets its share
    rounded down to the cent, the last what is left, so the parts add up to ``amount`` to the
    last digit and none is negative (the shares add up to 1)."""
    parts = [(amount * c.share).quantize(CENT, rounding=ROUND_FLOOR) for c in components[:-1]]
    parts.append(amount - sum(parts, Decimal(0)))
    return parts


def write_rows(path: Path, rows: Iterable[MapRow]) -> None:
    """Write the map whole through a temporary file and a rename, so a worker starting at
    that moment reads the old file or the new one, never half of one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(row.cells())
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as fh:
            fh.write(buffer.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
