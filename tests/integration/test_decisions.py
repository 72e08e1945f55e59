"""Decide, save, then do (docs/decisions/0013-decide-then-do.md) against the real Redis: what
happens when a worker dies between saving a decision and carrying out its stock work, what
`verify` sees when the WMS ships units no reservation covers, and a DLQ replay of an input
whose outputs never reached Kafka (issue 13 items 1 and 9)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.pipeline import OrderPipeline
from agents.timers import ResendGate, due_pending
from core.settings import Settings
from order.record import OrderRecord
from order.reservation import EffectKind, StockEffect
from state.keys import Keys
from state.orders import Save
from state.redis import connect
from state.verify import verify
from streams.messages import EventKind, OrderState, WmsEventKind
from streams.normalise import RawInput
from tests.integration.test_pipeline import (
    Feed,
    commands,
    events,
    levels,
    own_order,
    stock,
    wms_answer,
)

pytestmark = pytest.mark.integration


async def test_units_shipped_without_a_reservation_come_off_the_books_and_verify_says_so(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    """The end state of the race of issue 13 item 1: an order at the WMS whose reservation was
    released behind its back. When the parcel ships, its unit must leave on hand (it left the
    warehouse) and verify must report it; before, the commit found nothing, on hand stayed 10
    and verify said ok."""
    stock(redis_settings, [("A", "WH-SH", 10)])
    released = await pipeline.process([Feed().raw(own_order("V1", {"A": 1}))])
    (outbound,) = commands(released)
    await pipeline.stock.release(outbound.order_id, ["A"])  # what the racing expiry did
    assert levels(redis_settings, "A") == {"WH-SH": (10, 0)}
    await pipeline.apply_wms_events([wms_answer(outbound, WmsEventKind.SHIPPED)])
    assert levels(redis_settings, "A") == {"WH-SH": (9, 0)}
    report = verify(connect(redis_settings), Keys(redis_settings.redis_prefix))
    assert not report.ok
    assert [v["kind"] for v in report.violations] == ["shipped_unreserved"]
    assert report.violations[0]["order_id"] == outbound.order_id


async def test_a_worker_dying_after_the_save_leaves_work_the_sweeper_finishes(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    """The decision to reserve is saved, then Redis goes away before the reservation: the
    batch fails (and is redelivered later); meanwhile verify reports the unfinished decision
    once it is old, the sweeper's settle action finishes it, and the redelivery re-emits the
    whole outcome without deciding again."""
    stock(redis_settings, [("A", "WH-SH", 10)])
    raw = Feed().raw(own_order("V2", {"A": 2}))
    engine = pipeline.stock
    real = engine.reserve_many

    async def down(*_: object) -> object:
        raise RedisConnectionError("Redis went away")

    engine.reserve_many = down  # type: ignore[method-assign]
    with pytest.raises(RedisConnectionError):
        await pipeline.process([raw])
    engine.reserve_many = real  # type: ignore[method-assign]
    oid = own_order("V2", {"A": 2}).order_id
    record = await pipeline.orders.load(oid)
    assert record is not None and record.state is OrderState.AUDITED and record.pending
    assert levels(redis_settings, "A") == {"WH-SH": (10, 0)}  # nothing reserved yet
    keys = Keys(redis_settings.redis_prefix)
    client = connect(redis_settings)
    assert verify(client, keys).ok  # recent: the deciding worker may still finish it
    later = time.time() + 120
    report = verify(client, keys, now=later)
    assert [v["kind"] for v in report.violations] == ["unfinished_decision"]

    gate = ResendGate(60)
    (settle,) = await due_pending(pipeline.client, keys, now=later, gate=gate)
    assert await due_pending(pipeline.client, keys, now=later + 5, gate=gate) == []  # asked
    swept = await pipeline.apply_actions([settle])
    assert swept.outputs == []  # finished silently: the input's redelivery re-emits
    assert levels(redis_settings, "A") == {"WH-SH": (10, 2)}
    assert verify(client, keys, now=later).ok
    assert await due_pending(pipeline.client, keys, now=later + 120, gate=gate) == []

    again = await pipeline.process([raw])  # the redelivery of the failed batch
    assert again.counts["redelivery"] == 1
    kinds = [e.kind for e in events(again)]
    assert kinds == [
        EventKind.RECEIVED,
        EventKind.AUDITED,
        EventKind.RESERVED,
        EventKind.ROUTED,
        EventKind.RELEASED,
    ]
    assert len(commands(again)) == 1
    assert levels(redis_settings, "A") == {"WH-SH": (10, 2)}  # reserved once


async def test_dlq_replay_of_an_applied_input_resends_its_outputs(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    """Issue 13 item 9: the order was saved but its outputs never reached Kafka (a topic
    authorisation error), so the input went to the DLQ. `./oms dlq replay` sends the bytes to
    a new offset; the worker must recognise the original input and re-send its fulfilment
    command, not call it a duplicate and send nothing."""
    from streams.messages import DlqReason
    from streams.normalise import to_dlq
    from web.views import replay_records

    stock(redis_settings, [("A", "WH-SH", 10)])
    feed = Feed()
    raw = feed.raw(own_order("V3", {"A": 1}))
    first = await pipeline.process([raw])
    (command,) = commands(first)
    record = to_dlq(raw, DlqReason.PROCESSING_ERROR, "intake: TopicAuthorizationFailedError")
    ((topic, key, value, headers),) = replay_records([record])
    replayed = RawInput(
        "own",
        value,
        topic,
        0,
        feed.offset + 100,
        key.decode() if key else "",
        {k: v.decode() for k, v in headers},
    )
    again = await pipeline.process([replayed])
    assert again.counts["redelivery"] == 1 and again.counts["duplicate"] == 0
    assert [c.command_id for c in commands(again)] == [command.command_id]
    assert levels(redis_settings, "A") == {"WH-SH": (10, 1)}


async def test_re_pushes_do_not_grow_the_record(pipeline: OrderPipeline) -> None:
    """Issue 13 item 4: every re-push appended to the record's history, so 3,000 of them made
    a record of 584 KiB and each push cost 9 times more. Re-pushes are counted on one trail
    entry and the outbox and applied-input lists are bounded: the record stops growing."""
    feed = Feed()
    order = own_order("V4", {"A": 1}, paid=False)  # held: stays put while re-pushed
    await pipeline.process([feed.raw(order)])
    sizes = []
    for _ in range(6):
        await pipeline.process([feed.raw(order) for _ in range(100)])
        (loaded,) = (await pipeline.orders.load_many([order.order_id])).values()
        sizes.append(len(loaded.doc))
    record = loaded.record
    assert record is not None and record.duplicates == 600
    assert record.history[-1].kind is EventKind.DUPLICATE and record.history[-1].repeats == 599
    assert len(record.history) <= 5
    assert sizes[-1] < 48 * 1024
    assert sizes[-1] - sizes[2] < 6 * 1024  # bounded: only the digests' list fills up


async def test_a_late_worker_never_undoes_what_later_decisions_built_on(
    pipeline: OrderPipeline, redis_settings: Settings
) -> None:
    """A worker loaded an order while its decision to reserve was pending, then stalled. Since,
    the decision was finished, the order split over two warehouses, and one parcel shipped
    (a later decision committed one sku). When the stalled worker carries the old decision out
    it must change nothing: it used to undo the other sku's live reservation (found by review),
    so that sku was sold again to someone else and shipped twice."""
    stock(redis_settings, [("X", "WH-SH", 5), ("Y", "WH-BJ", 5)])
    stalled: list[tuple[OrderRecord, int]] = []
    real = pipeline.orders.save_groups

    async def loaded_by_a_stalled_worker(groups: list[list[Save]]) -> list[bool]:
        for group in groups:
            for save in group:
                if save.record.pending is not None and save.record.pending.reserve is not None:
                    stalled.append((save.record.model_copy(deep=True), save.expected + 1))
        return await real(groups)

    pipeline.orders.save_groups = loaded_by_a_stalled_worker  # type: ignore[method-assign]
    split = await pipeline.process([Feed().raw(own_order("V5", {"X": 1, "Y": 1}))])
    pipeline.orders.save_groups = real  # type: ignore[method-assign]
    parcels = {c.warehouse: c for c in commands(split)}
    assert set(parcels) == {"WH-SH", "WH-BJ"}
    for kind in (WmsEventKind.ACCEPTED, WmsEventKind.SHIPPED):
        await pipeline.apply_wms_events([wms_answer(parcels["WH-BJ"], kind)])
    before = levels(redis_settings, "X")
    assert before == {"WH-SH": (5, 1)}

    late = await pipeline._settle(stalled)  # the stalled worker wakes up
    assert late.lost == {own_order("V5", {"X": 1, "Y": 1}).order_id}  # nothing of it saved
    assert levels(redis_settings, "X") == before  # the live reservation of X is kept
    await pipeline.process([Feed().raw(own_order("V6", {"X": 5}))])  # cannot take Z's unit
    await pipeline.apply_wms_events([wms_answer(parcels["WH-SH"], WmsEventKind.SHIPPED)])
    assert levels(redis_settings, "X") == {"WH-SH": (4, 0)}
    assert verify(connect(redis_settings), Keys(redis_settings.redis_prefix)).ok


async def test_a_continuation_that_decides_stock_work_sends_its_outputs(
    pipeline: OrderPipeline, redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reservation's continuation that itself decides stock work (a second pending, carried
    out after the continuation's save) must send what it said: found by review as a branch
    that dropped the outputs (no such continuation exists yet; one that releases on a refusal
    is the obvious next)."""
    stock(redis_settings, [("A", "WH-SH", 5)])
    route = pipeline.decisions.route

    def route_and_undo(plan: Any, reservation: Any, now: Any, result: Any) -> None:
        route(plan, reservation, now, result)
        plan.effects.append(StockEffect(kind=EffectKind.UNDO, shipment="nobody", skus=("A",)))

    monkeypatch.setattr(pipeline.decisions, "route", route_and_undo)
    out = await pipeline.process([Feed().raw(own_order("V7", {"A": 1}))])
    assert [e.kind for e in events(out)][-1] is EventKind.RELEASED
    assert len(commands(out)) == 1
