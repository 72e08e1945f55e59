"""The WMS simulator against the real broker: commands in on the commands topic, events out
on the events topic; and as a stack component (start, status, stop, `up`).

Only the broker and Redis (heartbeat) are used; workers are not needed. Each test has its
own topic and Redis prefixes, so it sees only its own commands and heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.heartbeat import wms_sim_heartbeat_key
from core.kafka import Record, produce, read_topic
from core.settings import Settings
from ops import stack
from ops.wms_sim import SimConfig, ensure_sim_topics, run_simulator
from streams.messages import (
    CommandKind,
    CommandLine,
    FulfilmentCommand,
    WmsEvent,
    WmsEventKind,
)
from streams.models import Address, Channel
from streams.topics import FULFILMENT_COMMANDS, WMS_EVENTS

pytestmark = pytest.mark.integration

K = WmsEventKind
WAIT_S = 60.0
LINES = [CommandLine(line_id="1", sku="SKU-A", quantity=2)]


@pytest.fixture
def sim_settings(infra: Settings, tmp_path: Path) -> Settings:
    """Own topics, Redis prefix and home (pid and log files) on the shared test servers."""
    tag = f"wmst{uuid.uuid4().hex[:8]}"
    return infra.model_copy(
        update={
            "home": tmp_path / "home",
            "topic_prefix": tag,
            "redis_prefix": tag,
            "partitions": 2,
            "wms_sim_delay_s": 0.3,
            "wms_sim_unsellable_rate": 0.0,
        }
    )


def command(
    command_id: str, kind: CommandKind = CommandKind.OUTBOUND, refers_to: str = ""
) -> FulfilmentCommand:
    return FulfilmentCommand(
        command_id=command_id,
        kind=kind,
        order_id=f"O-{refers_to or command_id}",  # a cancel is about the same order
        channel=Channel.OWN,
        shop_id="own-1",
        external_id=command_id,
        warehouse="WH-GZ",
        ship_to=Address(name="Li Si", phone="13900139000", province_code="GD"),
        lines=LINES,
        created_at=datetime.now(UTC),
        refers_to=refers_to,
    )


async def send(settings: Settings, *commands: FulfilmentCommand) -> None:
    topic = FULFILMENT_COMMANDS.name(settings.topic_prefix)
    records: list[Record] = [
        (topic, c.order_id.encode(), c.model_dump_json().encode(), []) for c in commands
    ]
    assert await produce(settings, records) == len(commands)


async def events_until(
    settings: Settings, done: Callable[[list[WmsEvent]], bool], timeout_s: float = WAIT_S
) -> list[WmsEvent]:
    """Every event on the events topic once ``done`` holds for them; fails after the bound."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_topic(settings, WMS_EVENTS.name(settings.topic_prefix))
        events = [WmsEvent.model_validate_json(r.value) for r in records]
        if done(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s} s with {[kinds_of(events)]}")
        await asyncio.sleep(0.2)


def kinds_of(events: list[WmsEvent], command_id: str | None = None) -> list[WmsEventKind]:
    return [e.kind for e in events if command_id is None or e.command_id == command_id]


def has(command_id: str, kind: WmsEventKind) -> Callable[[list[WmsEvent]], bool]:
    return lambda events: kind in kinds_of(events, command_id)


