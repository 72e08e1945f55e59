"""Prometheus metrics of a worker and of the fact sink, rendered from what they already keep.

A worker counts everything it does in one ``Counter`` (the one its Redis heartbeat carries:
``inputs``, ``new``, ``duplicate``, ``dlq_<reason>``, ``shortage``, ``intake_batches``, ...).
This module turns a snapshot of it, the consumer's lag and the held-order count into the text
exposition format, so there is no second set of counters to keep in step with the first: what
``./oms status`` and ``./oms bench`` read is what Prometheus scrapes.

Metric families (all names ``oms_*``; counters are totals since the process started, rates
are Prometheus's job):

* ``oms_stage_messages_total{stage, outcome}``: throughput per stage of the order path, from
  ``STAGE_OF`` below: intake (inputs, dlq), dedupe (new, duplicate, update, redelivery,
  stale), audit/reserve/route (the order events a batch emitted, by kind, plus shortages,
  splits, merges), fulfil (fulfilment commands emitted, by kind), lifecycle (WMS answers,
  after-sales, operator actions, refused moves), sink (facts landed, records that were no fact).
  Events and commands are counted as emitted: a redelivered input re-emits its outbox and is
  counted again, as its messages are sent again.
* ``oms_dlq_total{reason}``: one series per DLQ reason, 0 included.
* ``oms_reservation_failures_total{reason}``: ``shortage`` (no warehouse could serve every line),
  ``superseded`` (a later decision about the order was carried out first; the input goes
  again on the fresh record).
* ``oms_intake_batches_total``, ``oms_intake_busy_seconds_total``: mean batch cost = ratio.
* ``oms_consumer_lag{topic, partition}``, ``oms_consumer_partitions``: per assigned partition,
  highwater minus the committed offset (what a restart would redo; reaches 0 once all is
  processed and committed).
* ``oms_held_orders``: orders waiting for a person; ``oms_orders_late`` and
  ``oms_orders_due_soon``: orders still to ship past their ship-by deadline, or due within 4 h;
  ``oms_backorders``: orders held out of stock (one round trip of index counts; absent when
  Redis is down).
* ``oms_ready``, ``oms_worker_info{worker}``, ``oms_counter_total{name}`` (any other counter, so
  nothing a worker counts is invisible), and the ``process_*`` figures of prometheus_client.
* The sink adds ``oms_sink_backlog_facts`` (fact records not yet committed after landing in
  ClickHouse: the batch in hand plus what waits on the topics), ``oms_sink_failed_flushes_total``,
  ``oms_sink_outages_total``, ``oms_sink_consecutive_failures``, ``oms_sink_outage_seconds``.

No label carries personal data: labels are stage, outcome, reason codes, topic names and
partition numbers only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# Counter name -> (stage, outcome). Names made by count_outputs are ``event_<kind>`` and
# ``command_<kind>``; prefixes below catch the families with open-ended suffixes.
STAGE_OF: Final[dict[str, tuple[str, str]]] = {
    "inputs": ("intake", "input"),
    "dlq": ("intake", "dlq"),
    "new": ("dedupe", "new"),
    "duplicate": ("dedupe", "duplicate"),
    "update": ("dedupe", "update"),
    "redelivery": ("dedupe", "redelivery"),
    "stale": ("dedupe", "stale"),
    "event_audited": ("audit", "passed"),
    "event_held": ("audit", "held"),
    "event_rejected": ("audit", "rejected"),
    "event_reserved": ("reserve", "reserved"),
    "shortage": ("reserve", "shortage"),
    "superseded": ("reserve", "superseded"),
    "gifts_added": ("reserve", "gift_added"),
    "gifts_skipped": ("reserve", "gift_skipped"),
    "event_routed": ("route", "routed"),
    "event_released": ("route", "released"),
    "split": ("route", "split"),
    "merged_orders": ("route", "merged"),
    "refused": ("lifecycle", "refused"),
    "illegal_transitions": ("lifecycle", "illegal_transition"),
    "cancelled": ("lifecycle", "cancelled"),
    "intercepts": ("lifecycle", "intercept"),
    "parcels_shipped": ("lifecycle", "parcel_shipped"),
    "short_picks": ("lifecycle", "short_pick"),
    "returns_received": ("lifecycle", "return_received"),
    "returns_requested": ("lifecycle", "return_requested"),
    "refunds": ("lifecycle", "refund"),
    "exchanges": ("lifecycle", "exchange"),
    "facts": ("sink", "landed"),
    "bad_facts": ("sink", "not_a_fact"),
}
STAGE_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("command_", "fulfil"),
    ("wms_", "lifecycle"),
    ("aftersales_", "lifecycle"),
    ("action_", "lifecycle"),
)
RESERVATION_FAILURES: Final = {"shortage": "shortage", "superseded": "superseded"}
# Counters shown by a family of their own, or not counts at all (gauges mirrored by FactSink).
OWN_FAMILY: Final = frozenset(
    {
        "intake_batches",
        "intake_busy_ms",
        "sink_partitions",
        "sink_retries",
        "sink_outages",
        "sink_consecutive_failures",
        "sink_outage_s",
        "sink_last_outage_s",
        "sink_backlog",
    }
)
DLQ_PREFIX: Final = "dlq_"


def stage_of(name: str) -> tuple[str, str] | None:
    """The (stage, outcome) a counter counts, None when it is not a stage's throughput."""
    if name in STAGE_OF:
        return STAGE_OF[name]
    for prefix, stage in STAGE_PREFIXES:
        if name.startswith(prefix):
            return stage, name[len(prefix) :]
    if name.startswith("event_"):
        return "lifecycle", name[len("event_") :]
    return None


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    lag: int


