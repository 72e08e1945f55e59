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
    "waiting_by_reason": {},
    "backorders_retried": 0,
    "backorders_cleared": 0,
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
    # T1 released (A 2, B 1), T2 reserved after its update (A 1), S5 reserved (C 3)
    "reserved_by_sku": {"A": 3, "C": 3, "B": 1},
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

# Keys the fulfilment/after-sales report sections (issue 5) add for the scenario above: no
# fulfilment facts, so only shops, the hourly series and the ledger's sell-through show.
EXPECTED.update(
    {
        # the scenario's events name no warehouse (the pipeline's do: tests/integration/
        # test_overseas.py): every accepted order counts under ''
        "gmv_by_warehouse": [
            {"warehouse": "", "currency": "CNY", "orders": 2, "gmv": "76.98"},
            {"warehouse": "", "currency": "USD", "orders": 1, "gmv": "10.9999"},
        ],
        "gmv_by_shop": [
            {
                "channel": "shopify",
                "shop_id": "shop1",
                "currency": "USD",
                "orders": 1,
                "gmv": "10.9999",
            },
            {
                "channel": "taobao",
                "shop_id": "shop1",
                "currency": "CNY",
                "orders": 2,
                "gmv": "76.98",
            },
        ],
        "by": "hour",
        "sales_series": [
            {
                "bucket": "2024-11-11T00:00:00Z",
                "channel": "taobao",
                "currency": "CNY",
                "orders": 2,
                "gmv": "64.98",
            },
            {
                "bucket": "2024-11-11T01:00:00Z",
                "channel": "shopify",
                "currency": "USD",
                "orders": 1,
                "gmv": "0.9999",
            },
        ],
        "sell_through": [
            {
                "sku": "A",
                "reserved_units": 3,
                "shipped_units": 0,
                "on_hand": 2,
                "sell_through": 0.0,
            },
            {
                "sku": "C",
                "reserved_units": 3,
                "shipped_units": 0,
                "on_hand": 5,
                "sell_through": 0.0,
            },
            {
                "sku": "B",
                "reserved_units": 1,
                "shipped_units": 0,
                "on_hand": 0,
                "sell_through": None,
            },
        ],
        "fulfilment_latency": {"shipped_orders": 0, "p50_s": None, "p95_s": None},
        "aftersales_orders": {"returns": 0, "refunds": 0, "exchanges": 0, "cancels": 0},
        "aftersales_rates": {"returns": 0.0, "refunds": 0.0, "exchanges": 0.0, "cancels": 0.0},
        "aftersales_requests": {},
        "commands_by_kind": {},
        "wms_events_by_kind": {},
    }
)


# ---------------------------------------------------------------- an order's life (issue 5)

TL = datetime(2024, 11, 12, 10, tzinfo=UTC)


def life_event(
    order: Order,
    seq: int,
    kind: EventKind,
    to_state: OrderState | None,
    after_s: int,
    *,
    snapshot: Order | None = None,
) -> OrderEvent:
    """An order event ``after_s`` seconds after the order was placed (and paid)."""
    return make_event(order, seq, kind, to_state, snapshot=snapshot).model_copy(
        update={"at": order.created_at + timedelta(seconds=after_s)}
    )


def _command(order: Order, kind: str, n: int, lines: list[tuple[str, str, int]]) -> Any:
    from streams.messages import CommandLine, FulfilmentCommand

    return FulfilmentCommand(
        command_id=f"C-{order.order_id}-{kind}-{n}",
        kind=kind,
        order_id=order.order_id,
        channel=order.channel,
        shop_id=order.shop_id,
        external_id=order.external_id,
        warehouse="W1",
        carrier="SF",
        ship_to=order.address,
        lines=[CommandLine(line_id=lid, sku=sku, quantity=q) for lid, sku, q in lines],
        buyer_remark="leave it with Zhang San",
        created_at=order.created_at + timedelta(seconds=5 + n),
        attempt=n,
    )


def _wms(order: Order, kind: str, after_s: int, units: int) -> Any:
    from streams.messages import CommandLine, WmsEvent

    return WmsEvent(
        event_id=f"W-{order.order_id}-{kind}",
        command_id=f"C-{order.order_id}-outbound-1",
        order_id=order.order_id,
        kind=kind,
        warehouse="W1",
        carrier="SF",
        tracking_number=f"SF{order.external_id}",
        lines=[CommandLine(line_id="1", sku="H", quantity=units)],
        sellable=kind != "return_received",
        at=order.created_at + timedelta(seconds=after_s),
    )


