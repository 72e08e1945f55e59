"""`./oms chaos`: faults injected mid-flood, then proof that every order is there exactly once
in effect (docs/decisions/0010-chaos.md).

Each scenario runs in a namespace of its own (topic prefix, consumer groups, Redis prefix,
ClickHouse database ``oms_chaos_<tag>``) on the chaos stack (home ``.oms/chaos``, its own loopback
ports, reset clean at the start, stopped at the end unless ``keep``):

1. stock for the flood (ops/bench.py top_up_stock: the demo's flash sale scaled to N orders);
2. W workers and the fact sink are started and ready;
3. the flood (ops/bench.py build_phase: every channel, duplicates, malformed) is sent flat out,
   while a fault task watches the order-events topic and injects its fault once
   :data:`FAULT_AT` of the orders have an event (so the flood is mid-way through the workers);
4. once the fault is over (the component is back, or gone for good), every input must be
   accounted for: the intake group's committed offsets reach every input (heartbeat counters die
   with a killed worker, offsets do not), ClickHouse has every order and DLQ record, every
   command seen on the topic is a fact;
5. the checks: no lost order, no double reservation, no order with two different first
   outbound commands (ops/bench.py), ``state.verify`` ok, and exact ClickHouse counts
   (:func:`clickhouse_exact`). A scenario is ok when every figure is zero, every count exact and
   its fault provably happened (``faults[].proof``: the killed pid is gone, Redis's run id
   changed, ClickHouse refused connections...).

Every wait is bounded and fails with :class:`ChaosError` saying what is missing; such a scenario
is reported not ok with its ``error``, and the next one still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from analytics.client import drop_database
from core.settings import Settings
from ops import bench, stack
from ops.bench import BenchError, Observer, Phase, Targets
from ops.loadgen import BurstMessage
from streams import topics

CHAOS_STACK: dict[str, Any] = {
    "kafka_bootstrap": "127.0.0.1:19392",
    "redis_url": "redis://127.0.0.1:16679/0",
    "clickhouse_port": 19300,
    "clickhouse_http_port": 18423,
    "worker_web_port": 16366,
    "wms_sim": False,
    "topic_prefix": "chaos",
    "app_id": "oms-chaos",
    "redis_prefix": "chaos",
    "clickhouse_database": "oms_chaos",
}
CHAOS_HOME = "chaos"

DEFAULT_ORDERS = 5000
FAULT_AT = 0.4  # inject once this share of the flood's orders has an order event
FAULT_WINDOW = (0.3, 0.6)  # outside it the fault was not mid-flood: the scenario is not ok
CLICKHOUSE_OUTAGE_S = 30.0
PROGRESS_POLL_S = 0.05
BATCHES_PER_FLOOD = 30  # at least this many intake batches per flood (per worker, ~15 per 2)
MIN_BATCH = 20
OUTAGE_PROBE_S = 1.0
SETTLE_EXTRA_S = 30.0
# The burst: each payload padded (all channels but `own`, whose schema forbids extra fields)
# so the burst outweighs a worker's whole memory: at least BURST_MIN_BYTES in all, 200-800 kB a
# payload (a Kafka message holds 1 MB).
BURST_PADDING_BYTES = 200_000
BURST_MAX_PADDING_BYTES = 800_000
BURST_MIN_BYTES = 320 * 2**20
# What a burst worker may hold fetched and not acked (agents/transport.py): 8 MB, so the
# suite's small burst still dwarfs what a worker is allowed to hold.
BURST_BUFFER_BYTES = 8 * 2**20
# A worker's RSS may grow by this during the burst: its buffer, aiokafka's prefetch (half a
# buffer), one batch's parsed copies and allocator slack. Naive buffering grows by more than the
# burst itself (1,390 MB for a 904 MB burst before the buffer was bounded by bytes); the burst
# must be at least twice the workers' summed headroom for the bound to say anything.
BURST_HEADROOM_BYTES = 64 * 2**20
BURST_STALL_S = 10.0  # processing stalled this long once the whole burst is in Kafka
PADDING_FIELD = "oms_chaos_padding"
# A killed worker's partitions are only reassigned once its session times out (agents/app.py:
# 10 s), and a lost worker's group rebalances after that; give the end of the flood this much more.
FAULT_EXTRA_S = 60.0
ERROR_CHARS = 400  # of a failed scenario's error in the table (the JSON has all of it)


class ChaosError(RuntimeError):
    """A scenario could not run or a wait timed out; the message says what is missing."""


def _quiet(_message: str) -> None:
    return None


# =========================================================================== pure logic


def fault_due(seen_orders: int, orders: int, at: float = FAULT_AT) -> bool:
    """The fault goes in once ``at`` of the flood's orders are through the workers."""
    return orders > 0 and seen_orders >= at * orders