@dataclass(frozen=True)
class Snapshot:
    """What one process's /metrics shows, taken at scrape time."""

    component: str  # worker | sink
    name: str  # w0, w1, ... or sink
    ready: bool
    counters: Mapping[str, int]
    lags: Sequence[PartitionLag] = ()
    partitions: int = 0
    # held, late, due_soon, backorders (OrderStore.queue_figures); None: not read (Redis down,
    # or not this process's business)
    queues: Mapping[str, int] | None = None
    backlog: int | None = None  # the sink's uncommitted facts, None when not measured
    extra_gauges: Mapping[str, float] = field(default_factory=dict)
    dlq_reasons: Sequence[str] = ()  # every DLQ reason, so each has a series (0 included)


def lag_of(highwater: int | None, committed: int | None, read: int | None) -> int | None:
    """Messages of a partition not yet committed: highwater minus the committed offset (the
    next offset to read); before any commit, minus the next offset after the last one read.
    None when the highwater is not known yet (no fetch answered)."""
    if highwater is None:
        return None
    if committed is not None:
        done = committed
    elif read is not None:
        done = read + 1
    else:
        done = 0
    return max(0, highwater - done)


def stage_family(counters: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "oms_stage_messages",
        "Messages and orders counted per stage of the order path, by outcome.",
        labels=["stage", "outcome"],
    )
    for name, value in sorted(counters.items()):
        where = stage_of(name)
        if where is not None:
            family.add_metric(list(where), value)
    return family


def dlq_family(counters: Mapping[str, int], known: Iterable[str] = ()) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "oms_dlq", "Inputs sent to the dead-letter topic, by reason.", labels=["reason"]
    )
    reasons = set(known) | {n[len(DLQ_PREFIX) :] for n in counters if n.startswith(DLQ_PREFIX)}
    for reason in sorted(reasons):
        family.add_metric([reason], counters.get(f"{DLQ_PREFIX}{reason}", 0))
    return family


def reservation_family(counters: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "oms_reservation_failures",
        "Reservations that failed: shortage (no warehouse serves every line), superseded "
        "(retried).",
        labels=["reason"],
    )
    for name, reason in RESERVATION_FAILURES.items():
        family.add_metric([reason], counters.get(name, 0))
    return family


