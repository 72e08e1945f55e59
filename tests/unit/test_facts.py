"""Fact mapping: message -> ClickHouse row tuples (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from analytics.facts import (
    AFTERSALES_REQUESTS,
    COLUMNS,
    DLQ,
    DLQ_DETAIL_MAX,
    FULFILMENT_COMMANDS,
    ORDER_EVENTS,
    ORDER_LINES,
    ORDERS,
    STOCK_MOVEMENTS,
    WMS_EVENTS,
    StockMovement,
    buyer_hash,
    epoch_s,
    revision,
    rows_for,
    stock_movement_rows,
)
from streams.messages import (
    AfterSalesKind,
    AfterSalesRequest,
    Allocation,
    CommandKind,
    CommandLine,
    DlqReason,
    DlqRecord,
    EventKind,
    FulfilmentCommand,
    OrderEvent,
    OrderState,
    WmsEvent,
    WmsEventKind,
    make_id,
)
from streams.models import (
    Address,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    make_order_id,
)

CST = timezone(timedelta(hours=8))  # channels send China Standard Time
CREATED = datetime(2024, 11, 11, 0, 0, 7, 123456, tzinfo=CST)
SECRETS = ("Li Si", "13912345678", "88 Nanjing Road", "li@example.com", "buyer-42", "call me")


def an_order(lines: int = 2) -> Order:
    return Order(
        order_id=make_order_id("jd", "shop9", "J1"),
        channel=Channel.JD,
        shop_id="shop9",
        external_id="J1",
        channel_status=ChannelStatus.PAID,
        created_at=CREATED,
        updated_at=CREATED,
        currency="CNY",
        buyer=Buyer(id="buyer-42", name="Li Si", email="li@example.com", phone="13912345678"),
        address=Address(
            province="Shanghai",
            province_code="SH",
            city="Shanghai",
            district="Huangpu",
            street="88 Nanjing Road",
            name="Li Si",
            phone="13912345678",
        ),
        lines=[
            OrderLine(
                line_id=str(i),
                sku=f"SKU{i}",
                channel_sku=f"JD-{i}",
                quantity=i,
                unit_price=Decimal("10.0050"),
                discount=Decimal("0.01"),
                paid_amount=Decimal("10.0050") * i - Decimal("0.01"),
                is_gift=i == 2,
            )
            for i in range(1, lines + 1)
        ],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal("40.01"), paid_at=CREATED),
        shipping_fee=Decimal("10"),
        total=Decimal("40.01"),
        buyer_remark="call me",
    )


def an_event(
    seq: int, kind: EventKind, to_state: OrderState | None = None, *, order: Order | None = None
) -> OrderEvent:
    o = an_order()
    return OrderEvent(
        event_id=make_id("E", o.order_id, seq),
        order_id=o.order_id,
        seq=seq,
        kind=kind,
        from_state=OrderState.RECEIVED if seq > 1 else None,
        to_state=to_state,
        at=CREATED + timedelta(seconds=seq),
        channel=o.channel,
        shop_id=o.shop_id,
        external_id=o.external_id,
        warehouse="WH-SH" if kind is EventKind.RESERVED else "",
        allocations=[Allocation(sku="SKU1", warehouse="WH-SH", quantity=1)]
        if kind is EventKind.RESERVED
        else [],
        order=order,
    )


def a_dlq(i: int = 0) -> DlqRecord:
    return DlqRecord(
        dlq_id=f"D{i}",
        reason=DlqReason.INVALID_FIELD,
        detail="total: not a number " * 200,
        source_topic="oms.raw.jd",
        partition=3,
        offset=99,
        channel="jd",
        key="J1",
        payload='{"buyer": "Li Si", "phone": "13912345678"}',
        received_at=CREATED,
    )


def utc(*parts: int) -> int:
    """Unix seconds of a UTC wall time: what a DateTime column is given."""
    return int(datetime(*parts, tzinfo=UTC).timestamp())  # type: ignore[misc]


def test_epoch_s_converts_truncates_and_clamps() -> None:
    assert epoch_s(CREATED) == utc(2024, 11, 10, 16, 0, 7)  # +08:00, microseconds dropped
    assert epoch_s(datetime(1900, 1, 1, tzinfo=UTC)) == 0
    assert epoch_s(datetime(2200, 1, 1, tzinfo=UTC)) == utc(2105, 12, 31, 23, 59, 59)
    assert epoch_s(datetime(2024, 1, 1, 12)) == utc(2024, 1, 1, 12)  # naive is taken as UTC


def test_rows_match_columns_and_types() -> None:
    o = an_order()
    rows = rows_for([an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=o), a_dlq()])
    for table, table_rows in rows.items():
        assert all(len(r) == len(COLUMNS[table]) for r in table_rows), table
    order = dict(zip(COLUMNS[ORDERS], rows[ORDERS][0], strict=True))
    assert order["version"] == 1
    assert order["total"] == Decimal("40.01") and isinstance(order["total"], Decimal)
    assert order["created_at"] == utc(2024, 11, 10, 16, 0, 7)
    assert order["paid_at"] == utc(2024, 11, 10, 16, 0, 7)
    assert (order["line_count"], order["units"]) == (2, 3)
    assert (order["province_code"], order["city"]) == ("SH", "Shanghai")
    assert order["channel"] == "jd" and order["payment_status"] == "paid"
    lines = [dict(zip(COLUMNS[ORDER_LINES], r, strict=True)) for r in rows[ORDER_LINES]]
    assert [(ln["line_id"], ln["quantity"], ln["is_gift"]) for ln in lines] == [
        ("1", 1, 0),
        ("2", 2, 1),
    ]
    assert lines[1]["paid_amount"] == Decimal("20.0000") and lines[1]["currency"] == "CNY"


def test_event_row() -> None:
    rows = rows_for([an_event(2, EventKind.RESERVED, OrderState.RESERVED)])
    event = dict(zip(COLUMNS[ORDER_EVENTS], rows[ORDER_EVENTS][0], strict=True))
    assert event["kind"] == "reserved"
    assert (event["from_state"], event["to_state"]) == ("received", "reserved")
    assert event["at"] == utc(2024, 11, 10, 16, 0, 9)
    assert (event["alloc_sku"], event["alloc_warehouse"], event["alloc_qty"]) == (
        ["SKU1"],
        ["WH-SH"],
        [1],
    )
    assert rows[ORDERS] == [] and rows[ORDER_LINES] == []
    no_state = rows_for([an_event(3, EventKind.DUPLICATE)])[ORDER_EVENTS][0]
    assert no_state[COLUMNS[ORDER_EVENTS].index("to_state")] == ""


def test_only_received_and_updated_snapshots_make_versions() -> None:
    o = an_order()
    rows = rows_for(
        [
            an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=o),
            an_event(2, EventKind.UPDATED, order=an_order(lines=1)),
            an_event(3, EventKind.DUPLICATE, order=o),  # a snapshot here is not a new version
        ]
    )
    assert len(rows[ORDER_EVENTS]) == 3
    assert [r[1] for r in rows[ORDERS]] == [1, 2]
    assert [(r[1], r[2]) for r in rows[ORDER_LINES]] == [("1", 1), ("2", 1), ("1", 2)]


def test_duplicates_inside_a_batch_are_dropped() -> None:
    o = an_order()
    received = an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=o)
    rows = rows_for([received, received, a_dlq(), a_dlq()])
    assert {t: len(r) for t, r in rows.items() if r} == {
        ORDER_EVENTS: 1,
        ORDERS: 1,
        ORDER_LINES: 2,
        DLQ: 1,
    }


def test_a_re_emission_with_other_content_is_kept_beside_the_first() -> None:
    """Same id, later ``at`` (a worker decided the input again): both rows go to ClickHouse,
    where the later revision wins; dropping it here would lose the emission that holds."""
    o = an_order()
    first = an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=o)
    again = first.model_copy(update={"at": first.at + timedelta(milliseconds=5)})
    dlq_again = a_dlq().model_copy(update={"received_at": CREATED + timedelta(days=40)})
    rows = rows_for([first, again, first, a_dlq(), dlq_again, dlq_again])
    assert {t: len(r) for t, r in rows.items() if r} == {
        ORDER_EVENTS: 2,
        ORDERS: 2,
        ORDER_LINES: 4,
        DLQ: 2,
    }
    revs = [dict(zip(COLUMNS[ORDER_EVENTS], r, strict=True))["rev"] for r in rows[ORDER_EVENTS]]
    assert revs[1] > revs[0]


def test_revision_orders_by_seq_then_emission_time() -> None:
    t = datetime(2024, 11, 11, 0, 0, 7, 123456, tzinfo=UTC)
    assert revision(t, 3) == revision(t.astimezone(CST), 3)  # the instant, not the zone
    assert revision(t, 3) == revision(t.replace(tzinfo=None), 3)  # naive is UTC
    assert revision(t + timedelta(milliseconds=1), 3) > revision(t, 3)
    assert revision(t + timedelta(microseconds=10), 3) == revision(t, 3)  # ms resolution
    # a newer snapshot wins whatever the clocks: a worker behind by an hour still wins
    assert revision(t - timedelta(hours=1), 4) > revision(t, 3)
    assert revision(datetime(1900, 1, 1, tzinfo=UTC)) == 0
    assert revision(datetime(2999, 1, 1, tzinfo=UTC), 1 << 30) < 1 << 64
    rows = rows_for([an_event(2, EventKind.RESERVED, OrderState.RESERVED), a_dlq()])
    event = dict(zip(COLUMNS[ORDER_EVENTS], rows[ORDER_EVENTS][0], strict=True))
    assert event["rev"] == revision(CREATED + timedelta(seconds=2), 2)
    assert rows[DLQ][0][-1] == revision(CREATED)


def test_dlq_row_has_no_payload_and_a_short_detail() -> None:
    row = dict(zip(COLUMNS[DLQ], rows_for([a_dlq()])[DLQ][0], strict=True))
    assert len(row["detail"]) == DLQ_DETAIL_MAX
    assert (row["source_partition"], row["source_offset"]) == (3, 99)
    assert row["reason"] == "invalid_field" and row["received_at"] == utc(2024, 11, 10, 16, 0, 7)
    assert "payload" not in COLUMNS[DLQ] and "key" not in COLUMNS[DLQ]


def test_no_personal_data_in_any_row() -> None:
    o = an_order()
    rows = rows_for([an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=o), a_dlq()])
    dump = repr(rows)
    for secret in SECRETS:
        assert secret not in dump, secret


def test_buyer_hash_is_keyed_and_stable() -> None:
    buyer = Buyer(id="buyer-42", name="Li Si")
    h = buyer_hash(buyer)
    assert h == buyer_hash(Buyer(id="buyer-42", name="someone else")) and len(h) == 32
    assert buyer_hash(buyer, salt="other deployment") != h
    assert "buyer-42" not in h
    assert buyer_hash(Buyer(email=" Li@Example.com")) == buyer_hash(Buyer(email="li@example.com"))
    assert buyer_hash(Buyer()) == ""
    order_row = rows_for(
        [an_event(1, EventKind.RECEIVED, OrderState.RECEIVED, order=an_order())], salt="s2"
    )[ORDERS][0]
    assert order_row[COLUMNS[ORDERS].index("buyer_hash")] == buyer_hash(
        Buyer(id="buyer-42"), salt="s2"
    )


def test_stock_movement_rows() -> None:
    at = datetime(2024, 1, 1, 8, tzinfo=CST)
    rows = stock_movement_rows(
        [
            StockMovement("M1", "SKU1", "WH", "load", 10, 0, at, ref="stock.csv"),
            {
                "movement_id": "M2",
                "sku": "SKU1",
                "warehouse": "WH",
                "kind": "reserve",
                "on_hand_delta": 0,
                "reserved_delta": 2,
                "at": at,
            },
            StockMovement("M1", "SKU1", "WH", "load", 10, 0, at),  # replayed in the same batch
        ]
    )
    assert len(rows) == 2 and all(len(r) == len(COLUMNS[STOCK_MOVEMENTS]) for r in rows)
    first = ("M1", "SKU1", "WH", "load", 10, 0, "stock.csv", utc(2024, 1, 1), 0, 0, "", "")
    assert rows[0] == first
    (shipped,) = stock_movement_rows(
        [StockMovement("M3", "SKU1", "WH", "commit", -2, -2, at, ref="O1", sit_delta=2)]
    )
    assert shipped[8:10] == (0, 2)  # inbound_delta, sit_delta
    (adjusted,) = stock_movement_rows(
        [StockMovement("M4", "SKU1", "WH", "adjust", -1, 0, at, "op-1", actor="al", reason="dmg")]
    )
    assert (adjusted[6], *adjusted[10:]) == ("op-1", "al", "dmg")  # ref, actor, reason


def test_unknown_message_type_is_a_bug() -> None:
    with pytest.raises(TypeError):
        rows_for([an_order()])  # type: ignore[list-item]


LINES = [
    CommandLine(line_id="1", sku="SKU1", quantity=2),
    CommandLine(line_id="2", sku="SKU2", quantity=3),
]


def a_command(kind: CommandKind = CommandKind.OUTBOUND, attempt: int = 2) -> FulfilmentCommand:
    o = an_order()
    return FulfilmentCommand(
        command_id=f"C-{kind.value}-{attempt}",
        kind=kind,
        order_id=o.order_id,
        channel=o.channel,
        shop_id=o.shop_id,
        external_id=o.external_id,
        warehouse="WH-SH",
        carrier="SF",
        ship_to=o.address,
        lines=LINES,
        buyer_remark="call me",
        created_at=CREATED,
        attempt=attempt,
        shipment="X1",
        merged_order_ids=[o.order_id, "O2"],
        weight_g=1200,
        refers_to="C-prev",
    )


def a_wms_event(sellable: bool = False) -> WmsEvent:
    return WmsEvent(
        event_id="W1",
        command_id="C-outbound-2",
        order_id=an_order().order_id,
        kind=WmsEventKind.RETURN_RECEIVED,
        warehouse="WH-SH",
        carrier="SF",
        tracking_number="SF123",
        lines=LINES[:1],
        detail="handed back by Li Si",
        sellable=sellable,
        at=CREATED,
    )


def a_request(**kw: object) -> AfterSalesRequest:
    base: dict[str, object] = dict(
        request_id="R1",
        order_id=an_order().order_id,
        kind=AfterSalesKind.REFUND,
        line_ids=["1"],
        amount=Decimal("5.5"),
        reason="Li Si says 13912345678 is broken",
        requested_by="cs-desk",
        at=CREATED,
    )
    return AfterSalesRequest(**(base | kw))


def as_dict(table: str, row: tuple[object, ...]) -> dict[str, object]:
    assert len(row) == len(COLUMNS[table])
    return dict(zip(COLUMNS[table], row, strict=True))


def test_command_row() -> None:
    (row,) = rows_for([a_command()])[FULFILMENT_COMMANDS]
    c = as_dict(FULFILMENT_COMMANDS, row)
    assert (c["command_id"], c["kind"], c["channel"], c["warehouse"]) == (
        "C-outbound-2",
        "outbound",
        "jd",
        "WH-SH",
    )
    assert (c["attempt"], c["shipment"], c["refers_to"]) == (2, "X1", "C-prev")
    assert (c["merged_orders"], c["line_count"], c["units"], c["weight_g"]) == (2, 2, 5, 1200)
    assert c["created_at"] == utc(2024, 11, 10, 16, 0, 7)


def test_wms_event_row() -> None:
    (row,) = rows_for([a_wms_event()])[WMS_EVENTS]
    e = as_dict(WMS_EVENTS, row)
    assert (e["kind"], e["tracking_number"], e["sellable"]) == ("return_received", "SF123", 0)
    assert (e["line_count"], e["units"], e["at"]) == (1, 2, utc(2024, 11, 10, 16, 0, 7))
    assert as_dict(WMS_EVENTS, rows_for([a_wms_event(True)])[WMS_EVENTS][0])["sellable"] == 1


def test_aftersales_row_keeps_only_the_region_of_a_new_address() -> None:
    refund = as_dict(AFTERSALES_REQUESTS, rows_for([a_request()])[AFTERSALES_REQUESTS][0])
    assert refund["amount"] == Decimal("5.5") and isinstance(refund["amount"], Decimal)
    assert (refund["kind"], refund["line_ids"], refund["requested_by"]) == (
        "refund",
        ["1"],
        "cs-desk",
    )
    assert (refund["new_province_code"], refund["new_city"]) == ("", "")
    move = a_request(
        request_id="R2",
        kind=AfterSalesKind.ADDRESS_CHANGE,
        amount=None,
        new_address=an_order().address,
    )
    row = as_dict(AFTERSALES_REQUESTS, rows_for([move])[AFTERSALES_REQUESTS][0])
    assert (row["amount"], row["new_province_code"], row["new_city"]) == (None, "SH", "Shanghai")
    exchange = a_request(
        request_id="R3", kind=AfterSalesKind.EXCHANGE, amount=None, exchange_sku="SKU9"
    )
    assert (
        as_dict(AFTERSALES_REQUESTS, rows_for([exchange])[AFTERSALES_REQUESTS][0])["exchange_sku"]
        == "SKU9"
    )


def test_fulfilment_and_aftersales_rows_hold_no_personal_data() -> None:
    move = a_request(kind=AfterSalesKind.ADDRESS_CHANGE, new_address=an_order().address)
    dump = repr(rows_for([a_command(), a_wms_event(), move]))
    for secret in SECRETS:
        assert secret not in dump, secret
    assert "Huangpu" not in dump  # the district is finer than the region kept


def test_mixed_batch_dedupes_each_fact_by_its_id() -> None:
    command, event, request = a_command(), a_wms_event(), a_request()
    rows = rows_for([command, event, request, command, event, request, a_command(attempt=3)])
    assert {t: len(r) for t, r in rows.items() if r} == {
        FULFILMENT_COMMANDS: 2,
        WMS_EVENTS: 1,
        AFTERSALES_REQUESTS: 1,
    }