def in_window(fraction: float | None, window: tuple[float, float] = FAULT_WINDOW) -> bool:
    return fraction is not None and window[0] <= fraction <= window[1]


@dataclass
class Fault:
    """One injected fault: what, on which component, when (seconds after the flood's first
    send, and the share of orders through by then), and ``proof``: facts observed that show it
    really happened (every one must be true)."""

    kind: str
    target: str
    at_s: float | None = None
    at_fraction: float | None = None
    mid_flood: bool = True  # False: the fault is the flood itself (the big burst)
    proof: dict[str, bool] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "target": self.target,
            "at_s": None if self.at_s is None else round(self.at_s, 3),
            "at_fraction": None if self.at_fraction is None else round(self.at_fraction, 3),
            "proof": dict(self.proof),
        }
        out.update(self.detail)
        return out


@dataclass
class ScenarioFigures:
    """What one scenario measured; :func:`assemble_scenario` makes its JSON."""

    name: str
    workers: int
    orders_sent: int
    inputs_sent: int
    duplicates: int
    malformed: int
    faults: list[Fault]
    lost_orders: int
    double_reservations: int
    duplicate_commands: int
    oversold_units: int
    verify_ok: bool
    exact: dict[str, Any]  # clickhouse_exact(): the counts and whether each matched
    seconds: float
    states: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def scenario_violations(result: Mapping[str, Any]) -> list[str]:
    """Every reason the scenario is not ok, in words (speed is never one)."""
    out: list[str] = []
    if result.get("error"):
        out.append(f"could not finish: {result['error']}")
        return out
    for name in ("lost_orders", "double_reservations", "duplicate_commands", "oversold_units"):
        if result[name]:
            out.append(f"{name} = {result[name]} (must be 0)")
    if not result["verify_ok"]:
        out.append("state.verify reported violations")
    if not result["clickhouse_exact"]:
        off = [
            k for k, v in result["clickhouse_counts"].items() if isinstance(v, dict) and not v["ok"]
        ]
        out.append(f"ClickHouse counts not exact: {', '.join(off) or 'unknown'}")
    if not result["faults"]:
        out.append("no fault was injected")
    for fault in result["faults"]:
        failed = [k for k, v in fault["proof"].items() if not v]
        if failed:
            out.append(
                f"fault {fault['kind']} on {fault['target']} not proven: {', '.join(failed)}"
            )
    return out


def assemble_scenario(f: ScenarioFigures) -> dict[str, Any]:
    """One scenario's JSON object: the figures the issue names first, then the rest."""
    result: dict[str, Any] = {
        "name": f.name,
        "orders_sent": f.orders_sent,
        "inputs_sent": f.inputs_sent,
        "faults": [x.as_json() for x in f.faults],
        "lost_orders": f.lost_orders,
        "double_reservations": f.double_reservations,
        "duplicate_commands": f.duplicate_commands,
        "clickhouse_exact": all(v["ok"] for v in f.exact.values() if isinstance(v, dict)),
        "verify_ok": f.verify_ok,
        "seconds": round(f.seconds, 1),
        "workers": f.workers,
        "duplicates": f.duplicates,
        "malformed": f.malformed,
        "oversold_units": f.oversold_units,
        "clickhouse_counts": f.exact,
        "states": f.states,
    }
    result.update(f.extra)
    result["violations"] = scenario_violations(result)
    result["ok"] = not result["violations"]
    return _ordered(result)


def failed_scenario(
    name: str, error: str, seconds: float, faults: Sequence[Fault]
) -> dict[str, Any]:
    """A scenario that could not finish (a wait timed out, a process died): not ok, with why."""
    result: dict[str, Any] = {
        "name": name,
        "orders_sent": None,
        "inputs_sent": None,
        "faults": [x.as_json() for x in faults],
        "lost_orders": None,
        "double_reservations": None,
        "duplicate_commands": None,
        "clickhouse_exact": False,
        "verify_ok": False,
        "seconds": round(seconds, 1),
        "error": error,
    }
    result["violations"] = scenario_violations(result)
    result["ok"] = False
    return _ordered(result)


