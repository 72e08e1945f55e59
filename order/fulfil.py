"""Stage 6: commands the WMS acts on, with deterministic ids, and the record of what was sent.

Outbound: one per warehouse of the reservation. Cancel/intercept: one per live outbound, with
``refers_to`` naming it. Return inbound: one per warehouse the returned units left from. The
same cause always gives the same id, so the WMS drops a command it has seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from order.record import SHIPPED_OR_DELIVERED, CommandRef, CommandStatus, OrderRecord
from streams.messages import Allocation, CommandKind, CommandLine, FulfilmentCommand, make_id


def command_id(
    order_id: str, kind: CommandKind, warehouse: str, attempt: int = 1, refers_to: str = ""
) -> str:
    """Same order, kind, warehouse, attempt (and target) -> same id on any worker."""
    parts: tuple[object, ...] = (order_id, kind.value, warehouse, attempt)
    return make_id("C", *parts, refers_to) if refers_to else make_id("C", *parts)


@dataclass
class _Share:
    """Units of one sku a warehouse holds for the order, not yet put on a command line."""

    warehouse: str
    units: int


def lines_by_warehouse(
    record: OrderRecord, allocations: Sequence[Allocation] | None = None
) -> dict[str, list[CommandLine]]:
    """Order lines (gifts included) shared out over the reservation's allocations; a sku split
    across warehouses splits its lines' quantities the same way."""
    left: defaultdict[str, list[_Share]] = defaultdict(list)  # sku -> shares still to hand out
    for a in record.allocations if allocations is None else allocations:
        left[a.sku].append(_Share(a.warehouse, a.quantity))
    out: dict[str, list[CommandLine]] = defaultdict(list)
    for line in record.lines:
        need = line.quantity
        for part in left[line.sku]:
            take = min(need, part.units)
            if take:
                out[part.warehouse].append(
                    CommandLine(
                        line_id=line.line_id, sku=line.sku, quantity=take, is_gift=line.is_gift
                    )
                )
                part.units -= take
                need -= take
            if not need:
                break
    return dict(out)


def build_command(
    record: OrderRecord,
    kind: CommandKind,
    warehouse: str,
    lines: list[CommandLine],
    at: datetime,
    *,
    cid: str,
    carrier: str = "",
    attempt: int = 1,
    shipment: str = "",
    refers_to: str = "",
    merged: Sequence[str] = (),
    weight_g: int = 0,
    ship_by: float | None = None,
    priority: int | None = None,
) -> FulfilmentCommand:
    """``ship_by`` (unix seconds, 0: none) and ``priority`` of an outbound default to the
    record's (a merged parcel passes its members')."""
    order = record.order
    outbound = kind is CommandKind.OUTBOUND
    deadline = (record.ship_by if ship_by is None else ship_by) if outbound else 0.0
    return FulfilmentCommand(
        command_id=cid,
        kind=kind,
        order_id=record.order_id,
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        warehouse=warehouse,
        carrier=carrier,
        ship_to=record.address,
        lines=lines,
        buyer_remark=order.buyer_remark,
        created_at=at,
        attempt=attempt,
        shipment=shipment,
        merged_order_ids=list(merged),
        weight_g=weight_g,
        refers_to=refers_to,
        ship_by=datetime.fromtimestamp(deadline, UTC) if deadline else None,
        priority=(record.priority if priority is None else priority) if outbound else 0,
    )


def track(record: OrderRecord, command: FulfilmentCommand, primary: str = "") -> None:
    """Remember a sent command on the record, so WMS answers can be matched to it."""
    record.commands.append(
        CommandRef(
            command_id=command.command_id,
            kind=command.kind,
            warehouse=command.warehouse,
            shipment=command.shipment or record.order_id,
            attempt=command.attempt,
            carrier=command.carrier,
            lines=list(command.lines),
            primary=primary,
            refers_to=command.refers_to,
        )
    )


def next_attempt(record: OrderRecord) -> int:
    outbound = [c.attempt for c in record.commands if c.kind is CommandKind.OUTBOUND]
    return max(outbound, default=0) + 1


@dataclass(frozen=True)
class Parcel:
    """What leaves one warehouse for an order: its lines, their weight and the carrier."""

    lines: list[CommandLine]
    weight_g: int
    carrier: str


def outbound_commands(
    record: OrderRecord,
    at: datetime,
    parcels: Mapping[str, Parcel] | None = None,
    *,
    attempt: int = 1,
) -> list[FulfilmentCommand]:
    """One outbound per warehouse of the order's reservation, tracked on the record.
    ``parcels`` (warehouse -> Parcel) carries what routing chose; without it the lines are
    shared out here and the record's carrier is used."""
    if parcels is None:
        parcels = {
            wh: Parcel(lines, 0, record.carrier) for wh, lines in lines_by_warehouse(record).items()
        }
    commands = []
    for warehouse, parcel in sorted(parcels.items()):
        command = build_command(
            record,
            CommandKind.OUTBOUND,
            warehouse,
            parcel.lines,
            at,
            cid=command_id(record.order_id, CommandKind.OUTBOUND, warehouse, attempt),
            carrier=parcel.carrier,
            attempt=attempt,
            weight_g=parcel.weight_g,
        )
        track(record, command)
        commands.append(command)
    return commands


def stop_command(record: OrderRecord, ref: CommandRef, at: datetime) -> FulfilmentCommand:
    """Cancel an outbound the warehouse has not picked yet, intercept one it has."""
    kind = CommandKind.INTERCEPT if ref.status is CommandStatus.PICKED else CommandKind.CANCEL
    command = build_command(
        record,
        kind,
        ref.warehouse,
        [line for line in ref.lines if line.order_id in ("", record.order_id)] or ref.lines,
        at,
        cid=command_id(record.order_id, kind, ref.warehouse, ref.attempt, ref.command_id),
        carrier=ref.carrier,
        attempt=ref.attempt,
        shipment="" if ref.shipment == record.order_id else ref.shipment,
        refers_to=ref.command_id,
    )
    track(record, command, primary=ref.primary)
    return command


def return_commands(
    record: OrderRecord,
    by_warehouse: Mapping[str, list[CommandLine]],
    request_id: str,
    at: datetime,
) -> list[FulfilmentCommand]:
    """Tell each warehouse which units to expect back."""
    commands = []
    for warehouse, lines in sorted(by_warehouse.items()):
        command = build_command(
            record,
            CommandKind.RETURN_INBOUND,
            warehouse,
            lines,
            at,
            cid=make_id(
                "C", record.order_id, CommandKind.RETURN_INBOUND.value, warehouse, request_id
            ),
            refers_to=request_id,
        )
        track(record, command)
        commands.append(command)
    return commands


def shipped_units(
    record: OrderRecord, line_ids: Iterable[str] = ()
) -> dict[str, list[CommandLine]]:
    """The order's own units that left each warehouse (merged shipments included), optionally
    only of some lines: what a return can bring back."""
    wanted = set(line_ids)
    out: dict[str, list[CommandLine]] = defaultdict(list)
    for ref in record.own_outbounds():
        if ref.status not in SHIPPED_OR_DELIVERED:
            continue
        for line in ref.lines:
            mine = line.order_id in ("", record.order_id)
            if mine and (not wanted or line.line_id in wanted):
                out[ref.warehouse].append(line.model_copy(update={"order_id": ""}))
    return dict(out)
