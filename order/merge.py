"""Merging: orders of one buyer to one address from one shop, arriving within the shop's merge
window and not yet released, ship as one parcel.

An order that may merge waits in ``routed`` with a merge group (shop, buyer, address, and
warehouse: a parcel leaves one warehouse). The save script files it in the group's set; the
first member opens the window. When the window closes, the merge timer sends one
``release_merged`` action with the members, and the pipeline releases every member still
waiting in one all-or-nothing save, with one outbound command for all of them.
See docs/decisions/0005-merge-window.md.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from core.privacy import is_protected
from order.fulfil import build_command, command_id, lines_by_warehouse, track
from order.record import OrderRecord
from streams.messages import CommandKind, CommandLine, FulfilmentCommand, make_id


def _norm(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split()).lower()


def merge_group(record: OrderRecord, warehouse: str) -> str:
    """Same shop, buyer, address and warehouse -> same group; a different address (even of
    the same buyer) never merges. '' when the buyer cannot be told apart.

    Where the platform protects the receiver, its own key (the OAID, Douyin's search indexes)
    says whether two receivers are one; without it, masked or encrypted values are never
    compared: two different streets can mask alike ('文三路***')."""
    order, address = record.order, record.address
    key = address.receiver_key
    buyer = order.buyer.id or order.buyer.phone or address.phone or key
    place = [address.country, address.province_code, address.city, address.district]
    if key:
        person = [key]
    elif (
        not buyer
        or not address.street
        or any(is_protected(v) for v in (address.street, address.name, address.phone))
    ):
        return ""
    else:
        person = [address.street, address.name, address.phone]
    return make_id(
        "M", order.channel.value, order.shop_id, buyer, *map(_norm, place + person), warehouse
    )


def waiting_members(records: Sequence[OrderRecord], group: str) -> list[OrderRecord]:
    """Members still waiting in this group's window (a cancel may have taken one out, a
    release gate without a date too)."""
    return sorted(
        (r for r in records if r.in_merge_window and r.merge_group == group),
        key=lambda r: (r.order.created_at, r.order_id),
    )


def merged_command(
    members: Sequence[OrderRecord], at: datetime, carrier: str, weight_g: int
) -> FulfilmentCommand:
    """One outbound for every member, keyed by the first (the primary); each line names the
    order it belongs to. The parcel is due when its earliest member is, and goes as the most
    urgent member goes. Tracked on every member's record."""
    primary = members[0]
    [(warehouse, _)] = lines_by_warehouse(primary).items()
    lines: list[CommandLine] = []
    for member in members:
        for line in lines_by_warehouse(member).get(warehouse, []):
            lines.append(line.model_copy(update={"order_id": member.order_id}))
    command = build_command(
        primary,
        CommandKind.OUTBOUND,
        warehouse,
        lines,
        at,
        cid=command_id(primary.order_id, CommandKind.OUTBOUND, warehouse, 1),
        carrier=carrier,
        merged=[m.order_id for m in members],
        weight_g=weight_g,
        ship_by=min((m.ship_by for m in members if m.ship_by), default=0.0),
        priority=max(m.priority for m in members),
    )
    for member in members:
        track(member, command, primary=primary.order_id)
        member.merged_with = [m.order_id for m in members]
    return command
