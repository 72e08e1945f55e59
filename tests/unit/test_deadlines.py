"""Ship-by deadlines and priorities (order/deadlines.py) from the channels' and shops' rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from order.deadlines import EXPEDITED, priority_of, ship_by
from order.shops import ShopRules
from streams.channels import adapt
from streams.models import Order, PaymentStatus

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
PAID_AT = datetime(2024, 6, 17, 10, 0, tzinfo=UTC)


def sample(channel: str, **changes: object) -> Order:
    payload = json.loads((SAMPLES / f"{channel}.json").read_text(encoding="utf-8"))
    payload.update(changes)
    return adapt(channel, json.dumps(payload).encode())


def own_order(*, paid_now: bool = True) -> Order:
    order = sample("own")
    return paid(order) if paid_now else unpaid(order)


def unpaid(order: Order) -> Order:
    payment = order.payment.model_copy(update={"status": PaymentStatus.UNPAID, "paid_at": None})
    return order.model_copy(update={"payment": payment})


def paid(order: Order, at: datetime = PAID_AT) -> Order:
    payment = order.payment.model_copy(update={"status": PaymentStatus.PAID, "paid_at": at})
    return order.model_copy(update={"payment": payment})


def test_the_channels_own_latest_ship_time_wins() -> None:
    amazon = sample("amazon")
    assert amazon.ship_by == datetime(2024, 6, 19, 15, 59, 59, tzinfo=UTC)
    assert ship_by(amazon, ShopRules(ship_within_h=2)) == amazon.ship_by
    douyin = sample("douyin")
    assert douyin.ship_by == datetime.fromtimestamp(1718812800, UTC)


def test_the_shop_promise_counts_from_payment_else_the_channel_rule() -> None:
    order = own_order()
    assert ship_by(order, None) == PAID_AT + timedelta(hours=72)
    assert ship_by(order, ShopRules(ship_within_h=24)) == PAID_AT + timedelta(hours=24)
    taobao = sample("taobao")
    assert taobao.payment.paid_at is not None
    assert ship_by(taobao, None) == taobao.payment.paid_at + timedelta(hours=48)


def test_no_deadline_runs_before_payment_and_a_presale_counts_from_its_date() -> None:
    assert ship_by(own_order(paid_now=False), None) is None
    date = PAID_AT + timedelta(days=10)
    presale = own_order().model_copy(update={"ship_after": date})
    assert ship_by(presale, None) == date + timedelta(hours=72)


def test_priority_from_the_shop_the_service_level_and_the_remark() -> None:
    order = own_order().model_copy(update={"buyer_remark": "", "seller_remark": ""})
    assert priority_of(order, None) == 0
    assert priority_of(order, ShopRules(priority=3)) == 3
    urgent = order.model_copy(update={"buyer_remark": "请加急，谢谢"})
    assert priority_of(urgent, ShopRules(priority=3)) == EXPEDITED
    assert priority_of(order.model_copy(update={"seller_remark": "RUSH"}), None) == EXPEDITED
    assert priority_of(order, ShopRules(priority=9)) == 9
    assert not sample("amazon").expedited  # Standard
    assert sample("amazon", ShipmentServiceLevelCategory="NextDay").expedited
    assert priority_of(sample("amazon", ShipmentServiceLevelCategory="Expedited"), None) == 5


def test_a_merged_parcel_is_due_with_its_earliest_member_at_its_highest_priority() -> None:
    from order.merge import merged_command
    from order.record import OrderRecord
    from streams.messages import Allocation, OrderState

    def routed(ship_by: float, priority: int, external_id: str) -> OrderRecord:
        order = own_order().model_copy(update={"external_id": external_id})
        record = OrderRecord(
            order_id=f"O{external_id}",
            state=OrderState.ROUTED,
            order=order,
            fingerprint="f",
            ship_by=ship_by,
            priority=priority,
        )
        record.allocations = [
            Allocation(sku=sku, warehouse="WH-SH", quantity=n)
            for sku, n in record.quantities.items()
        ]
        return record

    early = PAID_AT.timestamp() + 3600
    members = [routed(early + 7200, 5, "M1"), routed(early, 0, "M2"), routed(0.0, 1, "M3")]
    command = merged_command(members, PAID_AT, "YTO", 100)
    assert command.ship_by == datetime.fromtimestamp(early, UTC)
    assert command.priority == 5
    assert command.merged_order_ids == ["OM1", "OM2", "OM3"]
