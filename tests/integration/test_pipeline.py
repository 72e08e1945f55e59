"""The order path against the real test Redis (no broker): dedupe, audit, reserve, route,
fulfil, replay safety and the no-oversell invariant under concurrent workers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
import redis.asyncio as aioredis

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.plan import BatchResult
from order.route import RoutingTable
from state.keys import Keys
from state.redis import connect
from state.stock import StockRow, load_stock, stock_levels
from state.verify import verify
from streams.channels.base import AdapterContext
from streams.messages import (
    CommandKind,
    EventKind,
    FulfilmentCommand,
    OperatorAction,
    OperatorActionKind,
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
from streams.normalise import RawInput

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)


def own_order(
    ext: str,
    lines: dict[str, int],
    *,
    province: str = "ZJ",
    paid: bool = True,
    status: ChannelStatus = ChannelStatus.PAID,
    minutes: int = 0,
) -> Order:
    order_lines = [
        OrderLine(
            line_id=f"L{i}",
            sku=sku,
            quantity=qty,
            unit_price=Decimal("10.00"),
            paid_amount=Decimal("10.00") * qty,
        )
        for i, (sku, qty) in enumerate(lines.items(), start=1)
    ]
    total = sum((ln.paid_amount for ln in order_lines), Decimal("0"))
    return Order(
        order_id=make_order_id("own", "shop1", ext),
        channel=Channel.OWN,
        shop_id="shop1",
        external_id=ext,
        channel_status=status,
        created_at=T0,
        updated_at=T0 + timedelta(minutes=minutes),
        currency="CNY",
        buyer=Buyer(id="b1", name="张三"),
        address=Address(
            province="浙江省",
            province_code=province,
            city="杭州市",
            street="文三路 1 号",
            name="张三",
            phone="13800000000",
        ),
        lines=order_lines,
        payment=Payment(
            status=PaymentStatus.PAID if paid else PaymentStatus.UNPAID,
            paid_total=total if paid else Decimal("0"),
        ),
        total=total,
    )


class Feed:
    """Hands the pipeline raw messages as Kafka would: one growing offset per topic."""

    def __init__(self) -> None:
        self.offset = 0

    def raw(self, order: Order | bytes, *, offset: int | None = None) -> RawInput:
        value = order if isinstance(order, bytes) else order.model_dump_json().encode()
        if offset is None:
            self.offset += 1
            offset = self.offset
        return RawInput("own", value, "oms.raw.own", 0, offset, "k")


@pytest.fixture
async def pipeline(redis_settings: Settings, base_settings: Settings):  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True)
    routing = RoutingTable.load(base_settings.config_dir / "warehouses.toml")
    yield OrderPipeline(redis_settings, client, routing, AdapterContext())
    await client.aclose()


def stock(settings: Settings, rows: list[tuple[str, str, int]]) -> None:
    load_stock(connect(settings), Keys(settings.redis_prefix), [StockRow(*r) for r in rows])


def events(result: BatchResult) -> list[OrderEvent]:
    return [
        OrderEvent.model_validate_json(v)
        for t, _, v in result.outputs
        if t.endswith("order-events")
    ]


def commands(result: BatchResult) -> list[FulfilmentCommand]:
    return [
        FulfilmentCommand.model_validate_json(v)
        for t, _, v in result.outputs
        if t.endswith("fulfilment.commands")
    ]


def wms_answer(command: FulfilmentCommand, kind: WmsEventKind, **fields: object) -> WmsEvent:
    """What the WMS says about a command, as the simulator would."""
    return WmsEvent(
        event_id=make_id("W", command.command_id, kind.value),
        command_id=command.command_id,
        order_id=command.order_id,
        kind=kind,
        warehouse=command.warehouse,
        at=datetime.now(UTC),
        **fields,  # type: ignore[arg-type]
    )


def levels(settings: Settings, sku: str) -> dict[str, tuple[int, int]]:
    return {
        lv.warehouse: (lv.on_hand, lv.reserved)
        for lv in stock_levels(connect(settings), Keys(settings.redis_prefix), sku)
    }


async def test_new_order_is_reserved_routed_and_released(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 5), ("B", "WH-SH", 1), ("B", "WH-BJ", 9)])
    feed = Feed()
    # Zhejiang routes WH-SH first, but WH-SH lacks 2 B: the whole order goes to... nowhere in
    # WH-SH; WH-GZ has nothing; WH-BJ has B but no A -> shortage, held, nothing reserved.
    held = await pipeline.process([feed.raw(own_order("1", {"A": 1, "B": 2}))])
    assert [e.kind for e in events(held)] == [EventKind.RECEIVED, EventKind.AUDITED, EventKind.HELD]
    assert events(held)[-1].reason == "out_of_stock"
    assert levels(redis_settings, "B") == {"WH-SH": (1, 0), "WH-BJ": (9, 0)}

    ok = await pipeline.process([feed.raw(own_order("2", {"A": 2, "B": 1}))])
    kinds = [e.kind for e in events(ok)]
    assert kinds == [
        EventKind.RECEIVED,
        EventKind.AUDITED,
        EventKind.RESERVED,
        EventKind.ROUTED,
        EventKind.RELEASED,
    ]
    [cmd] = commands(ok)
    assert cmd.kind is CommandKind.OUTBOUND and cmd.warehouse == "WH-SH"
    assert {(ln.sku, ln.quantity) for ln in cmd.lines} == {("A", 2), ("B", 1)}
    assert levels(redis_settings, "A") == {"WH-SH": (5, 2)}
    assert levels(redis_settings, "B") == {"WH-SH": (1, 1), "WH-BJ": (9, 0)}
    record = await pipeline.orders.load(make_order_id("own", "shop1", "2"))
    assert record is not None and record.state is OrderState.RELEASED
    assert record.warehouse == "WH-SH"


async def test_repush_is_counted_and_redelivery_reemits_same_ids(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    order = own_order("7", {"A": 3})
    first_raw = feed.raw(order)
    first = await pipeline.process([first_raw])
    again = await pipeline.process([first_raw])  # same delivery: a crash made Kafka resend it
    assert again.outputs == first.outputs
    assert again.counts["redelivery"] == 1
    repush = await pipeline.process([feed.raw(order)])  # channel pushed it again
    assert [e.kind for e in events(repush)] == [EventKind.DUPLICATE]
    assert commands(repush) == []
    assert levels(redis_settings, "A") == {"WH-SH": (10, 3)}


async def test_duplicates_in_one_batch_apply_in_order(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    order = own_order("8", {"A": 4})
    result = await pipeline.process([feed.raw(order), feed.raw(order), feed.raw(order)])
    assert result.counts["new"] == 1 and result.counts["duplicate"] == 2
    assert levels(redis_settings, "A") == {"WH-SH": (10, 4)}


async def test_unpaid_is_held_then_payment_update_reserves(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    unpaid = await pipeline.process([feed.raw(own_order("9", {"A": 1}, paid=False))])
    assert events(unpaid)[-1].kind is EventKind.HELD and events(unpaid)[-1].reason == "unpaid"
    paid = await pipeline.process([feed.raw(own_order("9", {"A": 1}, minutes=5))])
    assert [e.kind for e in events(paid)] == [
        EventKind.UPDATED,
        EventKind.AUDITED,
        EventKind.RESERVED,
        EventKind.ROUTED,
        EventKind.RELEASED,
    ]
    stale = await pipeline.process([feed.raw(own_order("9", {"A": 1}, paid=False, minutes=1))])
    assert [e.kind for e in events(stale)] == [EventKind.STALE]
    assert levels(redis_settings, "A") == {"WH-SH": (10, 1)}


async def test_channel_cancel_releases_stock_and_cancels_at_wms(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    await pipeline.process([feed.raw(own_order("10", {"A": 6}))])
    assert levels(redis_settings, "A") == {"WH-SH": (10, 6)}
    cancel = await pipeline.process(
        [feed.raw(own_order("10", {"A": 6}, status=ChannelStatus.CANCELLED, minutes=3))]
    )
    # The WMS has the order: ask it to stop; stock comes back only when it confirms.
    assert [e.kind for e in events(cancel)] == [EventKind.UPDATED, EventKind.INTERCEPT_REQUESTED]
    [stop] = commands(cancel)
    assert stop.kind is CommandKind.CANCEL and stop.refers_to
    assert levels(redis_settings, "A") == {"WH-SH": (10, 6)}
    confirmed = await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert [e.kind for e in events(confirmed)] == [EventKind.CANCELLED]
    assert levels(redis_settings, "A") == {"WH-SH": (10, 0)}
    # A late re-push of the paid version cannot resurrect the reservation.
    late = await pipeline.process([feed.raw(own_order("10", {"A": 6}, minutes=4))])
    assert commands(late) == [] and levels(redis_settings, "A") == {"WH-SH": (10, 0)}


async def test_bad_input_goes_to_dlq_with_reason(pipeline: OrderPipeline) -> None:
    feed = Feed()
    bad = own_order("11", {"A": 1}).model_dump(mode="json")
    bad["lines"][0]["quantity"] = -2
    result = await pipeline.process(
        [
            feed.raw(b"{not json"),
            feed.raw(orjson.dumps({k: v for k, v in bad.items() if k != "external_id"})),
            feed.raw(orjson.dumps(bad)),
            feed.raw(b"\xff\xfe"),
        ]
    )
    reasons = [orjson.loads(v)["reason"] for t, _, v in result.outputs if t.endswith(".dlq")]
    assert reasons == ["malformed_json", "missing_field", "invalid_field", "invalid_utf8"]
    assert result.counts["dlq"] == 4


async def test_concurrent_workers_never_oversell(
    redis_settings: Settings, base_settings: Settings
) -> None:
    """Three pipelines (as three workers would) race for 50 units of one hot sku."""
    stock(redis_settings, [("HOT", "WH-SH", 30), ("HOT", "WH-BJ", 20)])
    routing = RoutingTable.load(base_settings.config_dir / "warehouses.toml")
    clients = [
        aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True) for _ in range(3)
    ]
    pipes = [OrderPipeline(redis_settings, c, routing, AdapterContext()) for c in clients]
    feeds = [Feed() for _ in pipes]
    orders = [own_order(f"h{i}", {"HOT": 1 + i % 3}) for i in range(120)]
    batches = [orders[i::3] for i in range(3)]

    async def run(p: OrderPipeline, feed: Feed, batch: list[Order]) -> Counter[str]:
        total = BatchResult().counts
        for i in range(0, len(batch), 7):
            total.update((await p.process([feed.raw(o) for o in batch[i : i + 7]])).counts)
        return total

    results = await asyncio.gather(
        *(run(p, f, b) for p, f, b in zip(pipes, feeds, batches, strict=True))
    )
    for c in clients:
        await c.aclose()
    reserved = sum(r for _, r in levels(redis_settings, "HOT").values())
    assert reserved <= 50
    assert sum(r["shortage"] for r in results) > 0
    report = verify(connect(redis_settings), Keys(redis_settings.redis_prefix))
    assert report.ok, report.violations
    assert report.oversold_units == 0
    # Everything not reserved was held for stock: every order accounted for.
    assert sum(r["new"] for r in results) == 120


def test_reserve_script_checks_a_warehouse_named_twice_for_its_total(
    redis_settings: Settings,
) -> None:
    """A plan naming one warehouse twice must not pass the per-part check twice."""
    from state.redis import lua_source

    stock(redis_settings, [("A", "WH-SH", 5)])
    keys = Keys(redis_settings.redis_prefix)
    client = connect(redis_settings)
    script = client.register_script(lua_source("stock_reserve"))
    replies = script(
        keys=[keys.stock("A"), keys.ledger("A")],
        args=["o1", "WH-SH=3,WH-SH=3", "", "", "o2", "WH-SH=2,WH-SH=3", "", ""],
    )
    (status, *_), (status2, alloc, *_) = replies  # type: ignore[misc]
    assert status == "shortage"
    assert status2 == "reserved" and alloc == "WH-SH=5"
    assert levels(redis_settings, "A") == {"WH-SH": (5, 5)}
    assert verify(client, keys).ok


def action(order_id: str, kind: str, n: int = 1) -> OperatorAction:
    return OperatorAction(
        action_id=f"a{n}-{order_id}",
        order_id=order_id,
        kind=OperatorActionKind(kind),
        actor="alice",
        at=T0,
    )


async def test_operator_release_and_cancel(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    held = own_order("20", {"A": 2}, paid=False)
    await pipeline.process([feed.raw(held)])
    released = await pipeline.apply_actions([action(held.order_id, "release_hold")])
    assert [e.kind for e in events(released)] == [
        EventKind.HOLD_RELEASED,
        EventKind.AUDITED,
        EventKind.RESERVED,
        EventKind.ROUTED,
        EventKind.RELEASED,
    ]
    assert {e.actor for e in events(released)[:1]} == {"alice"}
    assert len(commands(released)) == 1
    assert levels(redis_settings, "A") == {"WH-SH": (10, 2)}
    # The same action delivered again re-emits what it produced, and changes nothing.
    again = await pipeline.apply_actions([action(held.order_id, "release_hold")])
    assert again.outputs == released.outputs
    cancel = await pipeline.apply_actions([action(held.order_id, "cancel", 2)])
    assert [e.kind for e in events(cancel)] == [EventKind.INTERCEPT_REQUESTED]
    [asked] = events(cancel)
    assert asked.actor == "alice" and asked.reason == "cancelled_by_operator"
    [stop] = commands(cancel)
    assert stop.kind is CommandKind.CANCEL
    await pipeline.apply_wms_events([wms_answer(stop, WmsEventKind.CANCELLED)])
    assert levels(redis_settings, "A") == {"WH-SH": (10, 0)}
    refused = await pipeline.apply_actions([action(held.order_id, "release_hold", 3)])
    assert [e.kind for e in events(refused)] == [EventKind.ACTION_REFUSED]
    record = await pipeline.orders.load(held.order_id)
    assert record is not None and record.state is OrderState.CANCELLED
    assert verify(connect(redis_settings), Keys(redis_settings.redis_prefix)).ok


async def test_operator_release_cannot_override_physics(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    stock(redis_settings, [("A", "WH-SH", 1)])
    feed = Feed()
    big = own_order("21", {"A": 5})
    await pipeline.process([feed.raw(big)])
    result = await pipeline.apply_actions([action(big.order_id, "release_hold")])
    kinds = [e.kind for e in events(result)]
    assert kinds == [EventKind.HOLD_RELEASED, EventKind.AUDITED, EventKind.HELD]  # still short
    record = await pipeline.orders.load(big.order_id)
    assert record is not None and record.state is OrderState.HELD
    assert levels(redis_settings, "A") == {"WH-SH": (1, 0)}


async def test_unpaid_timeout_cancels_only_orders_still_unpaid(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    from agents.timers import due_unpaid

    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    stale, paid_late, fresh = (own_order(x, {"A": 1}, paid=False) for x in ("30", "31", "32"))
    await pipeline.process([feed.raw(stale), feed.raw(paid_late)])
    held_since = time.time()
    # Only orders held for longer than the timeout are due.
    assert await due_unpaid(pipeline.client, pipeline.keys, timeout_s=50, now=held_since) == []
    due = await due_unpaid(pipeline.client, pipeline.keys, timeout_s=50, now=held_since + 100)
    await pipeline.process([feed.raw(fresh)])  # held after the scan: not in `due`
    # The second order gets paid after the scan picked it: the expiry must be refused.
    assert {a.order_id for a in due} == {stale.order_id, paid_late.order_id}
    await pipeline.process([feed.raw(own_order("31", {"A": 1}, minutes=5))])
    result = await pipeline.apply_actions(due)
    by_order = {e.order_id: e for e in events(result)}
    assert by_order[stale.order_id].kind is EventKind.CANCELLED
    assert by_order[stale.order_id].reason == "unpaid_timeout"
    assert by_order[paid_late.order_id].kind is EventKind.ACTION_REFUSED
    # Firing twice cancels once: the same action ids are a redelivery.
    again = await pipeline.apply_actions(due)
    assert again.outputs == result.outputs
    assert levels(redis_settings, "A") == {"WH-SH": (10, 1)}  # only the paid order holds stock
    still = await pipeline.orders.load(fresh.order_id)
    assert still is not None and still.state is OrderState.HELD


async def test_unpaid_index_holds_only_unpaid_orders_and_files_older_records(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    from agents.timers import due_unpaid

    stock(redis_settings, [("A", "WH-SH", 1)])
    feed = Feed()
    unpaid, short = own_order("40", {"A": 1}, paid=False), own_order("41", {"B": 1})
    await pipeline.process([feed.raw(unpaid), feed.raw(short)])
    client, keys = pipeline.client, pipeline.keys
    assert set(await client.zrange(keys.held, 0, -1)) == {unpaid.order_id, short.order_id}
    assert await client.zrange(keys.unpaid, 0, -1) == [unpaid.order_id]
    # Paid: it leaves both indexes.
    await pipeline.process([feed.raw(own_order("40", {"A": 1}, minutes=5))])
    assert await client.zrange(keys.unpaid, 0, -1) == []
    # A record saved before the index existed is in the held index only; the sweep files it
    # with its hold time, and due_unpaid finds it.
    late = own_order("42", {"A": 1}, paid=False)
    await pipeline.process([feed.raw(late)])
    since = await client.zscore(keys.held, late.order_id)
    await client.delete(keys.unpaid)
    assert await due_unpaid(client, keys, timeout_s=1, now=since + 100) == []
    assert await pipeline.orders.index_unpaid(page=1) == 1
    assert await client.zscore(keys.unpaid, late.order_id) == since
    assert await pipeline.orders.index_unpaid() == 0  # already filed
    due = await due_unpaid(client, keys, timeout_s=1, now=since + 100)
    assert [a.order_id for a in due] == [late.order_id]