def _request(order: Order, kind: str, after_s: int, **kw: Any) -> Any:
    from streams.messages import AfterSalesRequest

    return AfterSalesRequest(
        request_id=f"R-{order.order_id}-{kind}",
        order_id=order.order_id,
        kind=kind,
        reason="Zhang San called from 13800000000",
        requested_by="cs-desk",
        at=order.created_at + timedelta(seconds=after_s),
        **kw,
    )


def _life_orders() -> dict[str, Order]:
    def order(channel: str, shop: str, ext: str, after_s: int, lines: Any, total: str) -> Order:
        o = make_order(channel, ext, lines, total=total, created=TL + timedelta(seconds=after_s))
        return o.model_copy(update={"shop_id": shop, "order_id": make_order_id(channel, shop, ext)})

    return {
        "L1": order("jd", "shopA", "L1", 0, [("1", "H", 2, "50.00", "100.00")], "100.00"),
        "L2": order(
            "jd",
            "shopA",
            "L2",
            30,
            [("1", "H", 1, "33.3333", "33.3333"), ("2", "K", 2, "9.99", "19.98")],
            "53.3133",
        ),
        "L2b": order("jd", "shopA", "L2", 30, [("1", "H", 1, "33.3333", "33.3333")], "33.3333"),
        "L3": order(
            "douyin",
            "shopB",
            "L3",
            70,
            [("1", "H", 1, "50.00", "50.00"), ("2", "K", 3, "9.99", "29.97")],
            "79.97",
        ),
        "L4": order("douyin", "shopB", "L4", 110, [("1", "K", 1, "9.99", "9.99")], "9.99"),
        "L5": order("jd", "shopA", "L5", 120, [("1", "H", 1, "50.00", "50.00")], "50.00"),
    }


def lifecycle_scenario() -> list[Any]:
    """Five orders through fulfilment and after-sales: L1 shipped after 600 s, returned and
    refunded; L2 updated (a line removed), shipped after 1800 s, exchanged; L3 shipped after
    7200 s in two parcels and refunded in part; L4 released then intercepted; L5 held. With
    their commands, WMS answers and after-sales requests (one address change)."""
    o = _life_orders()
    st, k = OrderState, EventKind
    l1, l2, l3, l4, l5 = o["L1"], o["L2"], o["L3"], o["L4"], o["L5"]
    events = [
        life_event(l1, 1, k.RECEIVED, st.RECEIVED, 1, snapshot=l1),
        life_event(l1, 2, k.RESERVED, st.RESERVED, 2),
        life_event(l1, 3, k.RELEASED, st.RELEASED, 3),
        life_event(l1, 4, k.SHIPPED, st.SHIPPED, 600),
        life_event(l1, 5, k.RETURN_REQUESTED, st.RETURNING, 4000),
        life_event(l1, 6, k.REFUNDED, st.REFUNDED, 5000),
        life_event(l2, 1, k.RECEIVED, st.RECEIVED, 1, snapshot=l2),
        life_event(l2, 2, k.UPDATED, st.RECEIVED, 2, snapshot=o["L2b"]),
        life_event(l2, 3, k.RESERVED, st.RESERVED, 3),
        life_event(l2, 4, k.RELEASED, st.RELEASED, 4),
        life_event(l2, 5, k.SHIPPED, st.SHIPPED, 1800),
        life_event(l2, 6, k.EXCHANGE_REQUESTED, st.EXCHANGING, 4000),
        life_event(l3, 1, k.RECEIVED, st.RECEIVED, 1, snapshot=l3),
        life_event(l3, 2, k.RESERVED, st.RESERVED, 2),
        life_event(l3, 3, k.RELEASED, st.RELEASED, 3),
        life_event(l3, 4, k.SHIPPED, st.SHIPPED, 7200),
        life_event(l3, 5, k.SHIPPED, st.SHIPPED, 9000),  # the second parcel
        life_event(l3, 6, k.REFUNDED, st.SHIPPED, 9500),
        life_event(l4, 1, k.RECEIVED, st.RECEIVED, 1, snapshot=l4),
        life_event(l4, 2, k.RESERVED, st.RESERVED, 2),
        life_event(l4, 3, k.RELEASED, st.RELEASED, 3),
        life_event(l4, 4, k.INTERCEPT_REQUESTED, st.INTERCEPTING, 60),
        life_event(l5, 1, k.RECEIVED, st.RECEIVED, 1, snapshot=l5),
        life_event(l5, 2, k.HELD, st.HELD, 2),
    ]
    commands = [
        _command(l1, "outbound", 1, [("1", "H", 2)]),
        _command(l2, "outbound", 1, [("1", "H", 1)]),
        _command(l3, "outbound", 1, [("1", "H", 1), ("2", "K", 3)]),
        _command(l4, "outbound", 1, [("1", "K", 1)]),
        _command(l4, "intercept", 2, [("1", "K", 1)]),
        _command(l1, "return_inbound", 2, [("1", "H", 2)]),
        _command(l2, "outbound", 2, [("1", "K", 1)]),  # the exchange's replacement
    ]
    wms = [
        _wms(l1, "shipped", 600, 2),
        _wms(l2, "shipped", 1800, 1),
        _wms(l3, "shipped", 7200, 1),
        _wms(l1, "return_received", 4500, 2),
    ]
    requests = [
        _request(l1, "return", 4000),
        _request(l2, "exchange", 4000, exchange_sku="K"),
        _request(l3, "refund", 9500, line_ids=["2"], amount=Decimal("10.0050")),
        _request(l4, "cancel", 60),
        _request(l5, "address_change", 30, new_address=l5.address),
    ]
    return [*events, *commands, *wms, *requests]


