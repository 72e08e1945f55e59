"""Shopify refunds: the Refund resource as the ``refunds/create`` webhook posts it.

Also accepted wrapped as ``{"refund": ...}`` (REST Admin API answer). Fields as the Admin
API's Refund resource documents them (shopify.dev, REST Admin API "Refund": id, order_id,
created_at, processed_at, restock, refund_line_items[] with line_item_id, quantity,
restock_type no_restock / cancel / return / legacy_restock, subtotal; transactions[] with
kind, status, amount; the GraphQL RefundLineItemRestockType enum says CANCEL is for unfulfilled
items, RETURN for fulfilled ones).

Mapping decisions:
- told apart from an order by ``refund_line_items`` or ``transactions`` beside an ``order_id``
  (an order has neither at its top level; its ``refunds`` are a list);
- order ``order_id``, shop from the ``oms-shop`` header as the order adapter (the webhook's
  X-Shopify-Shop-Domain); lines: each ``line_item_id`` (the order adapter's line id);
- kind: a ``cancel`` restock (unfulfilled items) is a cancel; a ``return`` restock a return; a
  refund with no items restocked is a refund only of its successful ``refund`` transactions;
- a refund exists once created: it always applies; one whose transactions all failed asks
  nothing (its ``status`` is reported as ``failed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from decimal import Decimal
from typing import Any

from streams.channels.aftersale import (
    MAX_AFTERSALE_ITEMS,
    AfterSaleDraft,
    PlatformAfterSale,
    Stage,
    finish,
    first_time,
    has_any,
)
from streams.channels.base import (
    AdapterContext,
    ident_at,
    money_at,
    objects_at,
    text_at,
    unwrap,
    where_join,
)
from streams.messages import AfterSalesKind
from streams.models import Channel

MARKERS = ("refund_line_items", "transactions")
RESTOCK_KIND = {"cancel": AfterSalesKind.CANCEL, "return": AfterSalesKind.RETURN}
REFUND_KINDS = frozenset({"refund"})


def _refunded(refund: Mapping[str, Any]) -> tuple[Decimal, bool]:
    """What the successful refund transactions paid back, and whether any failed."""
    total, failed = Decimal(0), False
    items = objects_at(refund, "transactions", required=False, limit=MAX_AFTERSALE_ITEMS)
    for index, tx in enumerate(items):
        where = where_join("transactions", index)
        if text_at(tx, "kind", where) not in REFUND_KINDS:
            continue
        status = text_at(tx, "status", where)
        if status == "success":
            total += money_at(tx, "amount", where)
        failed = failed or status in ("failure", "error")
    return total, failed


class ShopifyAfterSales:
    """Shopify Refund -> AfterSalesRequest."""

    channel = Channel.SHOPIFY
    order_id_fields: tuple[str, ...] = ("order_id",)

    def is_aftersale(self, payload: Mapping[str, Any]) -> bool:
        refund = self.unwrapped(payload)
        return "order_id" in refund and has_any(refund, MARKERS)

    def unwrapped(self, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        return unwrap(payload, ("refund",))

    def to_request(self, payload: dict[str, Any], ctx: AdapterContext) -> PlatformAfterSale:
        refund = self.unwrapped(payload)
        items = objects_at(
            refund, "refund_line_items", required=False, limit=MAX_AFTERSALE_ITEMS
        )
        lines: list[str] = []
        restocks: set[str] = set()
        for index, item in enumerate(items):
            where = where_join("refund_line_items", index)
            lines.append(ident_at(item, "line_item_id", where))
            restocks.add(text_at(item, "restock_type", where))
        kinds = {RESTOCK_KIND[r] for r in restocks if r in RESTOCK_KIND}
        kind = (  # a refund both cancelling and returning items: the return covers both
            AfterSalesKind.RETURN if AfterSalesKind.RETURN in kinds
            else AfterSalesKind.CANCEL if kinds else AfterSalesKind.REFUND
        )
        amount, failed = _refunded(refund)
        stage = Stage.CLOSED if failed and not amount else Stage.APPLY
        return finish(AfterSaleDraft(
            channel=self.channel,
            shop_id=ctx.shop_for(self.channel),
            external_id=ident_at(refund, "order_id"),
            platform_id=ident_at(refund, "id"),
            id_kind="refund",
            stage=stage,
            status="failed" if stage is Stage.CLOSED else "created",
            kind=kind,
            at=first_time(refund, ("processed_at", "created_at"), naive_tz=UTC),
            line_ids=tuple(lines),
            amount=amount if kind is AfterSalesKind.REFUND and amount else None,
        ))
