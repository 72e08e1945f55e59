"""WMS simulator (`./oms wms-sim`): answers the OMS's fulfilment commands like a warehouse.

The demo and the integration tests need the other half of the fulfilment loop: something
that reads ``oms.fulfilment.commands`` and reports back on ``oms.wms.events`` with the
delays, tracking numbers, short picks and failed intercepts of a real warehouse.

Two layers, so the story is testable without Kafka:

- Decisions (``plan_outbound``, ``plan_return``, ``plan_cancel``, ``WmsSimulator``): pure.
  Every random choice about a command is drawn from a generator seeded by its command id,
  so a rerun with the same commands (and the same rates) tells the same story, and event
  ids are ``make_id("W", command_id, kind)``, so a re-sent command is recognised and
  dropped. Due events wait in one heap; nothing sleeps per message.
- Plumbing (``run_simulator``): one aiokafka consumer in its own group, one producer,
  batches both ways, a heartbeat in Redis for ``./oms status``, counts in the log.

Commands carry the buyer's name, phone and address (``ship_to``): none of it is ever
logged; the log only has counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import itertools
import logging
import os
import random
import signal
import string
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from core.heartbeat import wms_sim_heartbeat_key
from core.kafka import FetchPacing, client_kwargs, consumer_kwargs, ensure_topics
from core.logs import setup_logging
from core.settings import Settings, get_settings
from ops.cli_types import MAX_SIM_DELAY_S, MAX_SIM_DURATION_S, FiniteFloatRange
from state.redis import connect_async
from streams.channels.base import describe_validation
from streams.messages import (
    CommandKind,
    CommandLine,
    FulfilmentCommand,
    WmsEvent,
    WmsEventKind,
    make_id,
)
from streams.signing import WMS, Signer, signer_for
from streams.topics import FULFILMENT_COMMANDS, WMS_EVENTS

log = logging.getLogger("oms.wms_sim")

# --------------------------------------------------------------------------- carriers

# The carrier a warehouse hands parcels to when the OMS did not choose one.
DEFAULT_CARRIER_BY_WAREHOUSE = {"WH-SH": "SF", "WH-BJ": "JD", "WH-GZ": "ZTO", "WH-CD": "YTO"}
FALLBACK_CARRIER = "SF"

_S10_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def s10_check_digit(serial: str) -> int:
    """UPU S10 check digit of an 8-digit serial, as on EMS labels (EA123456785CN)."""
    rest = 11 - sum(int(d) * w for d, w in zip(serial, _S10_WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(rest, rest)


def _ems_number(rng: random.Random) -> str:
    serial = _digits(rng, 8)
    return f"E{rng.choice(string.ascii_uppercase)}{serial}{s10_check_digit(serial)}CN"


TRACKING_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "SF": lambda rng: "SF" + _digits(rng, 12),
    "ZTO": lambda rng: "7" + _digits(rng, 14),
    "YTO": lambda rng: "YT" + _digits(rng, 13),
    "JD": lambda rng: "JDVA" + _digits(rng, 11),
    "EMS": _ems_number,
    "DHL": lambda rng: _digits(rng, 10),
}


def carrier_for(command: FulfilmentCommand) -> str:
    """The command's carrier, else the warehouse's usual one."""
    if command.carrier:
        return command.carrier
    return DEFAULT_CARRIER_BY_WAREHOUSE.get(command.warehouse, FALLBACK_CARRIER)


def tracking_number(carrier: str, rng: random.Random) -> str:
    """A number in the carrier's own format (12 digits for a carrier we do not know)."""
    make = TRACKING_FORMATS.get(carrier.strip().upper())
    return make(rng) if make else _digits(rng, 12)


# --------------------------------------------------------------------------- decisions

EXCEPTION_DETAILS = (
    "package damaged during packing",
    "label printer failure: label unreadable",
    "parcel over the carrier's weight limit",
    "carrier refused pickup: packaging not sealed",
)
UNSELLABLE_DETAILS = (
    "packaging opened, item used",
    "item damaged in transit",
    "missing accessories",
)
DELIVERY_FACTOR = 4.0  # delivery takes about this many steps' delays after shipping


