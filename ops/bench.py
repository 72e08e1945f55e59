"""`./oms bench`: the end-to-end peak benchmark, measured against a consume-only ceiling.

What it measures, in one run on one broker:

- **Flood.** N realistic orders (ops/loadgen.py: every channel in its native shape, Zipf skus,
  multi-line, 2% re-pushed duplicates, 1% malformed) are generated in memory *before* the clock
  starts and then sent by one aiokafka producer as fast as it goes. t0 is the first send. The
  flood ends when every input is accounted for: the workers' heartbeat counters have seen every
  message, and the fact sink has committed every fact the workers produced (it commits only
  what ClickHouse holds), so every order, DLQ record and fulfilment command is a fact.
  ``seconds`` = max(newest fulfilment command of the flood, the moment ClickHouse was
  complete) - t0; ``orders_per_s`` = distinct valid orders / seconds, ``inputs_per_s`` = every
  message / seconds.
- **Latency.** Each order's latency is the Kafka timestamp of its fulfilment command (CreateTime
  set by the worker's producer: the same machine clock as the bench) minus the wall-clock time the
  bench sent the order. The flood's own figures (``flood_p50_ms``/``flood_p99_ms``) mostly
  measure queueing behind the flood; the target figure is "p99 at 80% of the maximum rate", so a
  second, paced burst (``paced_rate``, a token bucket at 80% of the flood's ``inputs_per_s``)
  gives ``p50_ms``/``p99_ms``; ``paced_send_s`` is how long its sends took and
  ``paced_seconds`` first send -> every input accounted for: the gap is the queue the latency
  figures measure (the workers sustain less with a paced stream's small batches than in the
  flood's big ones).
- **Ceiling.** After both phases the workers stop (freeing the CPU) and W Faust processes that
  only count (ops/bench_ceiling.py) read the same raw topics from the beginning in their own
  group: ``ceiling_per_s`` = messages / (last - first receive), ``ratio`` = ``inputs_per_s`` /
  ``ceiling_per_s``, the same messages on both sides.
- **Memory.** VmRSS of every worker every 0.5 s; ``peak_rss_mb`` = the largest worker's VmHWM;
  ``rss_growth_pct`` = growth of the workers' summed RSS from the moment 10% of the flood's inputs
  were processed to the end of the flood (a leak shows as growth that scales with N).
- **Correctness** (a violation makes the CLI exit 1; speed never does): ``oversold_units`` and
  the whole ``state.verify`` report, ``lost_orders`` (an order sent but not both a ClickHouse
  fact and a Redis record with a state), ``double_reservations``, ``duplicate_commands``, and
  DLQ facts == malformed messages. Warm-up and paced orders count in every check.

Decisions, and why:

- *Isolation.* By default the bench runs a stack of its own (home ``.oms/bench``, its own
  loopback ports, namespace ``bench``), and every run starts clean: the broker is restarted (Tansu
  keeps topics in memory, and a big run leaves GBs there), the bench Redis starts on an empty
  data dir, the bench ClickHouse database dropped and migrated again. The demo's data is never
  touched. With ``fresh_stack=False`` it runs on an already running stack (the test stack) in a
  namespace of its own (topic prefix, app id, Redis prefix, ClickHouse database, worker home and
  API ports all unique) and restarts or flushes nothing shared.
- *Stock.* samples/stock.csv is what ops/demo.py sells in a 3,000-order burst: most orders
  reserve and the two hottest skus sell out partway. Each phase gets that stock scaled to its
  size, on top of what is still reserved, so each phase is the same flash sale.
- *Warm-up.* W workers are started and a few hundred orders are processed before anything is
  measured: a Faust worker's start-up is not throughput.
- *Merge windows.* Shops with a merge window (config/shops.toml: the web shop waits 5 s for the
  buyer's next order) hold their orders back on purpose. Their commands count in every
  correctness check but not in the latencies nor in the end of a phase: the figure would be the
  shop's 5 s, not the pipeline. ``merge_window_orders`` says how many were left out; the bench
  waits for their windows to close before it checks correctness.
- *Duplicate commands.* An outbound id is a pure function of (order, kind, warehouse, attempt)
  and a split order legitimately ships one outbound per warehouse, so a duplicate is an order
  with two distinct attempt-1 outbound ids for one warehouse (a merged parcel counts for every
  order in ``merged_order_ids``). The same id twice on the topic (a re-emission after a
  redelivery) is not a duplicate: the WMS drops an id it has seen.
- *Double reservations* are read from the stock ledger, the union of the ClickHouse
  ``stock_movements`` (what the shipper moved, and then trimmed from Redis) and the Redis ledger
  streams (what it has not shipped yet), keyed by movement id: neither side alone is complete.
  One reserve script call writes its movements at one frozen millisecond with consecutive
  sequence numbers (Redis 7 freezes time inside a script), so calls can be told apart; a reserve
  call for an (order, sku) that still holds units from an earlier call is a double reservation.
  A saga that undid a partial reservation and reserved again is not.
- *Polling.* Heartbeats, the fact sink's committed offsets and the command topic are polled
  every ~0.1 s. ClickHouse is not counted while a phase runs (a uniqExact over the fact tables
  took up to a tenth of the machine being measured); the correctness checks count it after.
- *CPU budget.* ``cpu_us_per_order``: the CPU (utime + stime from /proc) each process spent on
  the flood, per order: workers, sink, broker, Redis, ClickHouse, and ``loadgen``, this process
  (producer, command reader, polls). ``total`` is their sum.

Every wait is bounded by a timeout that scales with N and fails with :class:`BenchError`,
saying what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from analytics.client import drop_database
from analytics.fact_consumer import Offsets, fact_offsets, offset_clients
from analytics.ledger import ClickHouseLedger
from core.kafka import client_kwargs, consumer_kwargs, ensure_topics
from core.settings import REPO_ROOT, Settings, mask_url
from ops import profile, stack
from ops.bench_ceiling import ceiling_key
from ops.loadgen import BurstMessage, iter_burst
from ops.proc_cpu import CpuMeter, per_order_us, spent
from ops.record_spool import RecordSpool
from state.keys import Keys
from state.stock import StockRow
from streams import topics

OrderKey = tuple[str, str]  # (channel, external order id): the raw Kafka key of the order

OWN_STACK: dict[str, Any] = {
    "kafka_bootstrap": "127.0.0.1:19292",
    "redis_url": "redis://127.0.0.1:16579/0",
    "clickhouse_port": 19200,
    "clickhouse_http_port": 18323,
    "worker_web_port": 16266,
    "wms_sim": False,
    "topic_prefix": "bench",
    "app_id": "oms-bench",
    "redis_prefix": "bench",
    "clickhouse_database": "oms_bench",
}
SHARED_WEB_PORT_OFFSET = 100  # bench workers on a shared stack serve their API above its own

WARMUP_ORDERS = 200
PROFILE_TOP = 15  # functions per list in --profile's JSON
READ_RATE_FLOOR = 1000  # commands/s the bench's reader is allowed at the least
DUPLICATE_RATE = 0.02
MALFORMED_RATE = 0.01
STOCK_FILE = REPO_ROOT / "samples" / "stock.csv"
STOCK_BURST_ORDERS = 3000  # samples/stock.csv is sized for a burst of this many (ops/demo.py)
PACED_FRACTION = 0.8  # the latency target is "p99 at 80% of the maximum rate"
PACED_SECONDS = 20.0
PACED_MIN_ORDERS = 300
BUCKET_BURST_S = 0.02  # the token bucket lets 20 ms worth of messages go back to back

POLL_S = 0.1
RSS_EVERY_S = 0.5
GROWTH_FROM = 0.1  # rss_growth_pct counts from 10% of the flood's inputs processed
SETTLE_EXTRA_S = 30.0  # beyond the longest merge window
CEILING_STOP_S = 15.0

LINGER_MS = 20
ACK_EVERY = 20_000  # sends in flight before their acks are awaited (the producer batches them)
MAX_BATCH_BYTES = 512 * 1024

JSON_KEYS = (
    "orders",
    "orders_per_s",
    "ceiling_per_s",
    "ratio",
    "p50_ms",
    "p99_ms",
    "peak_rss_mb",
    "oversold_units",
    "lost_orders",
    "inputs",
    "inputs_per_s",
    "duplicates",
    "malformed",
    "workers",
    "partitions",
    "seconds",
    "double_reservations",
    "duplicate_commands",
    "flood_p50_ms",
    "flood_p99_ms",
    "paced_rate",
    "rss_growth_pct",
    "machine",
)


class BenchError(RuntimeError):
    """The bench could not measure (a wait timed out, a process died); the message says what."""


def _quiet(_message: str) -> None:
    return None


# =========================================================================== pure figures


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least p% of the values at or below
    it): always a value that was measured. None for no values."""
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError("p must be within [0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def per_second(count: int, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """value / ceiling, or None when either is missing (never a division by zero)."""
    if value is None or not ceiling:
        return None
    return value / ceiling


def parse_proc_status(text: str) -> dict[str, int]:
    """The ``Vm*`` figures of /proc/PID/status, in bytes (the file gives kB)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name.startswith("Vm") and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            out[name] = int(parts[0]) * 1024
    return out


def progress_time(samples: Sequence[tuple[float, int]], target: int) -> float | None:
    """When a (time, count) series first reached ``target``."""
    return next((t for t, n in samples if n >= target), None)


def rss_growth_pct(
    samples: Sequence[tuple[float, int]], start: float | None, end: float
) -> float | None:
    """Growth (%) of a (time, bytes) series from the first sample at or after ``start`` to the
    last one at or before ``end``; None when the window holds no two samples."""
    if start is None:
        return None
    window = [(t, rss) for t, rss in samples if start <= t <= end]
    if len(window) < 2 or window[0][1] <= 0:
        return None
    return (window[-1][1] - window[0][1]) / window[0][1] * 100


def paced_size(orders: int, inputs_per_s: float | None) -> int:
    """Orders of the paced burst: a quarter of the flood, at most 20 s at 80% of its rate, and
    at least a few hundred so its percentiles mean something."""
    by_rate = int(PACED_FRACTION * (inputs_per_s or 0) * PACED_SECONDS)
    return max(PACED_MIN_ORDERS, min(orders // 4, by_rate))


def wait_timeout(inputs: int) -> float:
    """A bound for "every input accounted for": a minute plus 100 inputs/s, far below what even
    a loaded 2-core machine does, so only a real stall reaches it."""
    return 60.0 + inputs / 100.0


class TokenBucket:
    """Paces sends to ``rate`` per second on average: a message takes a token; tokens come back
    at ``rate``; up to ``burst_s`` worth may go back to back. The sender sleeps only when the
    bucket is empty (once per burst, not once per message), so timer granularity does not cut
    the rate: an overslept interval refills the bucket."""

    def __init__(self, rate: float, burst_s: float = BUCKET_BURST_S) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(1.0, rate * burst_s)
        self.tokens = self.capacity
        self.at: float | None = None

    def take(self, now: float) -> float:
        """Take one token at ``now`` (monotonic seconds); returns how long to wait before
        sending (0 when a token was there)."""
        if self.at is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class SeenCommand:
    """One fulfilment command as read off the topic, with its Kafka timestamp (ms)."""

    command_id: str
    kind: str
    attempt: int
    order_id: str
    channel: str
    shop_id: str
    external_id: str
    warehouse: str
    merged_order_ids: tuple[str, ...]
    ts_ms: int

    @property
    def first_outbound(self) -> bool:
        return self.kind == "outbound" and self.attempt == 1


def parse_command(value: bytes, ts_ms: int) -> SeenCommand | None:
    """The fields the bench needs from a FulfilmentCommand JSON (None when it is not one)."""
    try:
        data = orjson.loads(value)
        return SeenCommand(
            command_id=str(data["command_id"]),
            kind=str(data["kind"]),
            attempt=int(data.get("attempt", 1)),
            order_id=str(data["order_id"]),
            channel=str(data["channel"]),
            shop_id=str(data.get("shop_id", "")),
            external_id=str(data["external_id"]),
            warehouse=str(data.get("warehouse", "")),
            merged_order_ids=tuple(data.get("merged_order_ids") or ()),
            ts_ms=ts_ms,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def order_key(message: BurstMessage) -> OrderKey:
    """(channel, external id) of a generated order. Every adapter takes the external id from the
    same payload field the raw Kafka key is read from (streams/keys.py; Shopify's numeric ``id``
    as its decimal text, Amazon's ``AmazonOrderId``), so the key is the command's external_id."""
    return message.channel, (message.key or b"").decode()


def phase_latencies(
    commands: Iterable[SeenCommand],
    sends: Mapping[OrderKey, float],
    held_back: Callable[[str, str], bool],
) -> tuple[dict[OrderKey, float], float | None]:
    """Latency (ms) per order of ``sends`` (order key -> wall-clock send time, s): the newest
    attempt-1 outbound of the order (a split order is done when its last parcel is) minus the
    send. Also the newest such command's time (s). Orders of shops whose merge window holds them
    back on purpose (``held_back(channel, shop_id)``) are left out."""
    newest: dict[OrderKey, int] = {}
    for c in commands:
        key = (c.channel, c.external_id)
        if not c.first_outbound or key not in sends or held_back(c.channel, c.shop_id):
            continue
        newest[key] = max(newest.get(key, 0), c.ts_ms)
    latencies = {key: ts - sends[key] * 1000 for key, ts in newest.items()}
    last = max(newest.values()) / 1000 if newest else None
    return latencies, last


def duplicate_command_orders(commands: Iterable[SeenCommand]) -> set[str]:
    """Orders with more than one distinct attempt-1 outbound id for one warehouse; a merged
    parcel counts for the order that carries it and for every order in ``merged_order_ids``."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in commands:
        if c.first_outbound:
            for oid in {c.order_id, *c.merged_order_ids}:
                ids[(oid, c.warehouse)].add(c.command_id)
    return {oid for (oid, _), found in ids.items() if len(found) > 1}


# --------------------------------------------------------------------------- stock ledger


@dataclass(frozen=True)
class Movement:
    """One stock ledger entry: its stream id (ms, seq) orders it within its sku."""

    sku: str
    entry: tuple[int, int]
    kind: str
    ref: str
    warehouse: str
    reserved_delta: int


def _calls(moves: list[Movement]) -> list[list[Movement]]:
    """Group one (order, sku)'s movements, in ledger order, into script calls: consecutive
    reserve movements at one millisecond with consecutive sequence numbers are one call."""
    calls: list[list[Movement]] = []
    for m in moves:
        last = calls[-1][-1] if calls else None
        same_call = (
            last is not None
            and m.kind == last.kind == "reserve"
            and m.entry == (last.entry[0], last.entry[1] + 1)
        )
        if same_call:
            calls[-1].append(m)
        else:
            calls.append([m])
    return calls


def double_reservations(movements: Iterable[Movement]) -> set[tuple[str, str]]:
    """(order, sku) pairs with a reserve call while an earlier reservation still held units,
    or one call naming a warehouse twice. Movements are deduplicated by (sku, entry id), so the
    overlap of ClickHouse and Redis is counted once."""
    unique = {(m.sku, m.entry): m for m in movements}
    by_ref: dict[tuple[str, str], list[Movement]] = defaultdict(list)
    for m in unique.values():
        by_ref[(m.ref, m.sku)].append(m)
    doubled: set[tuple[str, str]] = set()
    for pair, moves in by_ref.items():
        held = 0
        for call in _calls(sorted(moves, key=lambda m: m.entry)):
            reserve = call[0].kind == "reserve"
            warehouses = [m.warehouse for m in call]
            if reserve and (held > 0 or len(set(warehouses)) != len(warehouses)):
                doubled.add(pair)
            held += sum(m.reserved_delta for m in call)
    return doubled


def movement_from_id(
    movement_id: str, sku: str, kind: str, ref: str, warehouse: str, reserved: int
) -> Movement:
    """A ClickHouse stock_movements row; ``movement_id`` is ``<sku>/<ms>-<seq>``."""
    ms, _, seq = movement_id[len(sku) + 1 :].partition("-")
    return Movement(sku, (int(ms), int(seq or 0)), kind, ref, warehouse, reserved)


# --------------------------------------------------------------------------- machine


def machine_info(
    cpuinfo: str | None = None, meminfo: str | None = None, cpus: int | None = None
) -> dict[str, Any]:
    """CPU count, CPU model name and RAM of this machine (from /proc when not given)."""
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    meminfo = _read("/proc/meminfo") if meminfo is None else meminfo
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "unknown",
    )
    total_kb = next(
        (int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), 0
    )
    return {
        "cpus": cpus if cpus is not None else os.cpu_count(),
        "model": model,
        "ram_gb": round(total_kb / 1024 / 1024, 1),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --------------------------------------------------------------------------- result


@dataclass
class Measured:
    """Everything the run measured, before rounding; :func:`assemble_result` makes the JSON."""

    orders: int
    inputs: int
    duplicates: int
    malformed: int
    workers: int
    partitions: int
    seconds: float | None
    flood_latencies: list[float]
    paced_latencies: list[float]
    paced_orders: int
    paced_rate: float | None
    ceiling_per_s: float | None
    ceiling_messages: int
    peak_rss_bytes: int
    rss_growth_pct: float | None
    oversold_units: int
    verify_ok: bool
    lost_orders: int
    double_reservations: int
    duplicate_commands: int
    dlq: int
    expected_dlq: int
    warmup_orders: int
    merge_window_orders: int
    commands: int
    states: dict[str, int] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    namespace: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None  # with --profile: where worker w0's time went
    cpu_us_per_order: dict[str, float] = field(default_factory=dict)  # flood, per process
    # The paced burst: how long its sends took, and first send -> every input accounted for
    # (much longer than the sends = a queue behind the paced stream).
    paced_send_s: float | None = None
    paced_seconds: float | None = None
    # When orders are lost: up to LOST_SAMPLE of them with what Redis and ClickHouse hold of
    # each, and the workers' input counters (what said "every input is processed")
    lost_sample: list[dict[str, Any]] = field(default_factory=list)
    worker_counters: dict[str, int] = field(default_factory=dict)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def assemble_result(m: Measured) -> dict[str, Any]:
    """The one JSON object of ``./oms bench --json`` (every key of :data:`JSON_KEYS`, then
    extras), plus ``violations`` and ``ok``."""
    orders_per_s = per_second(m.orders, m.seconds)
    inputs_per_s = per_second(m.inputs, m.seconds)
    result: dict[str, Any] = {
        "orders": m.orders,
        "orders_per_s": _round(orders_per_s),
        "ceiling_per_s": _round(m.ceiling_per_s),
        "ratio": _round(ratio(inputs_per_s, m.ceiling_per_s), 3),
        "p50_ms": _round(percentile(m.paced_latencies, 50)),
        "p99_ms": _round(percentile(m.paced_latencies, 99)),
        "peak_rss_mb": _round(m.peak_rss_bytes / 1024 / 1024),
        "oversold_units": m.oversold_units,
        "lost_orders": m.lost_orders,
        "inputs": m.inputs,
        "inputs_per_s": _round(inputs_per_s),
        "duplicates": m.duplicates,
        "malformed": m.malformed,
        "workers": m.workers,
        "partitions": m.partitions,
        "seconds": _round(m.seconds, 3),
        "double_reservations": m.double_reservations,
        "duplicate_commands": m.duplicate_commands,
        "flood_p50_ms": _round(percentile(m.flood_latencies, 50)),
        "flood_p99_ms": _round(percentile(m.flood_latencies, 99)),
        "paced_rate": _round(m.paced_rate),
        "paced_send_s": _round(m.paced_send_s, 2),
        "paced_seconds": _round(m.paced_seconds, 2),
        "rss_growth_pct": _round(m.rss_growth_pct, 2),
        "machine": m.machine,
        "paced_orders": m.paced_orders,
        "warmup_orders": m.warmup_orders,
        "ceiling_messages": m.ceiling_messages,
        "dlq": m.dlq,
        "expected_dlq": m.expected_dlq,
        "verify_ok": m.verify_ok,
        "commands": m.commands,
        "merge_window_orders": m.merge_window_orders,
        "states": m.states,
        "namespace": m.namespace,
        "cpu_us_per_order": m.cpu_us_per_order,
    }
    if m.profile is not None:
        result["profile"] = m.profile
    if m.lost_sample:
        result["lost_sample"] = m.lost_sample
        result["worker_counters"] = m.worker_counters
    result["violations"] = violations(result, m.expected_dlq)
    result["ok"] = not result["violations"]
    return result


def violations(result: Mapping[str, Any], expected_dlq: int) -> list[str]:
    """Every correctness figure that is off, in words; speed is never one."""
    out = []
    for name in ("oversold_units", "lost_orders", "double_reservations", "duplicate_commands"):
        if result[name]:
            out.append(f"{name} = {result[name]} (must be 0)")
    if not result["verify_ok"]:
        out.append("stock verify reported violations (./oms verify with the bench settings)")
    if result["dlq"] != expected_dlq:
        out.append(f"DLQ holds {result['dlq']} records, {expected_dlq} malformed were sent")
    return out


def render_table(result: Mapping[str, Any]) -> Any:
    """The result as a rich Table, for the terminal."""
    from rich.table import Table

    table = Table(title="OMS end-to-end bench", show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")

    def row(name: str, value: Any, unit: str = "") -> None:
        text = "-" if value is None else f"{value:,}" if isinstance(value, int | float) else value
        table.add_row(name, f"{text}{unit}")

    m = result["machine"]
    row("machine", f"{m['cpus']} cpu {m['model']}, {m['ram_gb']} GB")
    row("workers / partitions", f"{result['workers']} / {result['partitions']}")
    row(
        "orders (+ duplicates, malformed)",
        f"{result['orders']:,} (+{result['duplicates']:,}, +{result['malformed']:,})",
    )
    row("end to end", result["seconds"], " s")
    row("orders/s", result["orders_per_s"])
    row("inputs/s", result["inputs_per_s"])
    row("ceiling (Faust consume only)", result["ceiling_per_s"], " msg/s")
    row("ratio inputs/ceiling", result["ratio"])
    row("flood latency p50 / p99", f"{result['flood_p50_ms']} / {result['flood_p99_ms']} ms")
    row(
        f"paced at {result['paced_rate']} msg/s: p50 / p99",
        f"{result['p50_ms']} / {result['p99_ms']} ms",
    )
    row(
        "paced burst: sent in / accounted for after",
        f"{result.get('paced_send_s')} / {result.get('paced_seconds')} s",
    )
    row("peak RSS (largest worker)", result["peak_rss_mb"], " MB")
    row("RSS growth 10% -> end of flood", result["rss_growth_pct"], " %")
    for name in ("oversold_units", "lost_orders", "double_reservations", "duplicate_commands"):
        row(name, result[name])
    row("DLQ / malformed sent (all phases)", f"{result['dlq']} / {result['expected_dlq']}")
    row("verify", "ok" if result["verify_ok"] else "VIOLATIONS")
    states = ", ".join(f"{k} {v:,}" for k, v in sorted(result["states"].items()))
    row("order states (all phases)", states)
    row("left out of latency (merge window)", result["merge_window_orders"])
    cpu = result.get("cpu_us_per_order") or {}
    if cpu:
        row("CPU per order, flood", ", ".join(f"{k} {v:,.0f}" for k, v in cpu.items()), " µs")
    for title, entries in (result.get("profile") or {}).items():
        if isinstance(entries, list):
            top = "; ".join(f"{share:.0%} {name}" for share, name in entries[:PROFILE_ROWS])
            row(f"profile w0, {title.replace('_', ' ')}", top)
    return table


PROFILE_ROWS = 8  # per list in the table; the JSON has PROFILE_TOP
# Where a worker's time goes, by stage: (label, frame name prefix); a sample counts for its
# deepest stage frame (tests/unit/test_bench.py checks every function named here exists).
WORKER_STAGES = (
    ("normalise", "normalise (normalise.py)"),
    ("audit", "audit (audit.py)"),
    ("decide", "Decisions.decide (decisions.py)"),
    ("route", "Decisions.route (decisions.py)"),
    ("release to WMS", "Decisions.release_to_wms (decisions.py)"),
    ("reserve", "StockEngine.reserve_many (reservations.py)"),
    ("load records", "OrderStore.load_many (orders.py)"),
    ("save records", "OrderStore.save_groups (orders.py)"),
    ("velocity", "OrderPipeline._record_velocity (pipeline.py)"),
    ("outputs", "OrderPipeline._output (pipeline.py)"),
    ("order path, other", "OrderPipeline.process (pipeline.py)"),
    ("send outputs", "send_all (intake.py)"),
    ("ledger shipper", "LedgerShipper.ship (ledger.py)"),
    ("channel stock", "ChannelStockPublisher.tick (channel_stock.py)"),
    ("timers", "_register_timer.<locals>.tick (timers.py)"),
    ("heartbeat", "build_worker_app.<locals>.heartbeat (worker.py)"),
)


def profile_figures(folded: str) -> dict[str, Any]:
    """py-spy's folded stacks of worker w0 over the flood -> the JSON's ``profile``: the
    worker's time by stage (WORKER_STAGES; what is in none is Faust, the Kafka client and the
    event loop), the functions with the most time of their own in the whole worker, the order
    path's share (OrderPipeline.process) and the functions with the most time of their own in
    it."""
    whole = profile.summarise(folded, top=PROFILE_TOP)
    path = profile.summarise(folded, top=PROFILE_TOP, under="OrderPipeline.process (")
    rest = "Faust, Kafka client, event loop"

    def pairs(entries: list[profile.Entry]) -> list[tuple[float, str]]:
        return [(round(e.share, 3), e.function) for e in entries]

    return {
        "samples": whole.samples,
        "stages": pairs(profile.stages(folded, WORKER_STAGES, rest)),
        "own_time": pairs(whole.own),
        "order_path_share": round(path.samples / whole.samples, 3) if whole.samples else None,
        "order_path_own_time": pairs(path.own),
    }


# =========================================================================== settings


def own_stack_settings(
    base: Settings, own: Mapping[str, Any] = OWN_STACK, home: str = "bench"
) -> Settings:
    """A stack of its own: home ``<home>/<home>``, its own loopback ports and namespace
    (``own``: the bench's by default; ops/chaos.py passes its own)."""
    return base.model_copy(update={**own, "home": (base.home / home).resolve()})


def namespaced_settings(base: Settings, tag: str) -> Settings:
    """A namespace of its own on a running stack: nothing the stack's own workers, or another
    bench, use (topics, consumer groups, Redis keys, ClickHouse database, pid/log files, API
    ports)."""
    return base.model_copy(
        update={
            "home": (base.home / "bench" / tag).resolve(),
            "topic_prefix": f"bench{tag}",
            "app_id": f"oms-bench-{tag}",
            "redis_prefix": f"bench{tag}",
            "clickhouse_database": f"oms_bench_{tag}",
            "worker_web_port": base.worker_web_port + SHARED_WEB_PORT_OFFSET,
            "wms_sim": False,
        }
    )


def namespace_of(settings: Settings) -> dict[str, str]:
    """Where the run's data lives (for --keep, and for tests that check it is gone)."""
    return {
        "home": str(settings.home),
        "kafka_bootstrap": settings.kafka_bootstrap,
        "topic_prefix": settings.topic_prefix,
        "app_id": settings.app_id,
        "redis_url": mask_url(settings.redis_url),
        "redis_prefix": settings.redis_prefix,
        "clickhouse_database": settings.clickhouse_database,
    }


def merge_window_check(settings: Settings) -> Callable[[str, str], bool]:
    """(channel, shop) -> True when that shop's merge window holds orders back on purpose."""
    from order.shops import load_shop_rules
    from streams.models import ShopKey

    rules = load_shop_rules(settings.config_dir / "shops.toml")

    def held_back(channel: str, shop: str) -> bool:
        own = rules.get(ShopKey.of(channel, shop))
        window = own.merge_window_s if own and own.merge_window_s is not None else None
        return (settings.merge_window_s if window is None else window) > 0

    return held_back


def longest_merge_window(settings: Settings) -> float:
    from order.shops import load_shop_rules

    rules = load_shop_rules(settings.config_dir / "shops.toml").values()
    return max([settings.merge_window_s, *(r.merge_window_s or 0.0 for r in rules)])


# =========================================================================== the stack


def reset_own_stack(settings: Settings, say: Callable[[str], None]) -> None:
    """Clean state on the bench's own stack: leftovers stopped, the broker restarted (its
    memory topics gone), Redis started on an empty data dir, the ClickHouse database dropped;
    then topics and migrations as ``prepare_infra`` does."""
    from ops.prepare import prepare_infra
    from state.redis import connect

    stop_ceilings(settings)
    stack.stop_workers(settings)
    if stack.stop_component(settings, stack.BROKER):
        say("bench broker stopped (its memory topics are gone)")
    # Its data is flushed anyway; kept, a 1M-order run's 10 GB AOF took longer to load than
    # Redis is given to start, and every later bench failed to start it.
    stack.stop_component(settings, stack.REDIS)
    shutil.rmtree(settings.data_dir / "redis", ignore_errors=True)
    stack.up(settings, with_workers=False, progress=say)
    connect(settings).flushdb()
    drop_database(settings)
    prepare_infra(settings)  # topics and migrations; the servers are up (said above)


def prepare_namespace(settings: Settings) -> None:
    """Topics, database and migrations of a namespace on a running stack; nothing else."""
    from analytics.schema import ensure_schema
    from streams.topics import topic_partitions

    ensure_topics(settings, topic_partitions(settings.topic_prefix, settings.partitions))
    ensure_schema(settings)


def drop_namespace(settings: Settings) -> None:
    """Redis keys and the ClickHouse database of a namespace (its topics stay: the broker has
    no cheap delete, and a small test run leaves little)."""
    from ops.bench_stock import drop_keys
    from state.redis import connect

    drop_keys(connect(settings), settings.redis_prefix)
    drop_database(settings)


def ceiling_component(index: int) -> str:
    return f"ceiling-c{index}"


def stop_ceilings(settings: Settings) -> None:
    """Every ceiling process of this home (pid files ``ceiling-*.pid``)."""
    if not settings.run_dir.is_dir():
        return
    names = [p.stem for p in settings.run_dir.glob("ceiling-*.pid")]
    pids = {n: pid for n in names if (pid := stack.read_pid(settings, n)) is not None}
    stack._terminate(pids, CEILING_STOP_S)
    for name in names:
        stack.pid_file(settings, name).unlink(missing_ok=True)


def worker_pids(settings: Settings, workers: int) -> list[int]:
    names = [stack.worker_component(f"w{i}") for i in range(workers)]
    return [pid for n in names if (pid := stack.read_pid(settings, n)) is not None]


# =========================================================================== stock


def scaled_stock(settings: Settings, orders: int) -> list[StockRow]:
    """samples/stock.csv scaled from its 3,000-order burst to ``orders``."""
    from order.route import RoutingTable
    from state.stock import parse_stock_file

    routing = RoutingTable.load(settings.config_dir / "warehouses.toml")
    factor = orders / STOCK_BURST_ORDERS
    rows = parse_stock_file(STOCK_FILE, routing.warehouses)
    return [StockRow(r.sku, r.warehouse, max(1, math.ceil(r.qty * factor))) for r in rows]


def top_up_stock(settings: Settings, orders: int) -> int:
    """On hand = what is still reserved + the scaled sample, so every phase starts with the
    same sale and no reservation is invalidated; returns the units made available."""
    from state.redis import connect
    from state.stock import load_stock, stock_levels

    client, keys = connect(settings), Keys(settings.redis_prefix)
    rows = scaled_stock(settings, orders)
    reserved = {
        (lv.sku, lv.warehouse): lv.reserved
        for sku in {r.sku for r in rows}
        for lv in stock_levels(client, keys, sku)
    }
    load_stock(
        client,
        keys,
        [StockRow(r.sku, r.warehouse, r.qty + reserved.get((r.sku, r.warehouse), 0)) for r in rows],
    )
    return sum(r.qty for r in rows)


# =========================================================================== phases


@dataclass
class Phase:
    """One burst, generated before its clock starts, and when each message went out."""

    name: str
    records: RecordSpool  # in a file until sent: a 1M-order phase is 9 GB as objects
    keys: list[OrderKey | None]  # order key of each original order message, else None
    duplicates: int
    malformed: int
    sent_at: list[float] = field(default_factory=list)  # wall clock, one per record

    @property
    def orders(self) -> int:
        return sum(k is not None for k in self.keys)

    @property
    def inputs(self) -> int:
        return len(self.records)

    @property
    def t0(self) -> float:
        return self.sent_at[0]

    def sends(self) -> dict[OrderKey, float]:
        """Order key -> when its original message was sent."""
        return {k: t for k, t in zip(self.keys, self.sent_at, strict=True) if k is not None}

    def rate(self) -> float | None:
        return per_second(self.inputs - 1, self.send_seconds())

    def send_seconds(self) -> float | None:
        return self.sent_at[-1] - self.sent_at[0] if self.sent_at else None


def build_phase(
    settings: Settings,
    name: str,
    orders: int,
    run_id: str,
    *,
    shape: Callable[[BurstMessage], BurstMessage] | None = None,
) -> Phase:
    """``orders`` generated orders (with duplicates and malformed ones) as records to send;
    ``shape`` may rewrite each message first (ops/chaos.py pads payloads for its big burst)."""
    records = RecordSpool()
    keys: list[OrderKey | None] = []
    counts = {"order": 0, "duplicate": 0, "malformed": 0}
    for m in iter_burst(
        orders, run_id=run_id, duplicate_rate=DUPLICATE_RATE, malformed_rate=MALFORMED_RATE
    ):
        if shape is not None:
            m = shape(m)
        records.append(
            (topics.raw_topic(m.channel).name(settings.topic_prefix), m.key, m.value, m.headers)
        )
        keys.append(order_key(m) if m.kind == "order" else None)
        counts[m.kind] += 1
    return Phase(name, records, keys, counts["duplicate"], counts["malformed"])


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """One producer for every phase: long linger and big batches (throughput over latency of a
    single send), acks from all replicas as the workers' own producer (producer_acks=-1)."""
    return AIOKafkaProducer(
        **client_kwargs(settings), linger_ms=LINGER_MS, max_batch_size=MAX_BATCH_BYTES, acks="all"
    )


async def send_phase(producer: AIOKafkaProducer, phase: Phase, rate: float | None = None) -> None:
    """Send every record (paced by a token bucket when ``rate`` is set), noting each send's
    wall-clock time, then wait for every ack."""
    bucket = TokenBucket(rate) if rate else None
    pending = []
    note = phase.sent_at.append
    for topic, key, value, headers in phase.records:
        if bucket is not None:
            wait = bucket.take(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
        note(time.time())
        pending.append(await producer.send(topic, value, key=key, headers=headers))
        if len(pending) >= ACK_EVERY:  # a million futures held at once is memory for nothing
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


# =========================================================================== observers


class CommandReader:
    """Every record of the fulfilment commands topic, from the beginning, without a group (so
    it takes nothing from anyone): command id -> first sighting, and the record count. It reads
    in the background from start() on, so a phase's end only waits for the tail (reading a
    200k-order flood's commands at the end took longer than any fixed wait on a busy machine)."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or topics.FULFILMENT_COMMANDS.name(settings.topic_prefix)
        self.consumer = AIOKafkaConsumer(
            **consumer_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self.partitions: list[TopicPartition] = []
        self.next_offset: dict[TopicPartition, int] = {}
        self.commands: dict[str, SeenCommand] = {}
        self.records = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        found = self.consumer.partitions_for_topic(self.topic)
        if not found:
            await self.consumer.topics()
            found = self.consumer.partitions_for_topic(self.topic) or set()
        if not found:
            raise BenchError(f"topic {self.topic} does not exist")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(found)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _read(self) -> None:
        while True:
            for tp, batch in (await self.consumer.getmany(timeout_ms=200)).items():
                for record in batch:
                    self._add(record.value or b"", record.timestamp)
                if batch:
                    self.next_offset[tp] = batch[-1].offset + 1

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Until the background reader has reached the end offsets as of now; the wait allows
        for how far behind it is (at READ_RATE_FLOOR records/s at the least)."""
        ends = await self.consumer.end_offsets(self.partitions)
        behind = sum(max(0, end - self.next_offset.get(tp, 0)) for tp, end in ends.items())
        deadline = time.monotonic() + timeout_s + behind / READ_RATE_FLOOR
        while any(self.next_offset.get(tp, 0) < end for tp, end in ends.items()):
            if self._task is None or self._task.done():
                failure = self._task.exception() if self._task else "reader not started"
                raise BenchError(f"reading {self.topic} stopped: {failure}")
            if time.monotonic() > deadline:
                raise BenchError(f"could not read {self.topic} to its end ({behind} records)")
            await asyncio.sleep(0.05)

    def _add(self, value: bytes, ts_ms: int) -> None:
        self.records += 1
        command = parse_command(value, ts_ms)
        if command is not None and command.command_id not in self.commands:
            self.commands[command.command_id] = command


class RssSampler:
    """VmRSS of the workers every 0.5 s in a thread of its own; the highest VmHWM seen."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.samples: list[tuple[float, int]] = []  # (wall clock, summed RSS bytes)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(RSS_EVERY_S):
            self.sample()

    def sample(self) -> None:
        total = 0
        for pid in self.pids:
            try:
                figures = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            total += figures.get("VmRSS", 0)
            self.peak = max(self.peak, figures.get("VmHWM", 0), figures.get("VmRSS", 0))
        self.samples.append((time.time(), total))


# =========================================================================== waiting


def covers(committed: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> bool:
    """Every partition committed at least up to its end offset."""
    return all(committed.get(tp, 0) >= end for tp, end in ends.items())


COUNTS_SQL = """
SELECT
    (SELECT uniqExact(order_id) FROM order_events),
    (SELECT uniqExact(dlq_id) FROM dlq),
    (SELECT uniqExact(command_id) FROM fulfilment_commands)
"""


@dataclass(frozen=True)
class Targets:
    """What must be accounted for, counted over every phase sent so far."""

    inputs: int
    orders: int
    malformed: int


class Observer:
    """Polls what tells the bench how far the workers are: heartbeat counters in Redis, fact
    counts in ClickHouse, the commands topic."""

    def __init__(self, settings: Settings, workers: int, reader: CommandReader) -> None:
        from analytics.client import connect as ch_connect
        from state.redis import connect

        self.settings = settings
        self.redis = connect(settings)
        self.ch = ch_connect(settings)
        self.reader = reader
        keys = Keys(settings.redis_prefix)
        self.beat_keys = [keys.worker(f"w{i}") for i in range(workers)]
        self.progress: list[tuple[float, int]] = []  # (wall clock, inputs per heartbeats)
        self._offsets_clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        self._closing = contextlib.AsyncExitStack()

    def heartbeat_inputs(self) -> int:
        total = 0
        for raw in self.redis.mget(self.beat_keys):
            if raw:
                counters = orjson.loads(raw).get("counters") or {}
                total += int(counters.get("inputs", 0))
        self.progress.append((time.time(), total))
        return total

    async def processed_inputs(self) -> int:
        """Inputs the workers have processed, by their heartbeat counters (ops/chaos.py reads
        committed offsets instead: a killed worker's counters die with it)."""
        return self.heartbeat_inputs()

    def fact_counts(self) -> tuple[int, int, int]:
        ((orders, dlq, commands),) = self.ch.execute(COUNTS_SQL)
        return int(orders), int(dlq), int(commands)

    async def fact_offsets(self) -> tuple[Offsets, Offsets]:
        """End and sink-committed offsets of the fact topics (analytics/fact_consumer.py)."""
        if self._offsets_clients is None:
            clients = offset_clients(self.settings)
            self._offsets_clients = await self._closing.enter_async_context(clients)
        return await fact_offsets(*self._offsets_clients, self.settings)

    async def close(self) -> None:
        self._offsets_clients = None
        await self._closing.aclose()

    async def wait_accounted(self, targets: Targets, timeout_s: float) -> float:
        """Until every input is accounted for; returns when ClickHouse was first complete (wall
        clock). Complete: the workers have processed every input (their heartbeats, which count
        an input only once its outputs are acked by the broker) and the fact sink has committed
        every fact topic up to the end offsets read after that (it commits only what landed in
        ClickHouse). The heartbeats (every 2 s) gate the end, they do not date it: the date is
        the first poll whose committed offsets already covered those end offsets. Offsets cost
        the broker two small requests per poll; a count over the fact tables would cost
        ClickHouse a scan on the machine being measured."""
        deadline = time.monotonic() + timeout_s
        state = "nothing polled yet"
        history: list[tuple[float, Offsets]] = []
        while time.monotonic() < deadline:
            inputs = await self.processed_inputs()
            ends, committed = await self.fact_offsets()
            polled_at = time.time()
            history.append((polled_at, committed))
            behind = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
            state = (
                f"workers processed {inputs} of {targets.inputs} inputs; the fact sink is "
                f"{behind} facts behind"
            )
            if inputs >= targets.inputs and ends:
                covered = (t for t, c in history if covers(c, ends))
                if (complete_at := next(covered, None)) is not None:
                    return complete_at
            await asyncio.sleep(POLL_S)
        raise BenchError(f"not every input was accounted for after {timeout_s:.0f} s: {state}")

    def routed_orders(self) -> int:
        ((n,),) = self.ch.execute("SELECT count() FROM order_status WHERE state = 'routed'")
        return int(n)

    async def wait_settled(self, timeout_s: float) -> None:
        """Until no order waits in a merge window and every command is a fact; ``timeout_s``
        without progress at most. Progress: fewer orders waiting, more command facts, or the
        fact sink committing further; a sink slowed by a busy machine still settles, one that
        stopped does not hold the bench forever."""
        deadline = time.monotonic() + timeout_s
        state = "nothing polled yet"
        best: tuple[int, ...] = ()  # the best (-waiting, command facts, sink committed) so far
        while time.monotonic() < deadline:
            waiting = self.routed_orders()
            await self.reader.catch_up()
            facts = self.fact_counts()[2]
            seen = len(self.reader.commands)
            committed = sum((await self.fact_offsets())[1].values())
            state = f"{waiting} orders still routed (merge window), {facts} of {seen} commands"
            if not waiting and facts >= seen:
                return
            now = (-waiting, facts, committed)
            if not best or any(n > b for n, b in zip(now, best, strict=True)):
                best, deadline = tuple(map(max, best or now, now)), time.monotonic() + timeout_s
            await asyncio.sleep(0.5)
        raise BenchError(f"orders did not settle after {timeout_s:.0f} s without progress: {state}")


# =========================================================================== correctness


def order_states(settings: Settings, expected: Iterable[OrderKey]) -> dict[OrderKey, str]:
    """Order key -> state of its Redis record ('' when the record names none), for the keys
    Redis has a record for (via the channel order number index)."""
    from state.redis import connect

    client, keys = connect(settings), Keys(settings.redis_prefix)
    wanted = list(expected)
    out: dict[OrderKey, str] = {}
    for start in range(0, len(wanted), 2000):
        chunk = wanted[start : start + 2000]
        pipe = client.pipeline(transaction=False)
        for channel, external_id in chunk:
            pipe.smembers(keys.external(channel, external_id))
        ids = [
            (key, oid) for key, found in zip(chunk, pipe.execute(), strict=True) for oid in found
        ]
        pipe = client.pipeline(transaction=False)
        for _, oid in ids:
            pipe.hget(keys.order(oid), "doc")
        for (key, _), doc in zip(ids, pipe.execute(), strict=True):
            if doc:
                out[key] = str(orjson.loads(doc).get("state") or "")
    return out


def fact_order_keys(ch: Any) -> set[OrderKey]:
    rows = ch.execute("SELECT channel, external_id FROM order_events GROUP BY channel, external_id")
    return {(str(c), str(e)) for c, e in rows}


LOST_SAMPLE = 20
COUNTERS_SHOWN = ("inputs", "new", "update", "duplicate", "redelivery", "stale", "dlq")


def describe_lost(settings: Settings, ch: Any, lost: set[OrderKey]) -> list[dict[str, Any]]:
    """A few lost orders with what each store holds of them: tells a record never written from
    facts that never landed (and the one from the other) the next time a run finds any."""
    sample = sorted(lost)[:LOST_SAMPLE]
    states = order_states(settings, sample)
    in_facts = fact_order_keys(ch)
    return [
        {
            "channel": channel,
            "external_id": external_id,
            "redis_state": states.get((channel, external_id), "absent"),
            "in_facts": (channel, external_id) in in_facts,
        }
        for channel, external_id in sample
    ]


def worker_counters(settings: Settings, workers: int) -> dict[str, int]:
    """The input counters of the workers' last heartbeats, summed."""
    from state.redis import connect

    keys = Keys(settings.redis_prefix)
    out = dict.fromkeys(COUNTERS_SHOWN, 0)
    for raw in connect(settings).mget([keys.worker(f"w{i}") for i in range(workers)]):
        counters = orjson.loads(raw).get("counters") or {} if raw else {}
        for name in COUNTERS_SHOWN:
            out[name] += int(counters.get(name, 0))
    return out


def lost_orders(settings: Settings, ch: Any, expected: set[OrderKey]) -> set[OrderKey]:
    """Orders sent that are not both a ClickHouse fact and a Redis record with a state."""
    in_facts = fact_order_keys(ch)
    with_state = {k for k, state in order_states(settings, expected).items() if state}
    return expected - (in_facts & with_state)


def ledger_movements(settings: Settings, ch: Any) -> list[Movement]:
    """The whole stock ledger: what the shipper moved to ClickHouse plus what is still in the
    Redis streams (the overlap is removed by :func:`double_reservations`)."""
    from state.ledger import parse_id
    from state.redis import connect
    from state.stock import known_skus

    rows = ch.execute(
        "SELECT movement_id, any(sku), any(kind), any(ref), any(warehouse), any(reserved_delta) "
        "FROM stock_movements GROUP BY movement_id"
    )
    moves = [
        movement_from_id(str(i), str(s), str(k), str(r), str(w), int(d))
        for i, s, k, r, w, d in rows
    ]
    client, keys = connect(settings), Keys(settings.redis_prefix)
    for sku in sorted(known_skus(client, keys)):
        for entry_id, f in client.xrange(keys.ledger(sku)):
            moves.append(
                Movement(
                    sku,
                    parse_id(entry_id),
                    f.get("kind", ""),
                    f.get("ref", ""),
                    f.get("wh", ""),
                    int(f.get("reserved", 0)),
                )
            )
    return moves


@dataclass
class Checks:
    oversold_units: int
    verify_ok: bool
    lost: set[OrderKey]
    doubled: set[tuple[str, str]]
    duplicate_orders: set[str]
    dlq: int
    states: dict[str, int]


def check_correctness(
    settings: Settings, ch: Any, expected: set[OrderKey], reader: CommandReader
) -> Checks:
    from state.redis import connect
    from state.verify import verify

    report = verify(connect(settings), Keys(settings.redis_prefix), ClickHouseLedger(ch))
    states = dict(ch.execute("SELECT state, count() FROM order_status GROUP BY state"))
    ((dlq,),) = ch.execute("SELECT uniqExact(dlq_id) FROM dlq")
    return Checks(
        oversold_units=report.oversold_units,
        verify_ok=report.ok,
        lost=lost_orders(settings, ch, expected),
        doubled=double_reservations(ledger_movements(settings, ch)),
        duplicate_orders=duplicate_command_orders(reader.commands.values()),
        dlq=int(dlq),
        states={str(k): int(v) for k, v in states.items()},
    )


# =========================================================================== ceiling


def measure_ceiling(
    settings: Settings, processes: int, total: int, say: Callable[[str], None]
) -> tuple[float | None, int]:
    """Start ``processes`` consume-only Faust processes, let them read once every partition is
    assigned, wait until they counted ``total`` messages; returns (messages/s, count)."""
    from ops.bench_ceiling import go_key
    from state.redis import connect

    client = connect(settings)
    keys = [ceiling_key(settings, f"c{i}") for i in range(processes)]
    client.delete(*keys, go_key(settings))
    partitions = len(topics.RAW_TOPICS) * settings.partitions
    pids = {}
    for i in range(processes):
        argv = [sys.executable, "-m", "ops.bench_ceiling", "--name", f"c{i}"]
        name = ceiling_component(i)
        pids[name] = stack._spawn(
            settings, name, argv, env=stack.child_env(settings), cwd=REPO_ROOT
        )
    say(f"ceiling: {processes} consume-only Faust processes starting")
    try:
        assigned = every_partition_assigned(partitions)
        _await_tallies(settings, client, keys, pids, assigned, stack.WORKER_START_TIMEOUT_S)
        client.set(go_key(settings), "1")
        tallies = _await_tallies(
            settings, client, keys, pids, every_message_counted(total), wait_timeout(total)
        )
    finally:
        stop_ceilings(settings)
        client.delete(*keys, go_key(settings))
    counted = [t for t in tallies if int(t.get("count", 0))]
    count = sum(int(t["count"]) for t in counted)
    span = max(float(t["last"]) for t in counted) - min(float(t["first"]) for t in counted)
    return per_second(count, span), count


Tallies = list[dict[str, str]]
TallyCheck = Callable[[Tallies], tuple[bool, str]]


def every_partition_assigned(partitions: int) -> TallyCheck:
    """Every process has partitions and together exactly all of them: the group is stable
    (mid-rebalance, a stale report makes the sum too high or a process show none)."""

    def check(tallies: Tallies) -> tuple[bool, str]:
        assigned = [int(t.get("assigned", 0)) for t in tallies]
        done = sum(assigned) == partitions and all(assigned)
        return done, f"raw-topic partitions assigned {assigned} of {partitions}"

    return check


def every_message_counted(total: int) -> TallyCheck:
    def check(tallies: Tallies) -> tuple[bool, str]:
        got = sum(int(t.get("count", 0)) for t in tallies)
        return got >= total, f"counted {got} of {total} messages"

    return check


def _await_tallies(
    settings: Settings,
    client: Any,
    keys: list[str],
    pids: Mapping[str, int],
    check: TallyCheck,
    timeout_s: float,
) -> Tallies:
    deadline = time.monotonic() + timeout_s
    while True:
        tallies = [client.hgetall(k) for k in keys]
        done, state = check(tallies)
        if done:
            return tallies
        dead = [name for name, pid in pids.items() if not stack.pid_alive(pid)]
        if dead:
            tail = stack.log_tail(settings, dead[0])
            raise BenchError(f"ceiling process {dead[0]} died; its log ends:\n{tail}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"ceiling: {state} after {timeout_s:.0f} s (logs in {settings.log_dir})"
            )
        time.sleep(POLL_S)


# =========================================================================== the run


@dataclass
class Run:
    """What the phases leave behind for the result."""

    settings: Settings
    workers: int
    profile_worker: bool = False  # py-spy on worker w0 during the flood
    phases: list[Phase] = field(default_factory=list)
    targets: Targets = field(default_factory=lambda: Targets(0, 0, 0))

    def add(self, phase: Phase) -> Targets:
        self.phases.append(phase)
        t = self.targets
        self.targets = Targets(
            t.inputs + phase.inputs, t.orders + phase.orders, t.malformed + phase.malformed
        )
        return self.targets

    def expected(self) -> set[OrderKey]:
        return {k for p in self.phases for k in p.keys if k is not None}


def run_bench(
    settings: Settings,
    *,
    orders: int,
    workers: int,
    fresh_stack: bool = True,
    keep: bool = False,
    warmup: int = WARMUP_ORDERS,
    progress: Callable[[str], None] | None = None,
    profile_worker: bool = False,
) -> dict[str, Any]:
    """The whole bench; returns the result of :func:`assemble_result` (``ok`` False when a
    correctness figure is off). ``fresh_stack``: the bench's own stack, reset first and stopped
    after (unless ``keep``); else a namespace of its own on the stack ``settings`` point at
    (dropped after unless ``keep``; its workers always stop). Raises BenchError when it cannot
    measure."""
    if orders < 1 or workers < 1:
        raise ValueError("orders and workers must be positive")
    say = progress or _quiet
    if fresh_stack:
        bench = own_stack_settings(settings)
        reset_own_stack(bench, say)
    else:
        bench = namespaced_settings(settings, uuid.uuid4().hex[:8])
        prepare_namespace(bench)
    try:
        run = Run(bench, workers, profile_worker=profile_worker)
        return asyncio.run(_measure(run, orders, warmup, say))
    finally:
        teardown(bench, fresh_stack=fresh_stack, keep=keep)


def teardown(settings: Settings, *, fresh_stack: bool, keep: bool) -> None:
    """Own stack: everything stops unless ``keep`` (then its data can be looked at with the
    bench settings). Shared stack: the bench's workers always stop, its namespace's data goes
    unless ``keep``; the stack itself is left as it was."""
    stop_ceilings(settings)
    stack.stop_workers(settings)
    if keep:
        return
    if fresh_stack:
        stack.down(settings)
    else:
        drop_namespace(settings)


@dataclass
class PhaseFigures:
    latencies: list[float]  # ms per order released at once
    seconds: float  # first send -> newest command or ClickHouse complete, whichever is later
    ended: float  # wall clock when every input was accounted for


class Bench:
    """The observers of one run (command reader, producer, poller, RSS sampler) around the
    workers, and one phase at a time through them."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.reader = CommandReader(run.settings)
        self.producer = new_producer(run.settings)
        self.observer = Observer(run.settings, run.workers, self.reader)
        self.sampler = RssSampler(worker_pids(run.settings, run.workers))
        self.held_back = merge_window_check(run.settings)

    async def start(self) -> None:
        await self.reader.start()
        await self.producer.start()

    async def stop(self) -> None:
        self.sampler.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.reader.stop()
        await self.observer.close()

    async def phase(self, phase: Phase, rate: float | None = None) -> PhaseFigures:
        """Send the phase (at ``rate``, else flat out) and wait until it is accounted for."""
        await send_phase(self.producer, phase, rate)
        targets = self.run.add(phase)
        done_at = await self.observer.wait_accounted(targets, wait_timeout(phase.inputs))
        ended = time.time()
        latencies, last = phase_latencies(
            self.reader.commands.values(), phase.sends(), self.held_back
        )
        seconds = max(done_at, last or 0.0) - phase.t0
        return PhaseFigures(list(latencies.values()), seconds, ended)

    def growth_pct(self, before: int, phase: Phase, ended: float) -> float | None:
        """Summed worker RSS growth from 10% of ``phase``'s inputs processed (heartbeats beyond
        ``before``) to ``ended``."""
        progress = [(t, n - before) for t, n in self.observer.progress]
        start = progress_time(progress, math.ceil(GROWTH_FROM * phase.inputs))
        return rss_growth_pct(self.sampler.samples, start, ended)

    def held_back_orders(self) -> int:
        """Orders whose parcels waited in a merge window (left out of the latencies)."""
        return len(
            {
                oid
                for c in self.reader.commands.values()
                if c.first_outbound and self.held_back(c.channel, c.shop_id)
                for oid in {c.order_id, *c.merged_order_ids}
            }
        )


def _run_id(phase: str) -> str:
    return f"bench-{uuid.uuid4().hex[:8]}-{phase}"


async def _measure(
    run: Run, orders: int, warmup: int, say: Callable[[str], None]
) -> dict[str, Any]:
    s = run.settings
    warm = build_phase(s, "warm-up", warmup, _run_id("warm"))
    flood = build_phase(s, "flood", orders, _run_id("flood"))
    say(f"generated {flood.inputs:,} flood messages ({flood.orders:,} orders) in memory")
    top_up_stock(s, warmup + orders)
    stack.start_workers(s, run.workers, progress=say)
    if not s.sink_in_worker:
        stack.start_sink(s, progress=say)  # stopped with the workers, before the ceiling
    bench = Bench(run)
    await bench.start()
    try:
        await bench.phase(warm)
        say(f"warm-up done: {warm.orders} orders")
        bench.sampler.start()
        before = run.targets.inputs
        say(f"flood: {flood.inputs:,} messages")
        recording = start_profile(run) if run.profile_worker else None
        meter = cpu_meter(s, run.workers)
        cpu_before = meter.read()
        flooded = await bench.phase(flood)
        cpu_flood = spent(cpu_before, meter.read())
        figures = finish_profile(run, recording) if recording else None
        inputs_per_s = per_second(flood.inputs, flooded.seconds)
        say(f"flood done in {flooded.seconds:.1f} s ({inputs_per_s or 0:,.0f} inputs/s)")
        paced = build_phase(s, "paced", paced_size(orders, inputs_per_s), _run_id("paced"))
        top_up_stock(s, paced.orders)
        rate = PACED_FRACTION * inputs_per_s if inputs_per_s else None
        say(f"paced: {paced.inputs:,} messages at {rate or 0:,.0f}/s")
        paced_figures = await bench.phase(paced, rate)
        await bench.observer.wait_settled(longest_merge_window(s) + SETTLE_EXTRA_S)
    finally:
        await bench.stop()
    stack.stop_workers(s)  # and the sink: the ceiling has the CPU to itself
    say("workers stopped; checking correctness")
    checks = check_correctness(s, bench.observer.ch, run.expected(), bench.reader)
    ceiling, counted = measure_ceiling(s, run.workers, run.targets.inputs, say)
    measured = Measured(
        orders=flood.orders,
        inputs=flood.inputs,
        duplicates=flood.duplicates,
        malformed=flood.malformed,
        workers=run.workers,
        partitions=s.partitions,
        seconds=flooded.seconds,
        flood_latencies=flooded.latencies,
        paced_latencies=paced_figures.latencies,
        paced_orders=paced.orders,
        paced_rate=paced.rate(),
        paced_send_s=paced.send_seconds(),
        paced_seconds=paced_figures.seconds,
        ceiling_per_s=ceiling,
        ceiling_messages=counted,
        peak_rss_bytes=bench.sampler.peak,
        rss_growth_pct=bench.growth_pct(before, flood, flooded.ended),
        oversold_units=checks.oversold_units,
        verify_ok=checks.verify_ok,
        lost_orders=len(checks.lost),
        double_reservations=len(checks.doubled),
        duplicate_commands=len(checks.duplicate_orders),
        dlq=checks.dlq,
        expected_dlq=run.targets.malformed,
        warmup_orders=warm.orders,
        merge_window_orders=bench.held_back_orders(),
        commands=len(bench.reader.commands),
        states=checks.states,
        lost_sample=describe_lost(s, bench.observer.ch, checks.lost) if checks.lost else [],
        worker_counters=worker_counters(s, run.workers) if checks.lost else {},
        machine=machine_info(),
        namespace=namespace_of(s),
        profile=figures,
        cpu_us_per_order=per_order_us(cpu_flood, flood.orders),
    )
    return assemble_result(measured)


def cpu_meter(settings: Settings, workers: int) -> CpuMeter:
    """The processes whose CPU the flood costs: workers, sink, the servers of the stack (when
    this stack runs them) and this process, the load generator (with its command reader and
    probes: what a bench costs beside the system it measures)."""
    groups: dict[str, list[int]] = {"worker": worker_pids(settings, workers)}
    for name in (stack.SINK, stack.BROKER, stack.REDIS, stack.CLICKHOUSE):
        pid = stack.read_pid(settings, name)
        groups[name] = [pid] if pid is not None else []
    groups["loadgen"] = [os.getpid()]
    return CpuMeter(groups)


def profile_path(settings: Settings) -> Path:
    return settings.log_dir / "bench-profile-w0.txt"


def start_profile(run: Run) -> subprocess.Popen:
    pids = worker_pids(run.settings, 1)
    if not pids:
        raise BenchError("--profile: worker w0 has no pid file")
    run.settings.log_dir.mkdir(parents=True, exist_ok=True)
    return profile.start_recording(pids[0], profile_path(run.settings))


def finish_profile(run: Run, recording: subprocess.Popen) -> dict[str, Any]:
    """The flood's profile; the folded stacks stay in the log dir for a flame graph."""
    try:
        folded = profile.finish_recording(recording, profile_path(run.settings))
    except profile.ProfileError as exc:
        raise BenchError(f"--profile: {exc}") from exc
    return profile_figures(folded)