LIFE_STOCK = [
    StockMovement("LM1", "H", "W1", "load", 10, 0, TL),
    StockMovement("LM2", "K", "W1", "load", 5, 0, TL),
    StockMovement("LM3", "H", "W1", "reserve", 0, 2, TL, ref="L1"),
    StockMovement("LM4", "H", "W1", "reserve", 0, 1, TL, ref="L2"),
    StockMovement("LM5", "H", "W1", "reserve", 0, 1, TL, ref="L3"),
    StockMovement("LM6", "K", "W1", "reserve", 0, 3, TL, ref="L3"),
    StockMovement("LM7", "K", "W1", "reserve", 0, 1, TL, ref="L4"),
    StockMovement("LM8", "H", "W1", "commit", -2, -2, TL, ref="L1", sit_delta=2),
    StockMovement("LM9", "H", "W1", "commit", -1, -1, TL, ref="L2", sit_delta=1),
    StockMovement("LM10", "H", "W1", "commit", -1, -1, TL, ref="L3", sit_delta=1),
    StockMovement("LM11", "K", "W1", "commit", -3, -3, TL, ref="L3", sit_delta=3),
]

# What build_report(by="minute") must say about the lifecycle scenario, on both versions.
LIFE_EXPECTED: dict[str, Any] = {
    "orders_in": 5,
    "accepted": 4,
    "held": 1,
    "gmv_by_channel": {"douyin": "89.96", "jd": "133.3333"},
    "gmv_by_shop": [
        {"channel": "douyin", "shop_id": "shopB", "currency": "CNY", "orders": 2, "gmv": "89.96"},
        {"channel": "jd", "shop_id": "shopA", "currency": "CNY", "orders": 2, "gmv": "133.3333"},
    ],
    "by": "minute",
    "sales_series": [
        {
            "bucket": "2024-11-12T10:00:00Z",
            "channel": "jd",
            "currency": "CNY",
            "orders": 2,
            "gmv": "133.3333",
        },
        {
            "bucket": "2024-11-12T10:01:00Z",
            "channel": "douyin",
            "currency": "CNY",
            "orders": 2,
            "gmv": "89.96",
        },
    ],
    "sell_through": [
        {"sku": "H", "reserved_units": 4, "shipped_units": 4, "on_hand": 6, "sell_through": 0.4},
        {"sku": "K", "reserved_units": 4, "shipped_units": 3, "on_hand": 2, "sell_through": 0.6},
    ],
    "fulfilment_latency": {"shipped_orders": 3, "p50_s": 1800, "p95_s": 7200},
    "aftersales_orders": {"returns": 1, "refunds": 2, "exchanges": 1, "cancels": 1},
    "aftersales_rates": {
        "returns": 0.3333,
        "refunds": 0.6667,
        "exchanges": 0.3333,
        "cancels": 0.3333,
    },
    "aftersales_requests": {
        "address_change": {"requests": 1, "orders": 1, "amount": None},
        "cancel": {"requests": 1, "orders": 1, "amount": None},
        "exchange": {"requests": 1, "orders": 1, "amount": None},
        "refund": {"requests": 1, "orders": 1, "amount": "10.005"},
        "return": {"requests": 1, "orders": 1, "amount": None},
    },
    "commands_by_kind": {"intercept": 1, "outbound": 5, "return_inbound": 1},
    "wms_events_by_kind": {"return_received": 1, "shipped": 3},
}
