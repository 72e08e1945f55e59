"""The analytics scenario both ClickHouse versions must report identically: tests/unit/
test_chdb_compat.py runs it through chdb (current ClickHouse), tests/integration/test_analytics.py
through the local 18.16 server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from analytics.facts import StockMovement
from streams.messages import (
    Allocation,
    DlqReason,
    DlqRecord,
    EventKind,
    OrderEvent,
    OrderState,
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

T0 = datetime(2024, 11, 11, tzinfo=UTC)


def make_order(
    channel: str,
    ext: str,
    lines: list[tuple[str, str, int, str, str]],
    *,
    total: str,
    currency: str = "CNY",
    shipping: str = "0",
    created: datetime = T0,
) -> Order:
    return Order(
        order_id=make_order_id(channel, "shop1", ext),
        channel=Channel(channel),
        shop_id="shop1",
        external_id=ext,
        channel_status=ChannelStatus.PAID,
        created_at=created,
        updated_at=created,
        currency=currency,
        buyer=Buyer(id=f"buyer-{ext}", name="Zhang San", phone="13800000000"),
        address=Address(
            province="Zhejiang",
            province_code="ZJ",
            city="Hangzhou",
            street="1 West Lake Road",
            name="Zhang San",
            phone="13800000000",
        ),
        lines=[
            OrderLine(
                line_id=lid, sku=sku, quantity=q, unit_price=Decimal(up), paid_amount=Decimal(pa)
            )
            for lid, sku, q, up, pa in lines
        ],
        payment=Payment(status=PaymentStatus.PAID, paid_total=Decimal(total), paid_at=created),
        shipping_fee=Decimal(shipping),
        total=Decimal(total),
    )


def make_event(
    order: Order,
    seq: int,
    kind: EventKind,
    to_state: OrderState | None = None,
    *,
    reason: str = "",
    allocs: tuple[tuple[str, str, int], ...] = (),
    snapshot: Order | None = None,
) -> OrderEvent:
    return OrderEvent(
        event_id=make_id("E", order.order_id, seq, kind),
        order_id=order.order_id,
        seq=seq,
        kind=kind,
        to_state=to_state,
        reason=reason,
        at=order.created_at + timedelta(seconds=seq),
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        allocations=[Allocation(sku=s, warehouse=w, quantity=q) for s, w, q in allocs],
        order=snapshot,
    )


def scenario() -> list[OrderEvent | DlqRecord]:
    """5 orders: released, updated+reserved (a line removed), held, rejected, reserved+duplicate;
    3 DLQ records. Money with 4 decimals on purpose."""
    st, k = OrderState, EventKind
    o1 = make_order(
        "taobao",
        "T1",
        [("1", "A", 2, "19.99", "39.98"), ("2", "B", 1, "5.01", "5.01")],
        total="50.99",
        shipping="6",
    )
    o2 = make_order(
        "taobao",
        "T2",
        [("1", "A", 2, "19.99", "39.98"), ("2", "B", 1, "5.01", "5.01")],
        total="44.99",
    )
    o2b = make_order("taobao", "T2", [("1", "A", 1, "19.99", "19.99")], total="25.99", shipping="6")
    o3 = make_order("shopify", "S3", [("1", "C", 1, "9.99", "9.99")], total="9.99", currency="USD")
    o4 = make_order("shopify", "S4", [("1", "C", 1, "9.99", "9.99")], total="9.99", currency="USD")
    o5 = make_order(
        "shopify",
        "S5",
        [("1", "C", 3, "0.3333", "0.9999")],
        total="10.9999",
        currency="USD",
        shipping="10",
        created=T0 + timedelta(hours=1),
    )
    items: list[OrderEvent | DlqRecord] = [
        make_event(o1, 1, k.RECEIVED, st.RECEIVED, snapshot=o1),
        make_event(o1, 2, k.RESERVED, st.RESERVED, allocs=(("A", "W1", 2), ("B", "W1", 1))),
        make_event(o1, 3, k.RELEASED, st.RELEASED, allocs=(("A", "W1", 2), ("B", "W1", 1))),
        make_event(o2, 1, k.RECEIVED, st.RECEIVED, snapshot=o2),
        make_event(o2, 2, k.UPDATED, st.RECEIVED, snapshot=o2b),
        make_event(o2, 3, k.RESERVED, st.RESERVED, allocs=(("A", "W1", 1),)),
        make_event(o3, 1, k.RECEIVED, st.RECEIVED, snapshot=o3),
        make_event(o3, 2, k.HELD, st.HELD, reason="address_incomplete"),
        make_event(o4, 1, k.RECEIVED, st.RECEIVED, snapshot=o4),
        make_event(o4, 2, k.REJECTED, st.REJECTED, reason="blacklisted_buyer"),
        make_event(o5, 1, k.RECEIVED, st.RECEIVED, snapshot=o5),
        make_event(o5, 2, k.RESERVED, st.RESERVED, allocs=(("C", "W2", 3),)),
        make_event(o5, 3, k.DUPLICATE, None, snapshot=o5),
    ]
    reasons = [DlqReason.MALFORMED_JSON, DlqReason.MALFORMED_JSON, DlqReason.UNKNOWN_CHANNEL]
    items += [
        DlqRecord(
            dlq_id=f"D{i}",
            reason=r,
            detail="bad json " * 100,
            source_topic="oms.raw.jd",
            partition=0,
            offset=i,
            channel="jd",
            payload='{"name": "Zhang San"}',
            received_at=T0,
        )
        for i, r in enumerate(reasons)
    ]
    return items


# The stock ledger of the scenario (as the ledger shipper writes it): A/W1 has 2 on hand but
# 3 reserved (T1 2 + T2 1) and B/W1 none on hand but 1 reserved: 2 units oversold, which
# the stock layer can never produce but the report must be able to show.
STOCK = [
    StockMovement("M1", "A", "W1", "load", 2, 0, T0),
    StockMovement("M2", "C", "W2", "load", 5, 0, T0),
    StockMovement("M3", "A", "W1", "reserve", 0, 2, T0, ref="T1"),
    StockMovement("M4", "B", "W1", "reserve", 0, 1, T0, ref="T1"),
    StockMovement("M5", "A", "W1", "reserve", 0, 1, T0, ref="T2"),
    StockMovement("M6", "C", "W2", "reserve", 0, 3, T0, ref="S5"),
    StockMovement("M7", "C", "W2", "inbound", 0, 0, T0, ref="PO1", inbound_delta=4),
]

EXPECTED: dict[str, Any] = {
    "since": None,
    "orders_in": 5,
    "accepted": 3,
    "held": 1,
    "rejected": 1,
    "orders_by_state": {"held": 1, "rejected": 1, "released": 1, "reserved": 2},
    "orders_by_channel": {"shopify": 3, "taobao": 2},
    "held_by_reason": {"address_incomplete": 1},
    "rejected_by_reason": {"blacklisted_buyer": 1},
    "duplicates": 1,
    "dlq_total": 3,
    "dlq_by_reason": {"malformed_json": 2, "unknown_channel": 1},
    "gmv_by_channel": {"taobao": "76.98"},
    "gmv_by_channel_currency": [
        {"channel": "shopify", "currency": "USD", "orders": 1, "gmv": "10.9999"},
        {"channel": "taobao", "currency": "CNY", "orders": 2, "gmv": "76.98"},
    ],
    "top_skus": [
        {"sku": "A", "units": 3, "gmv": {"CNY": "59.97"}},
        {"sku": "C", "units": 3, "gmv": {"USD": "0.9999"}},
        {"sku": "B", "units": 1, "gmv": {"CNY": "5.01"}},
    ],
    "stock_checked": True,
    "oversold_units": 2,
    "oversold": [
        {"sku": "A", "warehouse": "W1", "reserved_units": 3, "on_hand": 2, "excess": 1},
        {"sku": "B", "warehouse": "W1", "reserved_units": 1, "on_hand": 0, "excess": 1},
    ],
    # The scenario ends at release; tests/integration/test_lifecycle_e2e.py covers the rest.
    "lifecycle": {},
    "lifecycle_events": {},
    "split_orders": 0,
    "merged_parcels": 0,
}