def _ordered(result: dict[str, Any]) -> dict[str, Any]:
    """``ok`` right after the issue's figures, so a reader sees it first."""
    head = ["name", "orders_sent", "inputs_sent", "faults", "lost_orders",
            "double_reservations", "duplicate_commands", "clickhouse_exact", "verify_ok", "ok",
            "seconds"]  # fmt: skip
    return {**{k: result[k] for k in head if k in result}, **result}


def assemble_run(
    scenarios: Sequence[Mapping[str, Any]], machine: Mapping[str, Any]
) -> dict[str, Any]:
    """The one JSON object of ``./oms chaos --json``: ok only when every scenario is."""
    return {
        "ok": bool(scenarios) and all(s["ok"] for s in scenarios),
        "scenarios": list(scenarios),
        "machine": dict(machine),
    }


def exact_count(got: int, want: int) -> dict[str, Any]:
    return {"got": got, "want": want, "ok": got == want}


def burst_padding(orders: int) -> int:
    """Padding per payload so ``orders`` of them make at least BURST_MIN_BYTES."""
    return min(
        max(BURST_PADDING_BYTES, -(-BURST_MIN_BYTES // max(orders, 1))), BURST_MAX_PADDING_BYTES
    )


def pad_message(message: BurstMessage, size: int = BURST_PADDING_BYTES) -> BurstMessage:
    """The same order with ``size`` bytes of an extra field the channel adapters ignore (the
    canonical `own` schema forbids extras, and a malformed payload stays as broken as it was);
    the same bytes for an original and its re-push, so the duplicate is still one."""
    if message.channel == "own" or message.kind == "malformed":
        return message
    try:
        data = orjson.loads(message.value)
    except orjson.JSONDecodeError:
        return message
    if not isinstance(data, dict):
        return message
    data[PADDING_FIELD] = "x" * size
    return dataclasses.replace(message, value=orjson.dumps(data))


# =========================================================================== settings


def chaos_settings(base: Settings) -> Settings:
    """The chaos stack: home ``<home>/chaos``, its own ports and namespace."""
    return bench.own_stack_settings(base, CHAOS_STACK, CHAOS_HOME)


def chaos_batch_size(orders: int, configured: int) -> int:
    """Intake batches small enough that "30-50% through" can be seen: outputs leave a worker a
    batch at a time, so with 500-input batches a 1,500-order flood moves in thirds."""
    return max(MIN_BATCH, min(configured, orders // BATCHES_PER_FLOOD))


def scenario_settings(stack_settings: Settings, tag: str, orders: int = DEFAULT_ORDERS) -> Settings:
    """One scenario's namespace on the chaos stack: its counts are its own."""
    return stack_settings.model_copy(
        update={
            "batch_size": chaos_batch_size(orders, stack_settings.batch_size),
            "topic_prefix": f"{stack_settings.topic_prefix}-{tag}",
            "app_id": f"{stack_settings.app_id}-{tag}",
            "redis_prefix": f"{stack_settings.redis_prefix}-{tag}",
            "clickhouse_database": f"{stack_settings.clickhouse_database}_{tag}",
        }
    )


# =========================================================================== observers


class OrderEventReader(bench.CommandReader):
    """The order-events topic from the beginning, without a group: how many of the flood's
    orders have an event, as soon as a worker produced it (heartbeats come every 2 s; a small
    flood is through in less)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, topics.ORDER_EVENTS.name(settings.topic_prefix))
        self.order_ids: set[str] = set()

    def _add(self, value: bytes, ts_ms: int) -> None:
        self.records += 1
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
            order_id = orjson.loads(value).get("order_id")
            if order_id:
                self.order_ids.add(str(order_id))


class ChaosObserver(Observer):
    """bench's Observer with two changes for faults: inputs processed are the intake group's
    committed offsets (a killed worker's heartbeat counters die with it; offsets survive and
    a redelivered input is not counted twice), and a probe that fails (Redis or ClickHouse was
    just restarted) counts as "not yet" instead of ending the wait."""

    def __init__(self, settings: Settings, workers: int, reader: bench.CommandReader) -> None:
        super().__init__(settings, workers, reader)
        self._admin: Any = None
        raw = [spec.name(settings.topic_prefix) for spec in topics.RAW_TOPICS]
        from aiokafka import TopicPartition

        self.raw_partitions = [
            TopicPartition(t, p) for t in raw for p in range(settings.partitions)
        ]

    async def processed_inputs(self) -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        from core.kafka import client_kwargs

        try:
            if self._admin is None:
                admin = AIOKafkaAdminClient(**client_kwargs(self.settings), request_timeout_ms=5000)
                await admin.start()
                self._admin = admin
            committed = await self._admin.list_consumer_group_offsets(
                self.settings.app_id, partitions=self.raw_partitions
            )
        except Exception:
            await self._drop_admin()
            return 0
        return sum(max(0, int(getattr(m, "offset", -1))) for m in committed.values())

    def fact_counts(self) -> tuple[int, int, int]:
        from analytics.client import connect as ch_connect

        try:
            return super().fact_counts()
        except Exception:  # ClickHouse restarted under the client: a new one next time
            with contextlib.suppress(Exception):
                self.ch.disconnect()
            self.ch = ch_connect(self.settings)
            return 0, 0, 0

    async def close(self) -> None:
        await self._drop_admin()
        await super().close()

    async def _drop_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None


# =========================================================================== ClickHouse exactness


def clickhouse_exact(ch: Any, phase: Phase, commands_seen: int) -> dict[str, Any]:
    """Counts that must be exact after a fault: distinct orders in the events and in the order
    facts == valid orders sent; DLQ facts == malformed sent; commands == those on the topic.
    Redelivered batches write rows again (``*_raw``, information only); the ReplacingMergeTree
    keys must collapse them, so a count with FINAL must equal the distinct ids: a re-emitted fact
    with a new id or a new sort key would show as one more."""
    ((ev_orders, ev_ids, ev_final, ev_raw),) = ch.execute(
        "SELECT uniqExact(order_id), uniqExact(event_id), "
        "(SELECT count() FROM order_events FINAL), count() FROM order_events"
    )
    ((ord_ids, ord_final),) = ch.execute(
        "SELECT uniqExact(order_id), (SELECT count() FROM orders FINAL) FROM orders"
    )
    ((dlq_ids, dlq_final, dlq_raw),) = ch.execute(
        "SELECT uniqExact(dlq_id), (SELECT count() FROM dlq FINAL), count() FROM dlq"
    )
    ((cmd_ids, cmd_final),) = ch.execute(
        "SELECT uniqExact(command_id), (SELECT count() FROM fulfilment_commands FINAL) "
        "FROM fulfilment_commands"
    )
    return {
        "orders_in_events": exact_count(int(ev_orders), phase.orders),
        "orders_in_order_facts": exact_count(int(ord_ids), phase.orders),
        "order_facts_final": exact_count(int(ord_final), int(ord_ids)),
        "events_final": exact_count(int(ev_final), int(ev_ids)),
        "dlq": exact_count(int(dlq_ids), phase.malformed),
        "dlq_final": exact_count(int(dlq_final), int(dlq_ids)),
        "commands": exact_count(int(cmd_ids), commands_seen),
        "commands_final": exact_count(int(cmd_final), int(cmd_ids)),
        "event_rows_raw": int(ev_raw),
        "dlq_rows_raw": int(dlq_raw),
    }


# =========================================================================== faults


@dataclass
class Context:
    """What a fault (and the scenario around it) can see while the flood runs."""

    settings: Settings
    phase: Phase
    events: OrderEventReader
    say: Callable[[str], None]
    clickhouse_outage_s: float
    started: float = 0.0  # monotonic time of the flood's first send

    def fraction(self) -> float:
        return len(self.events.order_ids) / self.phase.orders if self.phase.orders else 0.0

    async def wait_due(self, timeout_s: float) -> Fault:
        """Until FAULT_AT of the orders have events; a Fault stamped with when that was."""
        deadline = time.monotonic() + timeout_s
        while not fault_due(len(self.events.order_ids), self.phase.orders):
            if time.monotonic() > deadline:
                raise ChaosError(
                    f"the fault never became due: {len(self.events.order_ids)} of "
                    f"{self.phase.orders} orders had an event after {timeout_s:.0f} s"
                )
            await asyncio.sleep(PROGRESS_POLL_S)
        return Fault("", "", at_s=time.monotonic() - (self.started or time.monotonic()),
                     at_fraction=self.fraction())  # fmt: skip


Injector = Callable[[Context, float], Awaitable[list[Fault]]]


def _stamped(base: Fault, kind: str, target: str) -> Fault:
    base.kind, base.target = kind, target
    base.proof["mid_flood"] = in_window(base.at_fraction)
    return base


async def kill_worker(ctx: Context, timeout_s: float, *, restart: bool, target: str) -> list[Fault]:
    """kill -9 worker ``target`` (its process group: nothing of it survives to flush or commit),
    then start it again or leave it gone for good."""
    fault = _stamped(await ctx.wait_due(timeout_s), "kill9", target)
    pid = stack.read_pid(ctx.settings, target)
    if pid is None:
        raise ChaosError(f"{target} has no pid file; was it started?")
    await asyncio.to_thread(stack.stop_component, ctx.settings, target, kill=True)
    fault.detail["pid"] = pid
    fault.proof["pid_gone"] = not stack.pid_alive(pid)
    ctx.say(f"{target} (pid {pid}) killed with SIGKILL at {fault.at_fraction:.0%} of the orders")
    if restart:
        began = time.monotonic()
        await asyncio.to_thread(stack.start_component, ctx.settings, target)
        new_pid = stack.read_pid(ctx.settings, target)
        fault.detail["restarted_pid"] = new_pid
        fault.detail["restart_s"] = round(time.monotonic() - began, 1)
        fault.proof["restarted"] = (
            new_pid is not None and new_pid != pid and stack.pid_alive(new_pid)
        )
        ctx.say(f"{target} restarted as pid {new_pid} in {fault.detail['restart_s']} s")
    return [fault]


def redis_identity(settings: Settings) -> tuple[str, int]:
    """(run_id, uptime_in_seconds) of the Redis server: a restart gives a new run id."""
    client = stack.redis_client(settings)
    try:
        info = client.info("server")
    finally:
        client.close()
    return str(info["run_id"]), int(info["uptime_in_seconds"])


async def restart_redis(ctx: Context, timeout_s: float) -> list[Fault]:
    """Stop Redis (SIGTERM: it fsyncs its AOF) mid-flood and start it again on the same data."""
    return await _restart_redis(ctx, timeout_s, kill=False)


async def kill_redis(ctx: Context, timeout_s: float) -> list[Fault]:
    """kill -9 Redis mid-flood and start it again on its AOF: nothing gets to fsync. Redis
    writes the AOF before it answers a client, so no write a worker was told about may be lost
    (``appendfsync everysec`` loses a second only when the machine itself goes down)."""
    return await _restart_redis(ctx, timeout_s, kill=True)


async def _restart_redis(ctx: Context, timeout_s: float, *, kill: bool) -> list[Fault]:
    fault = _stamped(await ctx.wait_due(timeout_s), "kill9" if kill else "restart", stack.REDIS)
    before, _ = redis_identity(ctx.settings)
    began = time.monotonic()
    await asyncio.to_thread(stack.stop_component, ctx.settings, stack.REDIS, kill=kill)
    fault.proof["was_down"] = not stack.redis_health(ctx.settings)[0]
    await asyncio.to_thread(stack.start_component, ctx.settings, stack.REDIS)
    after, uptime = redis_identity(ctx.settings)
    fault.detail.update(
        down_s=round(time.monotonic() - began, 2), run_id_before=before, run_id_after=after
    )
    fault.proof["run_id_changed"] = before != after
    fault.proof["uptime_reset"] = uptime <= time.monotonic() - began + 5
    how = "killed (-9)" if kill else "restarted"
    ctx.say(f"Redis {how} at {fault.at_fraction:.0%} of the orders (run id {after[:8]})")
    return [fault]


async def clickhouse_outage(ctx: Context, timeout_s: float) -> list[Fault]:
    """Stop ClickHouse for ``clickhouse_outage_s`` mid-flood, probing that it really refuses
    connections the whole time, then start it again."""
    fault = _stamped(await ctx.wait_due(timeout_s), "outage", stack.CLICKHOUSE)
    await asyncio.to_thread(stack.stop_component, ctx.settings, stack.CLICKHOUSE)
    stopped = time.monotonic()
    ctx.say(
        f"ClickHouse stopped at {fault.at_fraction:.0%} of the orders "
        f"for {ctx.clickhouse_outage_s:.0f} s"
    )
    probes: list[bool] = []
    while time.monotonic() - stopped < ctx.clickhouse_outage_s:
        probes.append(stack.clickhouse_health(ctx.settings)[0])
        await asyncio.sleep(
            min(OUTAGE_PROBE_S, max(0.0, ctx.clickhouse_outage_s - (time.monotonic() - stopped)))
        )
    await asyncio.to_thread(stack.start_component, ctx.settings, stack.CLICKHOUSE)
    fault.detail.update(down_s=round(time.monotonic() - stopped, 1), probes=len(probes))
    fault.proof["unreachable_during_outage"] = bool(probes) and not any(probes)
    fault.proof["back_after"] = stack.clickhouse_health(ctx.settings)[0]
    return [fault]


# =========================================================================== scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    tag: str  # namespace suffix
    workers: int
    what: str  # one line for the table and the README
    inject: Injector | None = None  # None: the burst, whose fault is its size under a cap
    # orders -> how each payload of a flood that size is shaped (None: sent as generated)
    shape: Callable[[int], Callable[[BurstMessage], BurstMessage]] | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # worker overrides


def burst_shape(orders: int) -> Callable[[BurstMessage], BurstMessage]:
    """The burst's padding, scaled to the flood's size (:func:`burst_padding`)."""
    return functools.partial(pad_message, size=burst_padding(orders))


def _kill_restart(ctx: Context, timeout_s: float) -> Awaitable[list[Fault]]:
    return kill_worker(ctx, timeout_s, restart=True, target=stack.worker_component("w1"))


def _kill_lost(ctx: Context, timeout_s: float) -> Awaitable[list[Fault]]:
    return kill_worker(ctx, timeout_s, restart=False, target=stack.worker_component("w2"))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "worker_kill9_restart",
            "kill9",
            2,
            "kill -9 w1 of 2 mid-flood, restart it",
            _kill_restart,
        ),
        Scenario(
            "worker_lost_rebalance",
            "lost",
            3,
            "kill -9 w2 of 3 for good; w0, w1 take over",
            _kill_lost,
        ),
        Scenario("redis_restart", "redis", 2, "restart Redis (AOF) mid-flood", restart_redis),
        Scenario(
            "redis_kill9", "rkill", 2, "kill -9 Redis mid-flood, start it on its AOF", kill_redis
        ),
        Scenario(
            "clickhouse_outage",
            "clickhouse",
            2,
            "stop ClickHouse mid-flood, start it again",
            clickhouse_outage,
        ),
        Scenario(
            "burst_over_memory",
            "burst",
            2,
            "a padded burst bigger than the workers' memory",
            None,
            burst_shape,
            {"consumer_buffer_bytes": BURST_BUFFER_BYTES},
        ),
    )
}


# =========================================================================== the burst


def burst_fault(ctx: Context, pids: Mapping[str, int], sampler: bench.RssSampler) -> Fault:
    """The burst is the fault: its bytes against what the workers hold before it."""
    sampler.sample()
    fault = Fault("burst", "workers", at_s=0.0, at_fraction=0.0, mid_flood=False)
    burst = ctx.phase.records.value_bytes
    largest = max((rss_of(pid) for pid in pids.values()), default=0)
    fault.detail.update(
        burst_bytes=burst,
        burst_mb=round(burst / 2**20, 1),
        rss_before_mb=round(sampler.samples[-1][1] / 2**20, 1),
        largest_worker_rss_before=largest,
        workers=len(pids),
    )
    return fault


def rss_of(pid: int) -> int:
    from pathlib import Path

    try:
        return bench.parse_proc_status(Path(f"/proc/{pid}/status").read_text()).get("VmRSS", 0)
    except OSError:
        return 0


async def stall_processing(ctx: Context, fault: Fault) -> None:
    """Redis stops before the burst: the workers can fetch but not process (their batches wait,
    agents/batches.py), which is when a consumer that buffers by count runs ahead of its
    processing and holds the burst."""
    await asyncio.to_thread(stack.stop_component, ctx.settings, stack.REDIS)
    fault.proof["processing_stalled"] = not stack.redis_health(ctx.settings)[0]
    fault.detail["stalled_at"] = time.monotonic()


async def resume_processing(ctx: Context, fault: Fault) -> None:
    """The whole burst is in Kafka: give the consumers BURST_STALL_S to fetch what they would,
    then start Redis again and let the workers work the backlog off."""
    await asyncio.sleep(BURST_STALL_S)
    await asyncio.to_thread(stack.start_component, ctx.settings, stack.REDIS)
    fault.detail["stalled_s"] = round(time.monotonic() - fault.detail.pop("stalled_at"), 1)
    ctx.say(f"Redis back after {fault.detail['stalled_s']} s: the workers work the burst off")


def finish_burst_fault(fault: Fault, pids: Mapping[str, int], sampler: bench.RssSampler) -> None:
    """Proof that the burst was not held: every worker lived through it, the burst is bigger
    than any worker's whole memory before it (one worker may be handed every partition), and
    the workers' summed RSS grew by no more than their headroom (BURST_HEADROOM_BYTES each),
    and the burst is at least twice that headroom."""
    burst = int(fault.detail["burst_bytes"])
    before = sampler.samples[0][1] if sampler.samples else 0
    peak = max((rss for _, rss in sampler.samples), default=0)
    growth = max(0, peak - before)
    fault.detail.update(
        peak_rss_mb=round(sampler.peak / 2**20, 1),
        summed_rss_peak_mb=round(peak / 2**20, 1),
        summed_rss_growth_mb=round(growth / 2**20, 1),
        growth_share_of_burst=round(growth / burst, 3) if burst else None,
    )
    largest = int(fault.detail["largest_worker_rss_before"])
    alive = all(map(stack.pid_alive, pids.values()))
    fault.proof.update(burst_proof(burst, largest, growth, alive, len(pids)))


def burst_proof(
    burst: int, worker_rss: int, growth: int, alive: bool, workers: int
) -> dict[str, bool]:
    headroom = workers * BURST_HEADROOM_BYTES
    return {
        "workers_survived": alive,
        "burst_exceeds_worker_memory": burst > worker_rss,
        "burst_exceeds_headroom": burst >= 2 * headroom,
        "rss_growth_bounded": growth <= headroom,
    }


# =========================================================================== running


def run_chaos(
    base: Settings,
    *,
    names: Sequence[str] | None = None,
    orders: int = DEFAULT_ORDERS,
    keep: bool = False,
    clickhouse_outage_s: float = CLICKHOUSE_OUTAGE_S,
    progress: Callable[[str], None] | None = None,
    own: Settings | None = None,
) -> dict[str, Any]:
    """Every chosen scenario on a freshly reset chaos stack (``own``: a stack already chosen,
    the suite's); returns :func:`assemble_run`. Raises ChaosError when the stack cannot start."""
    say = progress or _quiet
    chosen = list(names or SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise ChaosError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if orders < 100:
        raise ChaosError("a scenario needs at least 100 orders to be mid-flood at all")
    settings = own or chaos_settings(base)
    try:
        try:
            bench.reset_own_stack(settings, say)
        except (stack.StackError, BenchError, OSError) as exc:
            raise ChaosError(f"the chaos stack did not start: {exc}") from exc
        results = []
        for name in chosen:
            say(f"scenario {name}: {SCENARIOS[name].what}")
            results.append(run_one(settings, SCENARIOS[name], orders, clickhouse_outage_s, say))
            say(
                f"scenario {name}: {'ok' if results[-1]['ok'] else 'NOT OK'} "
                f"in {results[-1]['seconds']} s"
            )
        return assemble_run(results, bench.machine_info())
    finally:
        with contextlib.suppress(Exception):
            stack.stop_workers(settings)
        if not keep:
            stack.down(settings)


def run_one(
    stack_settings: Settings,
    scenario: Scenario,
    orders: int,
    clickhouse_outage_s: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One scenario in its own namespace; a wait that times out (or a process that died) makes
    it not ok with the reason, and the stack is brought back for the next one."""
    settings = scenario_settings(stack_settings, scenario.tag, orders).model_copy(
        update=dict(scenario.settings)
    )
    began = time.monotonic()
    faults: list[Fault] = []
    try:
        return asyncio.run(_scenario(settings, scenario, orders, clickhouse_outage_s, say, faults))
    except (ChaosError, BenchError, stack.StackError) as exc:
        say(f"scenario {scenario.name} failed: {exc}")
        return failed_scenario(scenario.name, str(exc), time.monotonic() - began, faults)
    finally:
        with contextlib.suppress(Exception):
            stack.stop_workers(settings)
        stack.up(settings, with_workers=False)  # a scenario may have left Redis or ClickHouse down


async def _scenario(
    settings: Settings,
    scenario: Scenario,
    orders: int,
    clickhouse_outage_s: float,
    say: Callable[[str], None],
    faults: list[Fault],
) -> dict[str, Any]:
    began = time.monotonic()
    drop_database(settings)  # a namespace's facts of an earlier run would count twice
    bench.prepare_namespace(settings)
    phase = bench.build_phase(
        settings,
        "flood",
        orders,
        f"chaos-{scenario.tag}-{os.getpid()}",
        shape=scenario.shape(orders) if scenario.shape else None,
    )
    bench.top_up_stock(settings, orders)
    await asyncio.to_thread(stack.start_workers, settings, scenario.workers, progress=say)
    if not settings.sink_in_worker:
        await asyncio.to_thread(stack.start_sink, settings, progress=say)
    reader = bench.CommandReader(settings)
    events = OrderEventReader(settings)
    producer = bench.new_producer(settings)
    observer = ChaosObserver(settings, scenario.workers, reader)
    ctx = Context(settings, phase, events, say, clickhouse_outage_s)
    pids = {
        n: p
        for i in range(scenario.workers)
        if (p := stack.read_pid(settings, n := stack.worker_component(f"w{i}")))
    }
    sampler = bench.RssSampler(list(pids.values()))
    for part in (reader, events):
        await part.start()
    await producer.start()
    try:
        timeout_s = bench.wait_timeout(phase.inputs) + FAULT_EXTRA_S
        if scenario.inject is None:
            faults.append(burst_fault(ctx, pids, sampler))
            sampler.start()
            await stall_processing(ctx, faults[0])
        ctx.started = time.monotonic()
        injecting = (
            asyncio.create_task(scenario.inject(ctx, timeout_s)) if scenario.inject else None
        )
        say(f"flood: {phase.inputs:,} messages ({phase.orders:,} orders)")
        await bench.send_phase(producer, phase)
        if scenario.inject is None:
            await resume_processing(ctx, faults[0])
        if injecting is not None:
            faults.extend(
                await asyncio.wait_for(
                    injecting, timeout_s + clickhouse_outage_s + 2 * stack.WORKER_START_TIMEOUT_S
                )
            )
        targets = Targets(phase.inputs, phase.orders, phase.malformed)
        await observer.wait_accounted(targets, timeout_s)
        await observer.wait_settled(bench.longest_merge_window(settings) + SETTLE_EXTRA_S)
        await reader.catch_up()
        if scenario.inject is None:
            sampler.stop()
            finish_burst_fault(faults[0], pids, sampler)
    finally:
        sampler.stop()
        await producer.stop()
        for part in (reader, events):
            with contextlib.suppress(Exception):
                await part.stop()
        await observer.close()
    alive = {n: stack.pid_alive(p) for n, p in pids.items()}
    await asyncio.to_thread(stack.stop_workers, settings)
    expected = {k for k in phase.keys if k is not None}
    checks = bench.check_correctness(settings, observer.ch, expected, reader)
    exact = clickhouse_exact(observer.ch, phase, len(reader.commands))
    return assemble_scenario(
        ScenarioFigures(
            name=scenario.name,
            workers=scenario.workers,
            orders_sent=phase.orders,
            inputs_sent=phase.inputs,
            duplicates=phase.duplicates,
            malformed=phase.malformed,
            faults=faults,
            lost_orders=len(checks.lost),
            double_reservations=len(checks.doubled),
            duplicate_commands=len(checks.duplicate_orders),
            oversold_units=checks.oversold_units,
            verify_ok=checks.verify_ok,
            exact=exact,
            seconds=time.monotonic() - began,
            states=checks.states,
            extra={
                "namespace": bench.namespace_of(settings),
                "workers_alive_at_end": alive,
                "commands": len(reader.commands),
            },
        )
    )


def render_table(result: Mapping[str, Any]) -> Any:
    """The run as a rich Table: one row per scenario."""
    from rich.table import Table

    table = Table(title="OMS chaos scenarios", header_style="bold")
    for column in ("scenario", "orders", "inputs", "faults", "lost", "double res.",
                   "dup. commands", "CH exact", "verify", "ok", "seconds"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("scenario", "faults") else "right")
    for s in result["scenarios"]:
        faults = "; ".join(_fault_text(f) for f in s["faults"]) or "-"
        if s.get("error"):
            faults += f" | error: {s['error'][:ERROR_CHARS]}"
        table.add_row(
            s["name"],
            _num(s["orders_sent"]),
            _num(s["inputs_sent"]),
            faults,
            _num(s["lost_orders"]),
            _num(s["double_reservations"]),
            _num(s["duplicate_commands"]),
            "yes" if s["clickhouse_exact"] else "NO",
            "ok" if s["verify_ok"] else "NO",
            "ok" if s["ok"] else "NOT OK",
            f"{s['seconds']:.1f}",
        )
    return table


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _fault_text(fault: Mapping[str, Any]) -> str:
    at = "" if fault.get("at_fraction") in (None, 0.0) else f" at {fault['at_fraction']:.0%}"
    proof = ", ".join(k for k, v in fault["proof"].items() if v)
    return f"{fault['kind']} {fault['target']}{at} ({proof})"


def scenario_names() -> list[str]:
    return list(SCENARIOS)


def problems(result: Mapping[str, Any]) -> Iterable[str]:
    for s in result["scenarios"]:
        for v in s["violations"]:
            yield f"{s['name']}: {v}"