def other_family(counters: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "oms_counter", "Every other counter of the process, by name.", labels=["name"]
    )
    for name, value in sorted(counters.items()):
        shown = name in OWN_FAMILY or name.startswith(DLQ_PREFIX) or stage_of(name) is not None
        if not shown and isinstance(value, int | float):
            family.add_metric([name], value)
    return family


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def lag_family(lags: Sequence[PartitionLag]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "oms_consumer_lag",
        "Messages not yet committed per assigned partition (highwater - committed offset).",
        labels=["topic", "partition"],
    )
    for lag in sorted(lags, key=lambda x: (x.topic, x.partition)):
        family.add_metric([lag.topic, str(lag.partition)], lag.lag)
    return family


def intake_families(counters: Mapping[str, int]) -> Iterator[Metric]:
    yield counter(
        "oms_intake_batches", "Intake batches processed.", counters.get("intake_batches", 0)
    )
    yield counter(
        "oms_intake_busy_seconds",
        "Time spent processing intake batches (seconds).",
        counters.get("intake_busy_ms", 0) / 1000,
    )


def sink_families(snapshot: Snapshot) -> Iterator[Metric]:
    c = snapshot.counters
    yield counter(
        "oms_sink_failed_flushes",
        "Failed ClickHouse insert attempts (each is retried).",
        c.get("sink_retries", 0),
    )
    yield counter(
        "oms_sink_outages", "Times ClickHouse writes started failing.", c.get("sink_outages", 0)
    )
    yield gauge(
        "oms_sink_consecutive_failures",
        "Failed attempts of the write in progress (0 = healthy).",
        c.get("sink_consecutive_failures", 0),
    )
    yield gauge(
        "oms_sink_outage_seconds",
        "How long the current ClickHouse outage has lasted (0 = none).",
        c.get("sink_outage_s", 0),
    )
    if snapshot.backlog is not None:
        yield gauge(
            "oms_sink_backlog_facts",
            "Fact records not yet committed after landing in ClickHouse (in hand + waiting).",
            snapshot.backlog,
        )


class SnapshotCollector(Collector):
    """A prometheus_client collector over one snapshot (built per scrape)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s, c = self.snapshot, self.snapshot.counters
        info = GaugeMetricFamily(
            f"oms_{s.component}_info", "Which process this is.", labels=[s.component]
        )
        info.add_metric([s.name], 1)
        yield info
        yield gauge("oms_ready", "1 when /health/ready answers 200.", 1 if s.ready else 0)
        yield stage_family(c)
        yield other_family(c)
        yield gauge(
            "oms_consumer_partitions", "Partitions assigned to this consumer.", s.partitions
        )
        yield lag_family(s.lags)
        for name, value in sorted(s.extra_gauges.items()):
            yield gauge(name, name.replace("_", " "), value)
        if s.component == "worker":
            yield dlq_family(c, s.dlq_reasons)
            yield reservation_family(c)
            yield from intake_families(c)
            yield from queue_gauges(s.queues)
        if s.component == "sink" or "sink_retries" in c:
            yield from sink_families(s)


QUEUE_GAUGES = (
    ("held", "oms_held_orders", "Orders held for a person to decide."),
    ("late", "oms_orders_late", "Orders still to ship whose ship-by deadline has passed."),
    ("due_soon", "oms_orders_due_soon", "Orders still to ship due within the next 4 hours."),
    ("backorders", "oms_backorders", "Orders held out of stock, waiting for stock to come back."),
)


def queue_gauges(queues: Mapping[str, int] | None) -> Iterator[GaugeMetricFamily]:
    if queues is None:
        return
    for key, name, help_text in QUEUE_GAUGES:
        yield gauge(name, help_text, queues[key])


def render(snapshot: Snapshot, *, with_process: bool = True) -> bytes:
    """The text exposition format of ``snapshot`` (plus ``process_*`` of this process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    if with_process:
        ProcessCollector(registry=registry)
    return generate_latest(registry)
