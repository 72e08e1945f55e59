"""`./oms skumap list|add|remove|check`: the merchant sku map (config/sku_map.csv) and bundles.

Every change is checked whole (streams/sku_map.py, components against config/skus.csv) before
anything is written, and written through a temporary file and a rename: a bad change leaves the
file as it was and exits 2. Workers read the map when they start: a change applies to orders
normalised after the workers restart (docs/decisions/0026-bundles.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from streams.models import ShopKey
from streams.sku_map import WILDCARD, MapRow, SkuMap, SkuMapError, build_map, read_rows, write_rows


def config_paths() -> tuple[Path, Path]:
    """The sku map and the skus file of the configured directory (OMS_CONFIG_DIR)."""
    from core.settings import get_settings

    config = get_settings().config_dir
    return config / "sku_map.csv", config / "skus.csv"


def known_skus(path: Path) -> set[str]:
    """The skus config/skus.csv lists (the routing loader checks that file's rows)."""
    from order.route import WeightTable

    return set(WeightTable.load(path, 1).grams) if path.is_file() else set()


def current_rows(path: Path) -> list[MapRow]:
    from ops.cli_io import fail

    try:
        return read_rows(path) if path.is_file() else []
    except SkuMapError as exc:
        fail(str(exc), code=2)


def checked(rows: list[MapRow], path: Path, skus: Path) -> SkuMap:
    """The map the rows make, or exit 2 naming every problem."""
    from ops.cli_io import fail

    try:
        return build_map(rows, path, known_skus(skus))
    except SkuMapError as exc:
        fail(str(exc), code=2)


def describe(sku_map: SkuMap) -> list[dict[str, Any]]:
    """One entry per channel code: its sku, or its components with qty and share."""
    out: list[dict[str, Any]] = [
        {"channel": c, "shop_id": s, "channel_sku": code, "sku": sku}
        for (c, s, code), sku in sorted(sku_map.rows.items())
    ]
    out.extend(
        {
            "channel": c,
            "shop_id": s,
            "channel_sku": code,
            "components": [{"sku": p.sku, "qty": p.qty, "share": str(p.share)} for p in parts],
        }
        for (c, s, code), parts in sorted(sku_map.bundles.items())
    )
    return out


@click.group("skumap")
def skumap() -> None:
    """Merchant sku codes -> OMS skus and bundles (config/sku_map.csv); applies on worker
    restart."""


@skumap.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def skumap_list(as_json: bool) -> None:
    """Every mapped code: one sku, or a bundle's components (qty per bundle, price share)."""
    from ops.cli_io import emit_json

    path, skus = config_paths()
    entries = describe(checked(current_rows(path), path, skus))
    if as_json:
        emit_json({"file": str(path), "entries": entries})
        return
    for e in entries:
        where = f"{ShopKey.of(e['channel'], e['shop_id'])} {e['channel_sku']}"
        if "sku" in e:
            click.echo(f"{where} -> {e['sku']}")
        else:
            parts = " + ".join(f"{p['qty']} x {p['sku']} ({p['share']})" for p in e["components"])
            click.echo(f"{where} -> bundle: {parts}")


@skumap.command("check")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def skumap_check(as_json: bool) -> None:
    """Validate the map (and its components against skus.csv); exit 2 when invalid."""
    from ops.cli_io import emit_json

    path, skus = config_paths()
    sku_map = checked(current_rows(path), path, skus)
    summary = {
        "file": str(path),
        "valid": True,
        "codes": len(sku_map.rows),
        "bundles": len(sku_map.bundles),
    }
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"{path}: valid ({summary['codes']} codes, {summary['bundles']} bundles)")


@skumap.command("add")
@click.option("--channel", required=True, help="taobao | jd | douyin | shopify | amazon | own.")
@click.option("--shop", "shop_id", default=WILDCARD, show_default=True, help="Shop id, * = all.")
@click.option("--code", "channel_sku", required=True, help="The merchant code the channel sends.")
@click.option(
    "--sku",
    "parts",
    required=True,
    multiple=True,
    help="OMS sku; for a bundle repeat it as SKU:QTY:SHARE (shares add up to 1).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def skumap_add(
    channel: str, shop_id: str, channel_sku: str, parts: tuple[str, ...], as_json: bool
) -> None:
    """Map a code to one sku or to a bundle, replacing what the code had in that shop."""
    path, skus = config_paths()
    new = [row_of(channel, shop_id, channel_sku, part) for part in parts]
    key = new[0].key
    rows = [r for r in current_rows(path) if r.key != key] + new
    save(rows, path, skus, as_json, "added", key)


@skumap.command("remove")
@click.option("--channel", required=True)
@click.option("--shop", "shop_id", default=WILDCARD, show_default=True)
@click.option("--code", "channel_sku", required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def skumap_remove(channel: str, shop_id: str, channel_sku: str, as_json: bool) -> None:
    """Remove a code's rows (then the code maps to itself); exit 1 when it has none."""
    from ops.cli_io import fail

    path, skus = config_paths()
    key = MapRow(channel, shop_id, channel_sku, "").key
    rows = current_rows(path)
    kept = [r for r in rows if r.key != key]
    if len(kept) == len(rows):
        fail(f"{'/'.join(key)}: not in {path}")
    save(kept, path, skus, as_json, "removed", key)


def row_of(channel: str, shop_id: str, code: str, part: str) -> MapRow:
    """``SKU`` or ``SKU:QTY:SHARE`` as a row (the values are checked with the whole map)."""
    sku, _, rest = part.partition(":")
    qty, _, share = rest.partition(":")
    return MapRow(
        channel.strip(), shop_id.strip(), code.strip(), sku.strip(), qty.strip(), share.strip()
    )


def save(
    rows: list[MapRow], path: Path, skus: Path, as_json: bool, done: str, key: tuple[str, ...]
) -> None:
    """Check the whole new map, then write it atomically; nothing is written when invalid."""
    from ops.cli_io import emit_json

    checked(rows, path, skus)
    write_rows(path, rows)
    message = f"{done} {'/'.join(key)} in {path}; restart the workers to apply it"
    if as_json:
        emit_json({"file": str(path), done: "/".join(key), "restart_workers": True})
    else:
        click.echo(message)