async def test_simulator_answers_commands_on_the_broker(sim_settings: Settings) -> None:
    settings = sim_settings
    ensure_sim_topics(settings)
    await send(
        settings,
        command("C1"),
        command("C2"),
        command("X2", CommandKind.CANCEL, refers_to="C2"),  # right behind it: not shipped
        command("R3", CommandKind.RETURN_INBOUND),
        command("C1"),  # re-sent: ignored
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_simulator(settings, SimConfig.from_settings(settings), stop=stop)
    )
    try:
        first = await events_until(
            settings,
            lambda ev: (
                has("C1", K.DELIVERED)(ev)
                and has("X2", K.CANCELLED)(ev)
                and has("R3", K.RETURN_RECEIVED)(ev)
            ),
        )
        await send(settings, command("X1", CommandKind.INTERCEPT, refers_to="C1"))
        events = await events_until(settings, has("X1", K.INTERCEPT_FAILED))
    finally:
        stop.set()
        counters = await asyncio.wait_for(task, timeout=15)

    assert kinds_of(first, "C1") == [K.ACCEPTED, K.PICKED, K.SHIPPED, K.DELIVERED]
    assert not {K.SHIPPED, K.DELIVERED} & set(kinds_of(events, "C2"))
    (cancelled,) = [e for e in events if e.command_id == "X2"]
    assert cancelled.order_id == "O-C2" and cancelled.lines == LINES
    (returned,) = [e for e in events if e.command_id == "R3"]
    assert returned.sellable and returned.lines == LINES
    shipped = next(e for e in events if e.command_id == "C1" and e.kind is K.SHIPPED)
    assert shipped.carrier == "ZTO" and len(shipped.tracking_number) == 15  # WH-GZ's default
    failed = next(e for e in events if e.command_id == "X1")
    assert failed.tracking_number == shipped.tracking_number
    records = await read_topic(settings, WMS_EVENTS.name(settings.topic_prefix))
    assert {r.key for r in records if b'"C1"' in r.value} == {b"O-C1"}
    assert len({e.event_id for e in events}) == len(events)
    assert counters["duplicates"] == 1 and counters["commands"] == 5


def assert_gone(pid: int) -> None:
    assert not stack.pid_alive(pid), f"pid {pid} still running"


async def test_start_status_and_stop_the_simulator_process(sim_settings: Settings) -> None:
    settings = sim_settings.model_copy(update={"wms_sim_delay_s": 0.05})
    started = stack.start_wms_sim(settings)
    try:
        assert started.name == stack.WMS_SIM and started.healthy and started.pid
        assert stack.start_wms_sim(settings).pid == started.pid  # no second copy
        listed = {s.name: s for s in stack.status(settings)}
        assert listed[stack.WMS_SIM].healthy and listed[stack.WMS_SIM].pid == started.pid
        await send(settings, command("C7"))
        await events_until(settings, has("C7", K.DELIVERED))
    finally:
        assert stack.stop_wms_sim(settings)
    assert_gone(started.pid)
    assert "wms-sim stopped" in stack.log_tail(settings, stack.WMS_SIM)  # exited cleanly
    assert stack.WMS_SIM not in {s.name for s in stack.status(settings)}
    assert not stack.stop_wms_sim(settings)


async def test_up_starts_it_when_configured_and_down_and_stop_workers_stop_it(
    sim_settings: Settings,
) -> None:
    settings = sim_settings.model_copy(update={"wms_sim": True})
    statuses = stack.up(settings, workers=0)
    sim = statuses[-1]
    try:
        assert sim.name == stack.WMS_SIM and sim.healthy
        assert stack.stop_workers(settings) == [stack.WMS_SIM]
        assert_gone(sim.pid)
        again = stack.start_wms_sim(settings)
        stack.down(settings, only={stack.WMS_SIM})
        assert_gone(again.pid)
        assert all(s.healthy for s in stack.status(settings))  # the servers were left up
    finally:
        stack.stop_wms_sim(settings, kill=True)


def test_health_needs_a_fresh_ready_heartbeat_from_the_process(sim_settings: Settings) -> None:
    client = stack.redis_client(sim_settings)
    key = wms_sim_heartbeat_key(sim_settings)
    me = os.getpid()

    def beat(**fields: object) -> tuple[bool, str]:
        value = {"pid": me, "ready": True, "ts": time.time(), "counters": {}} | fields
        client.set(key, json.dumps(value), ex=10)
        return stack.wms_sim_health(sim_settings, me)

    try:
        assert stack.wms_sim_health(sim_settings, me) == (False, "no heartbeat yet")
        assert beat()[0]
        assert beat(ts=time.time() - 60) == (False, "heartbeat 60 s old")
        assert not beat(ready=False)[0]
        assert not beat(pid=me + 1)[0]
        ok, detail = beat(counters={"commands": 3, "event_accepted": 2, "event_picked": 1})
        assert ok and "3 commands, 3 events sent" in detail
    finally:
        client.delete(key)
        client.close()
