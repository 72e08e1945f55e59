"""Stage 6: fulfilment commands the WMS acts on, one per warehouse, with deterministic ids."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from state.orders import OrderRecord
from streams.messages import CommandKind, CommandLine, FulfilmentCommand, make_id


def command_id(order_id: str, kind: CommandKind, warehouse: str, attempt: int = 1) -> str:
    """Same order, kind, warehouse and attempt -> same id, so the WMS drops a re-sent command."""
    return make_id("C", order_id, kind.value, warehouse, attempt)


def lines_by_warehouse(record: OrderRecord) -> dict[str, list[CommandLine]]:
    """Order lines shared out over the reservation's allocations; a sku split across
    warehouses splits its lines' quantities the same way."""
    left = defaultdict(list)  # sku -> [(warehouse, units)] still to hand out
    for a in record.allocations:
        left[a.sku].append([a.warehouse, a.quantity])
    out: dict[str, list[CommandLine]] = defaultdict(list)
    for line in record.order.lines:
        need = line.quantity
        for part in left[line.sku]:
            take = min(need, part[1])
            if take:
                out[part[0]].append(CommandLine(line_id=line.line_id, sku=line.sku, quantity=take))
                part[1] -= take
                need -= take
            if not need:
                break
    return dict(out)


def _commands(record: OrderRecord, kind: CommandKind, at: datetime) -> list[FulfilmentCommand]:
    order = record.order
    return [
        FulfilmentCommand(
            command_id=command_id(order.order_id, kind, warehouse),
            kind=kind,
            order_id=order.order_id,
            channel=order.channel,
            shop_id=order.shop_id,
            external_id=order.external_id,
            warehouse=warehouse,
            ship_to=order.address,
            lines=lines,
            buyer_remark=order.buyer_remark,
            created_at=at,
        )
        for warehouse, lines in sorted(lines_by_warehouse(record).items())
    ]


def outbound_commands(record: OrderRecord, at: datetime) -> list[FulfilmentCommand]:
    return _commands(record, CommandKind.OUTBOUND, at)


def cancel_commands(record: OrderRecord, at: datetime) -> list[FulfilmentCommand]:
    return _commands(record, CommandKind.CANCEL, at)
