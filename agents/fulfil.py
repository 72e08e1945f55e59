"""Stage 6: the fulfilment command the WMS acts on, with a deterministic command id."""

from __future__ import annotations

from datetime import datetime

from state.orders import OrderRecord
from streams.messages import CommandKind, CommandLine, FulfilmentCommand, make_id


def command_id(order_id: str, kind: CommandKind, warehouse: str, attempt: int = 1) -> str:
    """Same order, kind, warehouse and attempt -> same id, so the WMS drops a re-sent command."""
    return make_id("C", order_id, kind.value, warehouse, attempt)


def outbound_command(record: OrderRecord, at: datetime) -> FulfilmentCommand:
    order = record.order
    return FulfilmentCommand(
        command_id=command_id(order.order_id, CommandKind.OUTBOUND, record.warehouse),
        kind=CommandKind.OUTBOUND,
        order_id=order.order_id,
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        warehouse=record.warehouse,
        ship_to=order.address,
        lines=[
            CommandLine(line_id=line.line_id, sku=line.sku, quantity=line.quantity)
            for line in order.lines
        ],
        buyer_remark=order.buyer_remark,
        created_at=at,
    )


def cancel_command(record: OrderRecord, at: datetime) -> FulfilmentCommand:
    cmd = outbound_command(record, at)
    return cmd.model_copy(
        update={
            "command_id": command_id(record.order_id, CommandKind.CANCEL, record.warehouse),
            "kind": CommandKind.CANCEL,
        }
    )