@dataclass(frozen=True)
class SimConfig:
    """Delays and failure rates; same config and same command ids, same story."""

    delay_s: float = 0.5
    short_pick_rate: float = 0.0
    exception_rate: float = 0.0
    unsellable_rate: float = 0.1

    @classmethod
    def from_settings(cls, settings: Settings) -> SimConfig:
        return cls(
            delay_s=settings.wms_sim_delay_s,
            short_pick_rate=settings.wms_sim_short_pick_rate,
            exception_rate=settings.wms_sim_exception_rate,
            unsellable_rate=settings.wms_sim_unsellable_rate,
        )


@dataclass(frozen=True)
class Step:
    """One event a command causes, ``after_s`` seconds after the command arrived."""

    after_s: float
    kind: WmsEventKind
    lines: tuple[CommandLine, ...] = ()
    carrier: str = ""
    tracking_number: str = ""
    detail: str = ""
    sellable: bool = True


def command_rng(command_id: str) -> random.Random:
    """Every random choice about a command comes from its id: a rerun tells the same story."""
    digest = hashlib.blake2b(f"wms-sim\x1f{command_id}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def jitter(rng: random.Random, mean_s: float) -> float:
    """A delay around ``mean_s`` (0.5x to 1.5x): parcels do not move in lockstep."""
    return mean_s * rng.uniform(0.5, 1.5)


def shortfall(lines: tuple[CommandLine, ...], rng: random.Random) -> CommandLine:
    """The units the picker could not find: one unit of one line."""
    line = rng.choice(lines)
    return line.model_copy(update={"quantity": 1})


def plan_outbound(command: FulfilmentCommand, config: SimConfig) -> list[Step]:
    """accepted, picked, shipped, delivered; or accepted then short_pick; or accepted,
    picked, exception. Delays and the tracking number are drawn before the outcome is
    applied, so changing a rate changes only the outcome, not the timing."""
    rng = command_rng(command.command_id)
    outcome = rng.random()
    accept, pick, ship = (jitter(rng, config.delay_s) for _ in range(3))
    deliver = jitter(rng, DELIVERY_FACTOR * config.delay_s)
    carrier = carrier_for(command)
    tracking = tracking_number(carrier, rng)
    lines = tuple(command.lines)
    picked_at = accept + pick
    steps = [Step(accept, WmsEventKind.ACCEPTED, lines)]
    if lines and outcome < config.short_pick_rate:
        missing = shortfall(lines, rng)
        detail = f"{missing.quantity} unit(s) of {missing.sku} not found at the pick location"
        return [*steps, Step(picked_at, WmsEventKind.SHORT_PICK, (missing,), detail=detail)]
    steps.append(Step(picked_at, WmsEventKind.PICKED, lines))
    shipped_at = picked_at + ship
    if outcome < config.short_pick_rate + config.exception_rate:
        detail = rng.choice(EXCEPTION_DETAILS)
        return [*steps, Step(shipped_at, WmsEventKind.EXCEPTION, lines, detail=detail)]
    return [
        *steps,
        Step(shipped_at, WmsEventKind.SHIPPED, lines, carrier, tracking),
        Step(shipped_at + deliver, WmsEventKind.DELIVERED, lines, carrier, tracking),
    ]


def plan_return(command: FulfilmentCommand, config: SimConfig) -> list[Step]:
    """The parcel comes back after a delay; some returns cannot be sold again."""
    rng = command_rng(command.command_id)
    sellable = rng.random() >= config.unsellable_rate
    after = jitter(rng, config.delay_s)
    detail = "" if sellable else rng.choice(UNSELLABLE_DETAILS)
    lines = tuple(command.lines)
    return [Step(after, WmsEventKind.RETURN_RECEIVED, lines, detail=detail, sellable=sellable)]


@dataclass
class OutboundState:
    """What the simulator remembers of an outbound, for cancels and intercepts about it."""

    lines: tuple[CommandLine, ...]
    carrier: str = ""
    tracking_number: str = ""
    shipped: bool = False
    stopped: bool = False  # cancelled or intercepted: its pending steps are dropped


def plan_cancel(
    command: FulfilmentCommand, outbound: OutboundState | None, config: SimConfig
) -> list[Step]:
    """Too late once the parcel is with the carrier; otherwise the outbound is cancelled
    (also one the warehouse never saw: there is nothing to stop)."""
    after = jitter(command_rng(command.command_id), config.delay_s)
    if outbound is not None and outbound.shipped:
        failed = Step(
            after,
            WmsEventKind.INTERCEPT_FAILED,
            outbound.lines,
            outbound.carrier,
            outbound.tracking_number,
            detail="parcel already with the carrier",
        )
        return [failed]
    if outbound is None:
        return [Step(after, WmsEventKind.CANCELLED, tuple(command.lines), detail="nothing to stop")]
    return [Step(after, WmsEventKind.CANCELLED, outbound.lines, detail="stopped before shipping")]


def build_event(command: FulfilmentCommand, step: Step, at_s: float) -> WmsEvent:
    """The event of ``step``, happening at epoch second ``at_s``; its id depends only on
    the command and the kind, so a resend is recognised downstream too."""
    return WmsEvent(
        event_id=make_id("W", command.command_id, step.kind.value),
        command_id=command.command_id,
        order_id=command.order_id,
        kind=step.kind,
        warehouse=command.warehouse,
        carrier=step.carrier,
        tracking_number=step.tracking_number,
        lines=list(step.lines),
        detail=step.detail,
        sellable=step.sellable,
        at=datetime.fromtimestamp(at_s, UTC),
    )


class WmsSimulator:
    """The warehouse's memory and timetable: which commands it has seen, where each
    outbound is, and which events fall due when. No I/O; the caller supplies the time."""

    def __init__(self, config: SimConfig, *, memory: int = 1_000_000) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self._memory = memory  # command ids and outbounds kept; the oldest are forgotten
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._outbounds: OrderedDict[str, OutboundState] = OrderedDict()
        # (due epoch s, sequence, outbound id the step belongs to or "", event)
        self._heap: list[tuple[float, int, str, WmsEvent]] = []
        self._sequence = itertools.count()

    @property
    def pending(self) -> int:
        return len(self._heap)

    def outbound(self, command_id: str) -> OutboundState | None:
        return self._outbounds.get(command_id)

    def handle(self, command: FulfilmentCommand, now: float) -> bool:
        """Schedule what ``command`` causes; False (and nothing scheduled) for an id seen
        before, since the OMS re-sends the same ids on replay."""
        if not self._remember(command.command_id):
            self.counters["duplicates"] += 1
            return False
        self.counters["commands"] += 1
        self.counters[f"command_{command.kind.value}"] += 1
        if command.kind is CommandKind.OUTBOUND:
            self._handle_outbound(command, now)
        elif command.kind in (CommandKind.CANCEL, CommandKind.INTERCEPT):
            self._handle_cancel(command, now)
        else:
            self._schedule(command, plan_return(command, self.config), now, owner="")
        return True

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[WmsEvent]:
        """Events due by ``now``, in due order; steps of a stopped outbound are dropped."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, owner, event = heapq.heappop(self._heap)
            state = self._outbounds.get(owner) if owner else None
            if state is not None and state.stopped:
                self.counters["steps_stopped"] += 1
                continue
            if state is not None and event.kind is WmsEventKind.SHIPPED:
                state.shipped = True
            self.counters[f"event_{event.kind.value}"] += 1
            out.append(event)
        return out

    def _remember(self, command_id: str) -> bool:
        if command_id in self._seen:
            return False
        self._seen[command_id] = None
        if len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return True

    def _track(self, command_id: str, state: OutboundState) -> None:
        self._outbounds[command_id] = state
        if len(self._outbounds) > self._memory:
            self._outbounds.popitem(last=False)

    def _handle_outbound(self, command: FulfilmentCommand, now: float) -> None:
        known = self._outbounds.get(command.command_id)
        if known is not None and known.stopped:
            self.counters["outbound_cancelled_before_arrival"] += 1
            return
        steps = plan_outbound(command, self.config)
        shipped = next((s for s in steps if s.kind is WmsEventKind.SHIPPED), None)
        state = OutboundState(tuple(command.lines))
        if shipped is not None:
            state.carrier, state.tracking_number = shipped.carrier, shipped.tracking_number
        self._track(command.command_id, state)
        self._schedule(command, steps, now, owner=command.command_id)

    def _handle_cancel(self, command: FulfilmentCommand, now: float) -> None:
        target = self._outbounds.get(command.refers_to) if command.refers_to else None
        steps = plan_cancel(command, target, self.config)
        if target is not None and not target.shipped:
            target.stopped = True
        elif target is None and command.refers_to:
            # the outbound has not arrived (yet): when it does, it is not executed
            self._track(command.refers_to, OutboundState(tuple(command.lines), stopped=True))
        self._schedule(command, steps, now, owner="")

    def _schedule(
        self, command: FulfilmentCommand, steps: Iterable[Step], now: float, *, owner: str
    ) -> None:
        for step in steps:
            due = now + step.after_s
            event = build_event(command, step, due)
            heapq.heappush(self._heap, (due, next(self._sequence), owner, event))


def parse_command(value: bytes | None) -> FulfilmentCommand | None:
    """The command, or None for a value that is not one (counted, never crashes the sim)."""
    if value is None:
        return None
    try:
        return FulfilmentCommand.model_validate_json(value)
    except ValidationError as exc:
        # the error text quotes the input (buyer names, phones): log only where it failed,
        # bounded (a path part may be a 1 MB field name)
        log.warning(
            "skipping an invalid command (%d errors): %s",
            exc.error_count(),
            describe_validation(exc, "command"),
        )
        return None


# --------------------------------------------------------------------------- Kafka plumbing

MAX_POLL_MS = 200  # also bounds how long a SIGTERM waits to be noticed
MAX_RECORDS = 5000
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 10
LOG_EVERY_S = 10.0


def consumer_group(settings: Settings) -> str:
    """The simulator's own group ("oms-wms-sim"), one per topic prefix."""
    return f"{settings.topic_prefix}-wms-sim"


def ensure_sim_topics(settings: Settings) -> None:
    """Both topics exist before the consumer subscribes (the local broker forgets topics)."""
    names = (
        FULFILMENT_COMMANDS.name(settings.topic_prefix),
        WMS_EVENTS.name(settings.topic_prefix),
    )
    ensure_topics(settings, [(name, settings.partitions) for name in names])


async def send_events(
    producer: AIOKafkaProducer, topic: str, events: list[WmsEvent], signer: Signer | None = None
) -> None:
    """Send a batch keyed by order id, signed as the WMS (streams/signing.py), and wait for every
    ack before offsets are committed."""
    futures = []
    for event in events:
        key, value = event.order_id.encode(), event.model_dump_json().encode()
        headers = signer.headers(topic, key, value) if signer else []
        signed = {"headers": headers} if headers else {}
        futures.append(await producer.send(topic, value, key=key, **signed))
    if futures:
        await asyncio.gather(*futures)


class Heartbeat:
    """``{"pid","ready","ts","pending","counters"}`` under ``wms_sim_heartbeat_key``,
    refreshed every 2 s with a 10 s TTL, so ``./oms status`` sees a stuck or dead sim."""

    def __init__(self, settings: Settings) -> None:
        self._key = wms_sim_heartbeat_key(settings)
        self._client = connect_async(settings)
        self._last = 0.0

    async def beat(self, *, ready: bool, sim: WmsSimulator, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < HEARTBEAT_S:
            return
        self._last = now
        value = {
            "pid": os.getpid(),
            "ready": ready,
            "ts": now,
            "pending": sim.pending,
            "counters": dict(sim.counters),
        }
        try:
            await self._client.set(self._key, orjson.dumps(value), ex=HEARTBEAT_TTL_S)
        except Exception as exc:  # Redis down: keep simulating, status will say so
            log.warning("heartbeat not written: %s", type(exc).__name__)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.delete(self._key)
        await self._client.aclose()


def log_counts(sim: WmsSimulator) -> None:
    c = sim.counters
    events = {k.removeprefix("event_"): v for k, v in sorted(c.items()) if k.startswith("event_")}
    log.info(
        "wms-sim: %d commands (%d duplicates, %d invalid), %d pending steps, events %s",
        c["commands"],
        c["duplicates"],
        c["invalid"],
        sim.pending,
        events,
    )


async def poll_once(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    sim: WmsSimulator,
    topic: str,
    signer: Signer | None = None,
) -> bool:
    """Take a batch of commands, send what has fallen due, then commit the batch; whether
    there were commands."""
    due = sim.next_due()
    wait_ms = MAX_POLL_MS if due is None else int(max(0.0, due - time.time()) * 1000)
    batch = await consumer.getmany(timeout_ms=min(wait_ms, MAX_POLL_MS), max_records=MAX_RECORDS)
    now = time.time()
    for records in batch.values():
        for record in records:
            command = parse_command(record.value)
            if command is None:
                sim.counters["invalid"] += 1
            else:
                sim.handle(command, now)
    await send_events(producer, topic, sim.pop_due(time.time()), signer)
    if batch:
        await consumer.commit()
    return bool(batch)


async def run_simulator(
    settings: Settings,
    config: SimConfig,
    *,
    stop: asyncio.Event | None = None,
    duration_s: float | None = None,
) -> Counter[str]:
    """Consume commands and produce events until ``stop`` is set or ``duration_s`` passed.

    Offsets are committed once a batch is scheduled, not once its parcels are delivered:
    steps still pending when the simulator stops are lost, as a simulator may.
    """
    stop = stop or asyncio.Event()
    sim = WmsSimulator(config)
    events_topic = WMS_EVENTS.name(settings.topic_prefix)
    signer = signer_for(settings, WMS)  # before connecting: a missing key is named at once
    consumer = AIOKafkaConsumer(
        FULFILMENT_COMMANDS.name(settings.topic_prefix),
        **consumer_kwargs(settings),
        group_id=consumer_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Joining is quicker with short group timeouts (3 s instead of 5 s on the local
        # broker, which also waits out a restarted member's session); 6 s is the least
        # Apache Kafka accepts by default (group.min.session.timeout.ms).
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=5000,
    )
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5, acks="all")
    heartbeat = Heartbeat(settings)
    await consumer.start()
    await producer.start()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    next_log = time.monotonic() + LOG_EVERY_S
    pacing = FetchPacing.of(settings)
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            got = await poll_once(consumer, producer, sim, events_topic, signer)
            pacing.pace(consumer, got)
            await heartbeat.beat(ready=bool(consumer.assignment()), sim=sim)
            if time.monotonic() >= next_log:
                log_counts(sim)
                next_log += LOG_EVERY_S
    finally:
        await heartbeat.close()
        await producer.stop()
        await consumer.stop()
    log_counts(sim)
    return sim.counters


async def run_until_signalled(
    settings: Settings, config: SimConfig, duration_s: float | None
) -> Counter[str]:
    """SIGTERM (``./oms down``) and SIGINT (Ctrl-C) end the loop cleanly: offsets
    committed, heartbeat removed, clients closed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await run_simulator(settings, config, stop=stop, duration_s=duration_s)


@click.command("wms-sim")
@click.option(
    "--delay",
    type=FiniteFloatRange(0, MAX_SIM_DELAY_S),
    default=None,
    help="Mean seconds between a parcel's steps (default OMS_WMS_SIM_DELAY_S).",
)
@click.option(
    "--short-pick-rate",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="Share of outbounds answered short_pick (default OMS_WMS_SIM_SHORT_PICK_RATE).",
)
@click.option(
    "--exception-rate",
    type=FiniteFloatRange(0, 1),
    default=None,
    help="Share of outbounds answered exception (default OMS_WMS_SIM_EXCEPTION_RATE).",
)
@click.option(
    "--duration",
    type=FiniteFloatRange(0, MAX_SIM_DURATION_S, min_open=True),
    default=None,
    help="Stop after S seconds (default: run until SIGTERM or Ctrl-C).",
)
def wms_sim_command(
    delay: float | None,
    short_pick_rate: float | None,
    exception_rate: float | None,
    duration: float | None,
) -> None:
    """Simulate the WMS: answer fulfilment commands with accepted, picked, shipped,
    delivered, short picks, exceptions, cancels and returns (deterministic per command)."""
    settings = get_settings()
    setup_logging(settings.log_format, settings.log_level, component="wms-sim")
    overrides = {
        "delay_s": delay,
        "short_pick_rate": short_pick_rate,
        "exception_rate": exception_rate,
    }
    config = dataclasses.replace(
        SimConfig.from_settings(settings), **{k: v for k, v in overrides.items() if v is not None}
    )
    try:
        ensure_sim_topics(settings)
    except Exception as exc:  # broker down or refusing: one line, not a traceback
        raise click.ClickException(
            f"Kafka at {settings.kafka_bootstrap} not usable ({type(exc).__name__}: {exc}); "
            "is the stack up? ./oms status"
        ) from exc
    log.info("wms-sim starting: %s, group %s", config, consumer_group(settings))
    asyncio.run(run_until_signalled(settings, config, duration))
    log.info("wms-sim stopped")


if __name__ == "__main__":
    wms_sim_command()
