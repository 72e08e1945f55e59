"""The WMS simulator's decisions (ops/wms_sim.py), without Kafka: what each command kind
causes and when, determinism per command id, idempotency, tracking number formats, cancels
and intercepts before and after shipment, and one poll of the Kafka loop against fakes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from ops import wms_sim
from ops.wms_sim import (
    SimConfig,
    WmsSimulator,
    carrier_for,
    parse_command,
    plan_outbound,
    plan_return,
    s10_check_digit,
    tracking_number,
)
from streams.messages import (
    CommandKind,
    CommandLine,
    FulfilmentCommand,
    WmsEvent,
    WmsEventKind,
    make_id,
)
from streams.models import Address, Channel

K = WmsEventKind
DELAY = 1.0
BUYER = Address(
    name="Zhang San", phone="13800138000", province_code="SH", city="Shanghai", street="1 Road"
)
LINES = [
    CommandLine(line_id="1", sku="SKU-A", quantity=3),
    CommandLine(line_id="2", sku="SKU-B", quantity=1),
]


def command(
    command_id: str,
    kind: CommandKind = CommandKind.OUTBOUND,
    *,
    refers_to: str = "",
    carrier: str = "",
    warehouse: str = "WH-SH",
    lines: list[CommandLine] | None = None,
) -> FulfilmentCommand:
    return FulfilmentCommand(
        command_id=command_id,
        kind=kind,
        order_id=f"O-{command_id}",
        channel=Channel.JD,
        shop_id="jd-1",
        external_id=command_id,
        warehouse=warehouse,
        carrier=carrier,
        ship_to=BUYER,
        lines=LINES if lines is None else lines,
        created_at=datetime(2026, 11, 11, tzinfo=UTC),
        refers_to=refers_to,
    )


def kinds(steps_or_events: list[Any]) -> list[WmsEventKind]:
    return [s.kind for s in steps_or_events]


def drain(sim: WmsSimulator) -> list[WmsEvent]:
    return sim.pop_due(float("inf"))


# ------------------------------------------------------------------------------ planning


def test_an_outbound_is_accepted_picked_shipped_then_delivered_much_later() -> None:
    steps = plan_outbound(command("C1"), SimConfig(delay_s=DELAY))
    assert kinds(steps) == [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED]
    times = [0.0] + [s.after_s for s in steps]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.5 * DELAY <= g <= 1.5 * DELAY for g in gaps[:3])
    assert 2 * DELAY <= gaps[3] <= 6 * DELAY  # about 4x a step
    assert all(list(s.lines) == LINES for s in steps)
    shipped, delivered = steps[2], steps[3]
    assert shipped.carrier == "SF" and shipped.tracking_number.startswith("SF")
    assert (delivered.carrier, delivered.tracking_number) == (
        shipped.carrier,
        shipped.tracking_number,
    )


def test_plans_are_deterministic_per_command_id() -> None:
    config = SimConfig(delay_s=DELAY, short_pick_rate=0.3, exception_rate=0.3)
    assert plan_outbound(command("C1"), config) == plan_outbound(command("C1"), config)
    tracking = {plan_outbound(command(f"C{i}"), SimConfig())[2].tracking_number for i in range(50)}
    assert len(tracking) == 50


def test_short_pick_reports_one_missing_unit_and_ends_the_outbound() -> None:
    steps = plan_outbound(command("C1"), SimConfig(delay_s=DELAY, short_pick_rate=1.0))
    assert kinds(steps) == [K.ACCEPTED, K.SHORT_PICK]
    (missing,) = steps[1].lines
    assert missing.quantity == 1
    assert (missing.line_id, missing.sku) in {(x.line_id, x.sku) for x in LINES}
    assert missing.sku in steps[1].detail


def test_an_outbound_without_lines_cannot_be_short_picked() -> None:
    steps = plan_outbound(command("C1", lines=[]), SimConfig(short_pick_rate=1.0))
    assert K.SHORT_PICK not in kinds(steps)


def test_exception_after_picking_with_a_reason() -> None:
    steps = plan_outbound(command("C1"), SimConfig(delay_s=DELAY, exception_rate=1.0))
    assert kinds(steps) == [K.ACCEPTED, K.PICKED, K.EXCEPTION]
    assert steps[2].detail in wms_sim.EXCEPTION_DETAILS


def test_rates_change_the_outcome_but_not_the_timing() -> None:
    plain = plan_outbound(command("C1"), SimConfig(delay_s=DELAY))
    failing = plan_outbound(command("C1"), SimConfig(delay_s=DELAY, exception_rate=1.0))
    assert [s.after_s for s in plain[:3]] == [s.after_s for s in failing]


def test_failure_rates_are_the_share_of_outbounds_that_fail() -> None:
    config = SimConfig(short_pick_rate=0.2, exception_rate=0.1)
    outcomes = [kinds(plan_outbound(command(f"C{i}"), config))[-1] for i in range(2000)]
    assert 0.16 < outcomes.count(K.SHORT_PICK) / 2000 < 0.24
    assert 0.07 < outcomes.count(K.EXCEPTION) / 2000 < 0.13
    assert outcomes.count(K.DELIVERED) + outcomes.count(K.SHORT_PICK) + outcomes.count(
        K.EXCEPTION
    ) == len(outcomes)


def test_a_return_is_received_with_its_lines_and_some_cannot_be_sold() -> None:
    ret = command("R1", CommandKind.RETURN_INBOUND)
    (step,) = plan_return(ret, SimConfig(delay_s=DELAY, unsellable_rate=0.0))
    assert step.kind is K.RETURN_RECEIVED and step.sellable and list(step.lines) == LINES
    assert 0.5 * DELAY <= step.after_s <= 1.5 * DELAY
    (bad,) = plan_return(ret, SimConfig(unsellable_rate=1.0))
    assert not bad.sellable and bad.detail in wms_sim.UNSELLABLE_DETAILS
    config = SimConfig(unsellable_rate=0.25)
    returns = [command(f"R{i}", CommandKind.RETURN_INBOUND) for i in range(1000)]
    unsellable = sum(not plan_return(r, config)[0].sellable for r in returns)
    assert 200 < unsellable < 300
    assert [plan_return(r, config) for r in returns[:20]] == [
        plan_return(r, config) for r in returns[:20]
    ]


# ------------------------------------------------------------------------------ carriers

TRACKING_PATTERNS = {
    "SF": r"SF\d{12}",
    "ZTO": r"7\d{14}",
    "YTO": r"YT\d{13}",
    "JD": r"JDVA\d{11}",
    "EMS": r"E[A-Z]\d{9}CN",
    "DHL": r"\d{10}",
    "DEPPON": r"\d{12}",  # a carrier without a known format
}


@pytest.mark.parametrize(("carrier", "pattern"), sorted(TRACKING_PATTERNS.items()))
def test_tracking_numbers_have_the_carriers_format(carrier: str, pattern: str) -> None:
    rng = random.Random(7)
    numbers = [tracking_number(carrier, rng) for _ in range(200)]
    assert all(re.fullmatch(pattern, n) for n in numbers), numbers[:3]
    assert len(set(numbers)) > 190
    assert tracking_number(carrier.lower(), random.Random(1)) == tracking_number(
        carrier, random.Random(1)
    )


def test_ems_numbers_carry_a_valid_s10_check_digit() -> None:
    assert s10_check_digit("12345678") == 5  # EA123456785CN, the UPU example
    number = tracking_number("EMS", random.Random(3))
    assert int(number[10]) == s10_check_digit(number[2:10])


def test_the_commands_carrier_wins_else_the_warehouses_default() -> None:
    assert carrier_for(command("C1", carrier="EMS")) == "EMS"
    assert carrier_for(command("C1", warehouse="WH-BJ")) == "JD"
    assert carrier_for(command("C1", warehouse="WH-XX")) == wms_sim.FALLBACK_CARRIER
    steps = plan_outbound(command("C1", carrier="DHL"), SimConfig())
    assert steps[2].carrier == "DHL" and re.fullmatch(r"\d{10}", steps[2].tracking_number)


# ------------------------------------------------------------------------------ simulator


def test_events_carry_the_commands_ids_and_deterministic_event_ids() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    sim.handle(command("C1"), now=1000.0)
    events = drain(sim)
    assert kinds(events) == [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED]
    for event in events:
        assert event.event_id == make_id("W", "C1", event.kind.value)
        assert (event.command_id, event.order_id, event.warehouse) == ("C1", "O-C1", "WH-SH")
    planned = plan_outbound(command("C1"), SimConfig(delay_s=DELAY))
    assert [e.at.timestamp() for e in events] == pytest.approx([1000 + s.after_s for s in planned])


def test_a_command_seen_before_is_ignored() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    assert sim.handle(command("C1"), now=0.0)
    first = drain(sim)
    assert not sim.handle(command("C1"), now=50.0)
    assert drain(sim) == [] and sim.pending == 0
    assert sim.counters["duplicates"] == 1 and sim.counters["commands"] == 1
    again = WmsSimulator(SimConfig(delay_s=DELAY))  # a rerun tells the same story
    again.handle(command("C1"), now=0.0)
    assert drain(again) == first


def test_forgotten_ids_are_bounded_by_memory() -> None:
    sim = WmsSimulator(SimConfig(), memory=2)
    for cid in ("C1", "C2", "C3"):
        sim.handle(command(cid), now=0.0)
    assert sim.handle(command("C1"), now=0.0)  # the oldest was forgotten
    assert not sim.handle(command("C3"), now=0.0)


def test_events_fall_due_in_time_order_and_not_before() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    sim.handle(command("C1"), now=0.0)
    sim.handle(command("C2"), now=0.1)
    assert sim.pop_due(0.0) == []
    first_due = sim.next_due()
    assert first_due is not None and first_due > 0
    events = drain(sim)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert len(events) == 8 and sim.next_due() is None


def test_zero_delay_keeps_each_parcels_steps_in_order() -> None:
    sim = WmsSimulator(SimConfig(delay_s=0.0))
    for i in range(5):
        sim.handle(command(f"C{i}"), now=0.0)
    events = sim.pop_due(0.0)
    for i in range(5):
        mine = [e.kind for e in events if e.command_id == f"C{i}"]
        assert mine == [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED]


def run_until(sim: WmsSimulator, kind: WmsEventKind) -> tuple[list[WmsEvent], float]:
    """Pop events one due time at a time until ``kind`` was sent; returns them and the time."""
    out: list[WmsEvent] = []
    while (due := sim.next_due()) is not None:
        out += sim.pop_due(due)
        if out and out[-1].kind is kind:
            return out, due
    raise AssertionError(f"{kind} never sent")


@pytest.mark.parametrize("kind", [CommandKind.CANCEL, CommandKind.INTERCEPT])
def test_cancel_before_shipment_stops_the_outbound(kind: CommandKind) -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    sim.handle(command("C1"), now=0.0)
    before, now = run_until(sim, K.PICKED)
    sim.handle(command("X1", kind, refers_to="C1", lines=[]), now=now)
    after = drain(sim)
    assert kinds(before) == [K.ACCEPTED, K.PICKED]
    assert kinds(after) == [K.CANCELLED]
    (cancelled,) = after
    assert cancelled.command_id == "X1" and cancelled.order_id == "O-X1"
    assert cancelled.lines == LINES  # what was cancelled: the outbound's lines
    assert sim.counters["steps_stopped"] == 2
    assert sim.outbound("C1") is not None and sim.outbound("C1").stopped


def test_intercept_after_shipment_fails_and_the_parcel_is_delivered() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    sim.handle(command("C1"), now=0.0)
    before, now = run_until(sim, K.SHIPPED)
    sim.handle(command("X1", CommandKind.INTERCEPT, refers_to="C1"), now=now)
    after = drain(sim)
    assert sorted(kinds(after)) == sorted([K.INTERCEPT_FAILED, K.DELIVERED])
    failed = next(e for e in after if e.kind is K.INTERCEPT_FAILED)
    shipped = before[-1]
    assert failed.command_id == "X1" and failed.detail == "parcel already with the carrier"
    assert (failed.carrier, failed.tracking_number) == (shipped.carrier, shipped.tracking_number)


def test_cancel_of_an_unknown_outbound_is_cancelled_and_it_never_runs() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY))
    sim.handle(command("X1", CommandKind.CANCEL, refers_to="C9"), now=0.0)
    (cancelled,) = drain(sim)
    assert cancelled.kind is K.CANCELLED and cancelled.detail == "nothing to stop"
    assert cancelled.lines == LINES  # the cancel's own lines: nothing else is known
    sim.handle(command("C9"), now=10.0)  # the outbound shows up late
    assert drain(sim) == []


def test_cancel_after_a_short_pick_has_nothing_left_to_stop() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY, short_pick_rate=1.0))
    sim.handle(command("C1"), now=0.0)
    assert kinds(drain(sim)) == [K.ACCEPTED, K.SHORT_PICK]
    sim.handle(command("X1", CommandKind.CANCEL, refers_to="C1"), now=10.0)
    assert kinds(drain(sim)) == [K.CANCELLED]


def test_return_inbound_through_the_simulator() -> None:
    sim = WmsSimulator(SimConfig(delay_s=DELAY, unsellable_rate=1.0))
    sim.handle(command("R1", CommandKind.RETURN_INBOUND, refers_to="C1"), now=0.0)
    (received,) = drain(sim)
    assert received.kind is K.RETURN_RECEIVED and not received.sellable
    assert received.lines == LINES and received.command_id == "R1"


# ------------------------------------------------------------------------------ parsing


def test_invalid_commands_are_skipped_without_logging_personal_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = command("C1")
    assert parse_command(good.model_dump_json().encode()) == good
    bad = good.model_dump(mode="json") | {"kind": "teleport"}
    with caplog.at_level(logging.WARNING, logger="oms.wms_sim"):
        assert parse_command(orjson.dumps(bad)) is None
        assert parse_command(b"{not json") is None
        assert parse_command(None) is None
    assert "invalid command" in caplog.text
    assert "Zhang San" not in caplog.text and "13800138000" not in caplog.text


# ------------------------------------------------------------------------------ Kafka loop


class FakeRecord:
    def __init__(self, value: bytes) -> None:
        self.value = value


class FakeConsumer:
    def __init__(self, batches: list[list[bytes]]) -> None:
        self.batches = batches
        self.commits = 0
        self.timeouts: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[str, list[FakeRecord]]:
        self.timeouts.append(timeout_ms)
        if not self.batches:
            return {}
        return {"tp": [FakeRecord(v) for v in self.batches.pop(0)]}

    async def commit(self) -> None:
        self.commits += 1


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes) -> Any:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_one_poll_schedules_the_batch_sends_what_is_due_and_commits() -> None:
    consumer = FakeConsumer([[command("C1").model_dump_json().encode(), b"garbage"]])
    producer = FakeProducer()
    sim = WmsSimulator(SimConfig(delay_s=0.0))
    await wms_sim.poll_once(consumer, producer, sim, "oms.wms.events")  # type: ignore[arg-type]
    assert consumer.commits == 1 and sim.counters["invalid"] == 1
    sent = [WmsEvent.model_validate_json(v) for _, _, v in producer.sent]
    assert kinds(sent) == [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED]
    assert {(t, k) for t, k, _ in producer.sent} == {("oms.wms.events", b"O-C1")}
    await wms_sim.poll_once(consumer, producer, sim, "oms.wms.events")  # type: ignore[arg-type]
    assert consumer.commits == 1  # an empty poll commits nothing
    assert consumer.timeouts == [wms_sim.MAX_POLL_MS, wms_sim.MAX_POLL_MS]


async def test_the_poll_waits_no_longer_than_the_next_due_event() -> None:
    consumer = FakeConsumer([])
    sim = WmsSimulator(SimConfig(delay_s=0.0))
    sim.handle(command("C1"), now=0.0)  # long overdue
    await wms_sim.poll_once(consumer, FakeProducer(), sim, "t")  # type: ignore[arg-type]
    assert consumer.timeouts == [0]


# ------------------------------------------------------------------------------ command line


def test_command_line_options_are_checked() -> None:
    runner = CliRunner()
    result = runner.invoke(wms_sim.wms_sim_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--delay", "--short-pick-rate", "--exception-rate", "--duration"):
        assert option in result.output
    bad = runner.invoke(wms_sim.wms_sim_command, ["--short-pick-rate", "1.5"])
    assert bad.exit_code == 2 and "1.5" in bad.output
