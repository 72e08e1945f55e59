"""Sales and health report from ClickHouse (``./oms report``).

Every query is a module-level constant listed in ``QUERIES`` (the chdb test runs them all on
current ClickHouse; the integration test on 18.16). Each one is exact before merges and after
replays because it never trusts ReplacingMergeTree to have collapsed anything: every fact is
first reduced to ONE row per id, its latest revision (``rev``, analytics/facts.py
``revision``), and only then filtered, counted or summed. A redelivered fact has the same rev;
a fact emitted again with other content under the same id (a different time, reason or
allocation) replaces the earlier emission rather than counting beside it (migration 0006).

* order events are read through ``order_events_latest`` (one row per event id); order state
  and allocations come from ``order_status`` on top of it: argMax(to_state, seq) over events
  with a to_state;
* money and lines come from ``order_latest`` / ``order_lines_latest``: argMax by rev per
  order / line, lines filtered to the order's latest snapshot;
* units reserved are each order's CURRENT reservation (``order_status.reserved_*``: its latest
  RESERVED event's allocations), for orders whose latest state still holds stock
  (``HOLDING_STATES``): a re-reservation replaces the first one, it never adds to it;
* DLQ records, fulfilment commands, WMS events and after-sales requests are grouped by their
  id (argMax by rev) before anything else; stock movements by movement_id (their content is
  their id's: the ledger entry);
* per-minute sales come from ``sales_by_minute`` (kept by a materialized view, one row per
  line revision): argMax by rev per (order_id, line_id), latest snapshot of the order only;
* oversell and sell-through come from the stock ledger (``stock_movements``), not from order
  allocations.

Scope: with ``since``, order figures cover orders whose first event is at or after ``since``
(with all their later events); duplicates and DLQ records are filtered on their own time.
Oversell is a property of current stock, so it is never windowed; sell-through windows the
reserved and shipped units by movement time and takes on hand as it is now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from analytics.client import QueryClient

# Latest states that mean the order was accepted: it went through reservation, or the platform
# ships it (or nothing does: virtual goods), which is a sale all the same.
ACCEPTED_STATES: tuple[str, ...] = (
    "reserved",
    "routed",
    "released",
    "accepted",
    "picked",
    "partially_shipped",
    "shipped",
    "delivered",
    "exception",
    "intercepting",
    "returning",
    "exchanging",
    "closed",
    "returned",
    "refunded",
    "fulfilled_elsewhere",
)

# Latest states in which an order holds its reservation in Redis: from RESERVED until it ships
# (a commit moves the units out) or is cancelled (they go back); an intercept keeps them until
# the WMS confirms the stop. Not counted: a partially shipped order's remaining parcels, and an
# exchange's replacement (a reservation of its own id, not the order's).
HOLDING_STATES: tuple[str, ...] = (
    "reserved",
    "routed",
    "released",
    "accepted",
    "picked",
    "exception",
    "intercepting",
)

# Events of an order's life after intake that the report counts (orders and events per kind),
# for the orders in scope (first seen since), like every other section.
LIFECYCLE_KINDS: tuple[str, ...] = (
    "merged",
    "gift_added",
    "gift_skipped",
    "shipped",
    "partially_shipped",
    "delivered",
    "short_pick",
    "wms_exception",
    "intercept_requested",
    "intercept_failed",
    "stop_confirmed",
    "address_changed",
    "return_requested",
    "return_received",
    "refunded",
    "exchange_requested",
    "cancelled",
    "closed",
    "action_refused",
    "transition_refused",
)


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_SINCE = "toDateTime(%(since)s)"  # an epoch int: time-zone independent on every server
_IN_SCOPE = f"SELECT order_id FROM order_status WHERE first_at >= {_SINCE}"
_ACCEPTED_IN_SCOPE = (
    "SELECT order_id FROM order_status "
    f"WHERE state IN {_sql_list(ACCEPTED_STATES)} AND first_at >= {_SINCE}"
)

# Per (channel, latest state, reason for held/rejected): orders_in, by state, by channel, reasons.
Q_ORDER_STATES = f"""
SELECT
    channel,
    state,
    if(state IN ('held', 'rejected'), reason, '') AS why,
    count() AS orders
FROM order_status
WHERE first_at >= {_SINCE}
GROUP BY channel, state, why
ORDER BY channel, state, why
"""

# Reserved but not released (order/gates.py): routed orders behind a release gate, by the
# reason of their latest release_waits note (a pre-sale's balance, a channel hold, a ship date).
Q_WAITING_BY_REASON = f"""
SELECT w_reason, count() AS orders
FROM
(
    SELECT order_id, argMax(reason, seq) AS w_reason
    FROM order_events_latest
    WHERE kind = 'release_waits'
      AND order_id IN (SELECT order_id FROM order_status WHERE state = 'routed'
                       AND first_at >= {_SINCE})
    GROUP BY order_id
)
GROUP BY w_reason
ORDER BY w_reason
"""

# Backorders (agents/timers.py): orders the backorder timer tried again when stock came back,
# and how many of them are now reserved and on their way (not held, cancelled or rejected).
Q_BACKORDERS = f"""
SELECT count() AS retried, countIf(state NOT IN ('held', 'cancelled', 'rejected')) AS cleared
FROM order_status
WHERE first_at >= {_SINCE}
  AND order_id IN (SELECT order_id FROM order_events_latest WHERE kind = 'backorder_retried')
"""

Q_LIFECYCLE = f"""
SELECT kind, uniqExact(order_id) AS orders, count() AS events
FROM order_events_latest
WHERE kind IN {_sql_list(LIFECYCLE_KINDS)} AND order_id IN ({_IN_SCOPE})
GROUP BY kind
ORDER BY kind
"""

# Orders whose current reservation spans more than one warehouse (split), and merged parcels
# (one reason = the merged outbound's command id).
Q_SPLITS_AND_MERGES = f"""
SELECT
    (
        SELECT countIf(arrayUniq(reserved_warehouse) > 1)
        FROM order_status
        WHERE first_at >= {_SINCE}
    ) AS split,
    uniqExact(reason) AS parcels,
    count() AS events
FROM order_events_latest
WHERE kind = 'merged' AND order_id IN ({_IN_SCOPE})
"""


def _events_since(kinds: tuple[str, ...]) -> str:
    """Events of ``kinds`` whose latest emission is at or after since, one per id. Candidates
    are the ids with any row in the window (the latest emission of an event in the window has
    one), so the collapse reads the window, not the whole table."""
    return f"""
SELECT count()
FROM
(
    SELECT event_id, argMax(kind, rev) AS e_kind, argMax(at, rev) AS e_at
    FROM order_events
    WHERE event_id IN (SELECT event_id FROM order_events WHERE at >= {_SINCE})
    GROUP BY event_id
)
WHERE e_kind IN {_sql_list(kinds)} AND e_at >= {_SINCE}
"""


Q_DUPLICATES = _events_since(("duplicate",))

Q_DLQ_BY_REASON = f"""
SELECT d_reason, count() AS records
FROM
(
    SELECT dlq_id, argMax(reason, rev) AS d_reason, min(received_at) AS d_received_at
    FROM dlq
    GROUP BY dlq_id
)
WHERE d_received_at >= {_SINCE}
GROUP BY d_reason
ORDER BY d_reason
"""


def _gmv_by(*keys: str) -> str:
    """Accepted orders in scope and their order totals (GMV) per ``keys`` and currency."""
    cols = ", ".join((*keys, "currency"))
    return f"""
SELECT {cols}, count() AS orders, sum(total) AS gmv
FROM order_latest
WHERE order_id IN ({_ACCEPTED_IN_SCOPE})
GROUP BY {cols}
ORDER BY {cols}
"""


Q_GMV_BY_CHANNEL = _gmv_by("channel")
Q_GMV_BY_SHOP = _gmv_by("channel", "shop_id")

# Accepted orders and GMV by the warehouse they ship from: each order's latest named warehouse
# (its events carry the record's: 'WH-A+WH-B' when split, '' for an order the platform ships),
# so overseas warehouses' sales show apart, each in its own currency.
Q_GMV_BY_WAREHOUSE = f"""
SELECT w_warehouse AS warehouse, currency, count() AS orders, sum(total) AS gmv
FROM order_latest
ANY LEFT JOIN
(
    SELECT order_id, argMaxIf(warehouse, seq, warehouse != '') AS w_warehouse
    FROM order_events_latest
    WHERE order_id IN ({_ACCEPTED_IN_SCOPE})
    GROUP BY order_id
) AS w USING (order_id)
WHERE order_id IN ({_ACCEPTED_IN_SCOPE})
GROUP BY warehouse, currency
ORDER BY warehouse, currency
"""

# toString: groupArray over a Decimal128 (a sum) segfaults ClickHouse 18.16.
Q_TOP_SKUS = f"""
SELECT sku, sum(c_units) AS units, groupArray(currency) AS currencies,
       groupArray(toString(c_gmv)) AS gmvs
FROM
(
    SELECT sku, currency, sum(quantity) AS c_units, sum(paid_amount) AS c_gmv
    FROM order_lines_latest
    WHERE order_id IN ({_ACCEPTED_IN_SCOPE})
    GROUP BY sku, currency
)
GROUP BY sku
ORDER BY units DESC, sku
LIMIT 10
"""

# Units each sku's orders hold now: every order whose latest state holds stock, counted once
# with its current reservation (its latest RESERVED event's allocations, whatever emission of
# it came last). Compare with the stock figures in Redis: equal when every order's state and
# its reservation agree.
Q_RESERVED_BY_SKU = f"""
SELECT r_sku AS sku, sum(r_qty) AS units, uniqExact(order_id) AS orders
FROM
(
    SELECT order_id, reserved_sku, reserved_qty
    FROM order_status
    WHERE state IN {_sql_list(HOLDING_STATES)} AND first_at >= {_SINCE}
)
ARRAY JOIN reserved_sku AS r_sku, reserved_qty AS r_qty
GROUP BY sku
ORDER BY units DESC, sku
"""

Q_STOCK_MOVEMENT_ROWS = "SELECT count() FROM stock_movements"

# Oversell from the stock ledger (every movement the stock scripts made, shipped from Redis):
# per sku and warehouse, reserved units above on-hand units after all movements. A commit moves
# units out of both figures, so shipped orders drop out by themselves. Replay-safe: one row per
# movement_id before summing. Exact for the movements shipped so far (the shipper lags by about
# a second); the per-sku ledger is shipped in order, so what is there is always a real past
# state of the sku, never a torn one.
Q_OVERSOLD = """
SELECT sku, warehouse, reserved_units, on_hand, reserved_units - on_hand AS excess
FROM
(
    SELECT m_sku AS sku, m_warehouse AS warehouse, sum(m_reserved) AS reserved_units,
           sum(m_on_hand) AS on_hand
    FROM
    (
        SELECT movement_id, any(sku) AS m_sku, any(warehouse) AS m_warehouse,
               any(on_hand_delta) AS m_on_hand, any(reserved_delta) AS m_reserved
        FROM stock_movements
        GROUP BY movement_id
    )
    GROUP BY sku, warehouse
)
WHERE reserved_units > on_hand
ORDER BY excess DESC, sku, warehouse
"""

# Inputs that have landed as facts: each raw input ends as exactly one RECEIVED, DUPLICATE,
# UPDATED or STALE event, or one DLQ record (the demo polls this to know a burst is done).
INPUT_EVENT_KINDS: tuple[str, ...] = ("received", "duplicate", "updated", "stale")
Q_PROCESSED_INPUTS = f"""
SELECT
    (
{_events_since(INPUT_EVENT_KINDS).strip()}
    )
    +
    (
        SELECT count()
        FROM
        (
            SELECT dlq_id, min(received_at) AS d_received_at
            FROM dlq
            WHERE dlq_id IN (SELECT dlq_id FROM dlq WHERE received_at >= {_SINCE})
            GROUP BY dlq_id
        )
        WHERE d_received_at >= {_SINCE}
    )
"""

# A sample of order ids per latest state (the demo's after-sales desk picks from it).
Q_ORDER_IDS_BY_STATE = f"""
SELECT state, arraySort(groupArray(200)(order_id)) AS sample
FROM order_status
WHERE first_at >= {_SINCE}
GROUP BY state
"""


# Sales over time from the per-minute table, bucketed by minute, hour or day (UTC): accepted
# orders in scope, distinct orders and the lines' paid amount (goods GMV, shipping excluded;
# gmv_by_channel uses order totals). Replay-safe: the MV target holds one row per line
# revision, possibly several copies of each until merged, so each line is reduced to its
# latest revision first (argMax), and lines of older snapshots (an update removed them, or a
# later emission of the same snapshot replaced them) are dropped by the revision filter.
def _sales_series(bucket_fn: str) -> str:
    return f"""
SELECT {bucket_fn}(s_minute) AS bucket, s_channel AS channel, s_currency AS currency,
       uniqExact(order_id) AS orders, sum(s_paid_amount) AS gmv
FROM
(
    SELECT
        order_id,
        line_id,
        max(rev) AS s_rev,
        argMax(minute, rev) AS s_minute,
        argMax(channel, rev) AS s_channel,
        argMax(currency, rev) AS s_currency,
        argMax(paid_amount, rev) AS s_paid_amount
    FROM sales_by_minute
    WHERE order_id IN ({_ACCEPTED_IN_SCOPE})
    GROUP BY order_id, line_id
)
WHERE (order_id, s_rev) IN
(
    SELECT order_id, max(rev)
    FROM sales_by_minute
    GROUP BY order_id
)
GROUP BY bucket, channel, currency
ORDER BY bucket, channel, currency
"""


Q_SALES_BY_MINUTE = _sales_series("toStartOfMinute")
Q_SALES_BY_HOUR = _sales_series("toStartOfHour")
Q_SALES_BY_DAY = _sales_series("toStartOfDay")
SERIES_QUERIES: dict[str, str] = {
    "minute": Q_SALES_BY_MINUTE,
    "hour": Q_SALES_BY_HOUR,
    "day": Q_SALES_BY_DAY,
}

# Sell-through of the hottest skus (most units reserved in the window), all warehouses: units
# reserved (reserve movements), shipped (commit movements move units into sales in transit)
# and on hand now. One row per movement_id before summing, as in Q_OVERSOLD.
Q_SELL_THROUGH = f"""
SELECT
    m_sku AS sku,
    sumIf(m_reserved, m_kind = 'reserve' AND m_at >= {_SINCE}) AS reserved_units,
    sumIf(m_sit, m_kind = 'commit' AND m_at >= {_SINCE}) AS shipped_units,
    sum(m_on_hand) AS on_hand
FROM
(
    SELECT movement_id, any(sku) AS m_sku, any(kind) AS m_kind, any(at) AS m_at,
           any(on_hand_delta) AS m_on_hand, any(reserved_delta) AS m_reserved,
           any(sit_delta) AS m_sit
    FROM stock_movements
    GROUP BY movement_id
)
GROUP BY sku
HAVING reserved_units > 0
ORDER BY reserved_units DESC, sku
LIMIT 10
"""

# Paid -> first shipped event, in seconds, per order in scope that has both; p50 and p95.
# Events one row per id first (their latest emission). A channel clock ahead of the
# warehouse's cannot make a latency negative (clamped to 0).
Q_FULFILMENT_LATENCY = f"""
SELECT count() AS shipped_orders, quantilesExact(0.5, 0.95)(latency_s) AS q
FROM
(
    SELECT order_id, greatest(toInt64(shipped_at) - paid_epoch, 0) AS latency_s
    FROM
    (
        SELECT order_id, min(at) AS shipped_at
        FROM order_events_latest
        WHERE kind = 'shipped' AND order_id IN ({_IN_SCOPE})
        GROUP BY order_id
    ) AS shipped
    ALL INNER JOIN
    (
        SELECT order_id, toInt64(assumeNotNull(paid_at)) AS paid_epoch
        FROM order_latest
        WHERE isNotNull(paid_at)
    ) AS paid USING (order_id)
)
"""


# Per kind, facts of one table one row per id (latest revision), for orders in scope.
def _by_kind(table: str, fact_id: str) -> str:
    return f"""
SELECT f_kind AS kind, count() AS facts
FROM
(
    SELECT {fact_id}, argMax(kind, rev) AS f_kind, argMax(order_id, rev) AS f_order_id
    FROM {table}
    GROUP BY {fact_id}
)
WHERE f_order_id IN ({_IN_SCOPE})
GROUP BY kind
ORDER BY kind
"""


Q_COMMANDS_BY_KIND = _by_kind("fulfilment_commands", "command_id")
Q_WMS_EVENTS_BY_KIND = _by_kind("wms_events", "event_id")

# After-sales requests per kind (as asked, whatever the OMS then did with them), the orders
# they touch and the refund amounts named (NULL sum: no request named one).
Q_AFTERSALES_REQUESTS = f"""
SELECT a_kind AS kind, count() AS requests, uniqExact(a_order_id) AS orders,
       sum(a_amount) AS amount
FROM
(
    SELECT request_id, argMax(kind, rev) AS a_kind, argMax(order_id, rev) AS a_order_id,
           argMax(amount, rev) AS a_amount
    FROM aftersales_requests
    GROUP BY request_id
)
WHERE a_order_id IN ({_IN_SCOPE})
GROUP BY kind
ORDER BY kind
"""

QUERIES: dict[str, str] = {
    "order_states": Q_ORDER_STATES,
    "waiting_by_reason": Q_WAITING_BY_REASON,
    "backorders": Q_BACKORDERS,
    "duplicates": Q_DUPLICATES,
    "dlq_by_reason": Q_DLQ_BY_REASON,
    "gmv_by_channel": Q_GMV_BY_CHANNEL,
    "top_skus": Q_TOP_SKUS,
    "reserved_by_sku": Q_RESERVED_BY_SKU,
    "stock_movement_rows": Q_STOCK_MOVEMENT_ROWS,
    "oversold": Q_OVERSOLD,
    "processed_inputs": Q_PROCESSED_INPUTS,
    "lifecycle": Q_LIFECYCLE,
    "splits_and_merges": Q_SPLITS_AND_MERGES,
    "order_ids_by_state": Q_ORDER_IDS_BY_STATE,
    "gmv_by_shop": Q_GMV_BY_SHOP,
    "gmv_by_warehouse": Q_GMV_BY_WAREHOUSE,
    "sales_by_minute": Q_SALES_BY_MINUTE,
    "sales_by_hour": Q_SALES_BY_HOUR,
    "sales_by_day": Q_SALES_BY_DAY,
    "sell_through": Q_SELL_THROUGH,
    "fulfilment_latency": Q_FULFILMENT_LATENCY,
    "commands_by_kind": Q_COMMANDS_BY_KIND,
    "wms_events_by_kind": Q_WMS_EVENTS_BY_KIND,
    "aftersales_requests": Q_AFTERSALES_REQUESTS,
}

# After-sales rates: orders with such an event (order_events, via Q_LIFECYCLE) per shipped order.
AFTERSALES_RATE_KINDS: dict[str, str] = {
    "returns": "return_requested",
    "refunds": "refunded",
    "exchanges": "exchange_requested",
    "cancels": "intercept_requested",  # a cancel once released is an intercept request
}


def money(value: Decimal) -> Decimal:
    """Display form of a stored amount: cents when exact, else all (up to 4) decimals."""
    value = Decimal(value)
    cents = value.quantize(Decimal("0.01"))
    return cents if cents == value else value.normalize()


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class GmvRow(_Row):
    channel: str
    currency: str
    orders: int
    gmv: Decimal


class SkuRow(_Row):
    sku: str
    units: int
    gmv: dict[str, Decimal]  # currency -> paid amount of the sku's lines


class OversoldRow(_Row):
    sku: str
    warehouse: str
    reserved_units: int
    on_hand: int
    excess: int


class ShopRow(_Row):
    channel: str
    shop_id: str
    currency: str
    orders: int
    gmv: Decimal


class WarehouseRow(_Row):
    warehouse: str  # '' when nothing ships from the merchant's warehouses
    currency: str
    orders: int
    gmv: Decimal


class SeriesRow(_Row):
    bucket: datetime  # start of the minute, hour or day (UTC)
    channel: str
    currency: str
    orders: int
    gmv: Decimal  # the lines' paid amount


class SellThroughRow(_Row):
    sku: str
    reserved_units: int
    shipped_units: int
    on_hand: int
    sell_through: float | None  # shipped / (shipped + on hand); None when both are 0


class Latency(_Row):
    """Paid -> shipped, seconds; percentiles are None when no order has both."""

    shipped_orders: int = 0
    p50_s: int | None = None
    p95_s: int | None = None


class AfterSalesKindRow(_Row):
    requests: int
    orders: int
    amount: Decimal | None  # refund amounts the requests named; None when none did


class Report(BaseModel):
    """What ``./oms report`` prints; ``to_dict`` is its ``--json`` form."""

    since: datetime | None = None
    orders_in: int = 0  # distinct orders with any event (in scope)
    accepted: int = 0
    held: int = 0
    rejected: int = 0
    orders_by_state: dict[str, int] = Field(default_factory=dict)  # sums to orders_in
    orders_by_channel: dict[str, int] = Field(default_factory=dict)
    held_by_reason: dict[str, int] = Field(default_factory=dict)
    # reserved, routed, not released yet: by the release gate's reason (order/gates.py)
    waiting_by_reason: dict[str, int] = Field(default_factory=dict)
    backorders_retried: int = 0  # held out of stock, tried again when stock came back
    backorders_cleared: int = 0  # of those, reserved and on their way now
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0
    dlq_total: int = 0
    dlq_by_reason: dict[str, int] = Field(default_factory=dict)
    # GMV of accepted orders in the reporting currency, channel -> amount (Decimal string in
    # JSON); every currency, with order counts, is in gmv_by_channel_currency.
    gmv_by_channel: dict[str, Decimal] = Field(default_factory=dict)
    gmv_by_channel_currency: list[GmvRow] = Field(default_factory=list)
    top_skus: list[SkuRow] = Field(default_factory=list)
    # sku -> units the orders in scope hold now (each holding order's current reservation once)
    reserved_by_sku: dict[str, int] = Field(default_factory=dict)
    stock_checked: bool = False  # False: no stock movements loaded, oversell not measurable
    oversold_units: int = 0
    oversold: list[OversoldRow] = Field(default_factory=list)
    # The life after intake: kind -> orders with such an event (and events in lifecycle_events).
    lifecycle: dict[str, int] = Field(default_factory=dict)
    lifecycle_events: dict[str, int] = Field(default_factory=dict)
    split_orders: int = 0
    merged_parcels: int = 0
    gmv_by_shop: list[ShopRow] = Field(default_factory=list)
    gmv_by_warehouse: list[WarehouseRow] = Field(default_factory=list)
    by: str = "hour"  # bucket of sales_series: minute, hour or day
    sales_series: list[SeriesRow] = Field(default_factory=list)
    sell_through: list[SellThroughRow] = Field(default_factory=list)
    fulfilment_latency: Latency = Field(default_factory=Latency)
    # Orders with a return/refund/exchange/cancel-after-release, and each per shipped order.
    aftersales_orders: dict[str, int] = Field(default_factory=dict)
    aftersales_rates: dict[str, float] = Field(default_factory=dict)
    aftersales_requests: dict[str, AfterSalesKindRow] = Field(default_factory=dict)
    commands_by_kind: dict[str, int] = Field(default_factory=dict)
    wms_events_by_kind: dict[str, int] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: Decimals as strings (never floats), datetimes ISO 8601."""
        return self.model_dump(mode="json")


def _since_epoch(since: datetime | None) -> int:
    if since is None:
        return 0
    if since.tzinfo is None:  # naive means UTC, like every stored DateTime
        since = since.replace(tzinfo=UTC)
    return max(0, int(since.timestamp()))


def _add(counter: dict[str, int], key: str, n: int) -> None:
    counter[key] = counter.get(key, 0) + n


_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_span(text: str) -> int | None:
    """Seconds of a span such as ``15m``, ``2h``, ``1d`` (also ``s`` and ``w``); None when the
    text is not one."""
    m = _RELATIVE.match(text)
    return int(m.group(1)) * _UNIT_S[m.group(2).lower()] if m else None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO-8601 time (naive means UTC) or a span back from now (``15m``,
    ``2h``, ``1d``, also ``s`` and ``w``). Raises ValueError with a message for the user."""
    span = parse_span(text)
    if span is not None:
        now = now or datetime.now(UTC)
        return now - timedelta(seconds=span)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected an ISO-8601 time (2024-11-11T00:00:00+08:00) "
            "or a span back from now such as 15m, 2h, 1d"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    """clickhouse-driver returns DateTime('UTC') naive or aware depending on settings."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _sell_through_row(sku: str, reserved: int, shipped: int, on_hand: int) -> SellThroughRow:
    return SellThroughRow(
        sku=sku,
        reserved_units=int(reserved),
        shipped_units=int(shipped),
        on_hand=int(on_hand),
        sell_through=_ratio(int(shipped), int(shipped) + max(int(on_hand), 0)),
    )


def _latency(client: QueryClient, params: Mapping[str, Any]) -> Latency:
    n, quantiles = client.execute(Q_FULFILMENT_LATENCY, params)[0]
    if not int(n):
        return Latency()
    p50, p95 = (int(q) for q in quantiles)
    return Latency(shipped_orders=int(n), p50_s=p50, p95_s=p95)


def _add_fulfilment(report: Report, client: QueryClient, params: Mapping[str, Any]) -> None:
    """Shops, sales over time, sell-through, latency and after-sales (issue 5)."""
    report.gmv_by_shop = [
        ShopRow(channel=ch, shop_id=shop, currency=cur, orders=int(n), gmv=money(gmv))
        for ch, shop, cur, n, gmv in client.execute(Q_GMV_BY_SHOP, params)
    ]
    report.gmv_by_warehouse = [
        WarehouseRow(warehouse=wh, currency=cur, orders=int(n), gmv=money(gmv))
        for wh, cur, n, gmv in client.execute(Q_GMV_BY_WAREHOUSE, params)
    ]
    report.sales_series = [
        SeriesRow(bucket=_utc(b), channel=ch, currency=cur, orders=int(n), gmv=money(gmv))
        for b, ch, cur, n, gmv in client.execute(SERIES_QUERIES[report.by], params)
    ]
    report.sell_through = [
        _sell_through_row(*row) for row in client.execute(Q_SELL_THROUGH, params)
    ]
    report.fulfilment_latency = _latency(client, params)
    shipped = report.lifecycle.get("shipped", 0)
    for name, kind in AFTERSALES_RATE_KINDS.items():
        n = report.lifecycle.get(kind, 0)
        report.aftersales_orders[name] = n
        report.aftersales_rates[name] = _ratio(n, shipped) or 0.0
    report.aftersales_requests = {
        kind: AfterSalesKindRow(
            requests=int(r), orders=int(o), amount=None if a is None else money(a)
        )
        for kind, r, o, a in client.execute(Q_AFTERSALES_REQUESTS, params)
    }
    report.commands_by_kind = {k: int(n) for k, n in client.execute(Q_COMMANDS_BY_KIND, params)}
    report.wms_events_by_kind = {k: int(n) for k, n in client.execute(Q_WMS_EVENTS_BY_KIND, params)}


def build_report(
    client: QueryClient,
    *,
    since: datetime | None = None,
    currency: str = "CNY",
    by: str = "hour",
) -> Report:
    """Run every report query (one round trip each) and assemble the report; ``by`` is the
    bucket of the sales time series (minute, hour or day)."""
    if by not in SERIES_QUERIES:
        raise ValueError(f"by must be one of {', '.join(SERIES_QUERIES)}, not {by!r}")
    params: Mapping[str, Any] = {"since": _since_epoch(since)}
    report = Report(since=since, by=by)

    for channel, state, why, n in client.execute(Q_ORDER_STATES, params):
        n = int(n)
        state = state or "unknown"  # only events without a state (never expected)
        report.orders_in += n
        _add(report.orders_by_state, state, n)
        _add(report.orders_by_channel, channel, n)
        if state in ACCEPTED_STATES:
            report.accepted += n
        elif state == "held":
            report.held += n
            _add(report.held_by_reason, why or "unspecified", n)
        elif state == "rejected":
            report.rejected += n
            _add(report.rejected_by_reason, why or "unspecified", n)

    report.duplicates = int(client.execute(Q_DUPLICATES, params)[0][0])
    for reason, n in client.execute(Q_WAITING_BY_REASON, params):
        report.waiting_by_reason[reason or "unspecified"] = int(n)
    for retried, cleared in client.execute(Q_BACKORDERS, params):  # one row
        report.backorders_retried, report.backorders_cleared = int(retried), int(cleared)

    for reason, n in client.execute(Q_DLQ_BY_REASON, params):
        report.dlq_by_reason[reason] = int(n)
    report.dlq_total = sum(report.dlq_by_reason.values())

    report.gmv_by_channel_currency = [
        GmvRow(channel=ch, currency=cur, orders=int(n), gmv=money(gmv))
        for ch, cur, n, gmv in client.execute(Q_GMV_BY_CHANNEL, params)
    ]
    report.gmv_by_channel = {
        r.channel: r.gmv for r in report.gmv_by_channel_currency if r.currency == currency
    }
    report.top_skus = [
        SkuRow(
            sku=sku,
            units=int(units),
            gmv={c: money(Decimal(g)) for c, g in sorted(zip(currencies, gmvs, strict=True))},
        )
        for sku, units, currencies, gmvs in client.execute(Q_TOP_SKUS, params)
    ]
    report.reserved_by_sku = {
        sku: int(units) for sku, units, _ in client.execute(Q_RESERVED_BY_SKU, params)
    }

    for kind, orders, n in client.execute(Q_LIFECYCLE, params):
        report.lifecycle[kind] = int(orders)
        report.lifecycle_events[kind] = int(n)
    split, parcels, _ = client.execute(Q_SPLITS_AND_MERGES, params)[0]
    report.split_orders, report.merged_parcels = int(split), int(parcels)

    report.stock_checked = int(client.execute(Q_STOCK_MOVEMENT_ROWS, params)[0][0]) > 0
    if report.stock_checked:
        report.oversold = [
            OversoldRow(sku=sku, warehouse=wh, reserved_units=int(r), on_hand=int(o), excess=int(e))
            for sku, wh, r, o, e in client.execute(Q_OVERSOLD, params)
        ]
        report.oversold_units = sum(row.excess for row in report.oversold)
    _add_fulfilment(report, client, params)
    return report


def orders_in_state(client: QueryClient, state: str, since: datetime | None = None) -> list[str]:
    """Up to 200 order ids whose latest state is ``state``."""
    rows = client.execute(Q_ORDER_IDS_BY_STATE, {"since": _since_epoch(since)})
    return next((list(ids) for s, ids in rows if s == state), [])


def latest_states(client: QueryClient, order_ids: Sequence[str]) -> dict[str, str]:
    """Latest state per order as ClickHouse knows it (order ids are OMS ids: [A-Z0-9])."""
    wanted = [oid for oid in order_ids if oid.isalnum()]
    if not wanted:
        return {}
    rows = client.execute(
        "SELECT order_id, state FROM order_status WHERE order_id IN %(ids)s", {"ids": tuple(wanted)}
    )
    return {oid: state for oid, state in rows}


def states_since(client: QueryClient, since: datetime | None = None) -> dict[str, int]:
    """Orders per latest state, in scope."""
    out: dict[str, int] = {}
    for _, state, _, n in client.execute(Q_ORDER_STATES, {"since": _since_epoch(since)}):
        _add(out, state or "unknown", int(n))
    return out


def processed_inputs(client: QueryClient, since: datetime | None = None) -> int:
    """How many raw inputs (events by processing time ``at``, DLQ by ``received_at``) have
    landed since ``since``; replays and redeliveries are not counted twice."""
    return int(client.execute(Q_PROCESSED_INPUTS, {"since": _since_epoch(since)})[0][0])


def _table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """Numbers right-aligned, text left-aligned."""
    numeric = [all(isinstance(r[i], int | Decimal) for r in rows) for i in range(len(header))]
    cells = [header] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r: tuple[str, ...]) -> str:
        parts = (
            c.rjust(w) if num and rows else c.ljust(w)
            for c, w, num in zip(r, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    lines = [title, "  " + fmt(cells[0]), "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + fmt(r) for r in cells[1:]] or ["  (none)"]
    return [*lines, ""]


def format_report(report: Report) -> str:
    """Plain-text tables for the terminal (safe to print through rich)."""
    scope = f"orders first seen since {report.since.isoformat()}" if report.since else "all orders"
    out = [f"OMS report ({scope})", ""]
    out += _table(
        "Orders",
        ("metric", "count"),
        [
            ("orders in", report.orders_in),
            ("accepted", report.accepted),
            ("held", report.held),
            ("rejected", report.rejected),
            ("duplicates", report.duplicates),
            ("dlq", report.dlq_total),
            ("oversold units", report.oversold_units if report.stock_checked else "n/a (no stock)"),
        ],
    )
    out += _table(
        "Orders by latest state", ("state", "orders"), sorted(report.orders_by_state.items())
    )
    out += _table(
        "Orders by channel", ("channel", "orders"), sorted(report.orders_by_channel.items())
    )
    out += _table(
        "GMV by channel (accepted orders, order totals)",
        ("channel", "currency", "orders", "gmv"),
        [(r.channel, r.currency, r.orders, r.gmv) for r in report.gmv_by_channel_currency],
    )
    out += _table(
        "Top SKUs by units (accepted orders)",
        ("sku", "units", "gmv"),
        [(r.sku, r.units, " ".join(f"{c} {g}" for c, g in r.gmv.items())) for r in report.top_skus],
    )
    out += _table(
        "Units reserved (current reservation of each order holding stock)",
        ("sku", "units"),
        list(report.reserved_by_sku.items()),
    )
    out += _table(
        "Order life (events after intake)",
        ("event", "orders", "events"),
        [
            ("split over warehouses", report.split_orders, report.split_orders),
            ("merged into one parcel", report.lifecycle.get("merged", 0), report.merged_parcels),
            *(
                (kind.replace("_", " "), n, report.lifecycle_events.get(kind, 0))
                for kind, n in sorted(report.lifecycle.items())
                if kind != "merged"
            ),
        ],
    )
    out += _table("Held by reason", ("reason", "orders"), sorted(report.held_by_reason.items()))
    out += _table(
        "Reserved, waiting to ship", ("reason", "orders"), sorted(report.waiting_by_reason.items())
    )
    if report.backorders_retried or report.held_by_reason.get("out_of_stock"):
        out += _table(
            "Backorders",
            ("", "orders"),
            [
                ("tried again when stock came back", report.backorders_retried),
                ("cleared: reserved and on their way", report.backorders_cleared),
                ("still waiting for stock", report.held_by_reason.get("out_of_stock", 0)),
            ],
        )
    out += _table(
        "Rejected by reason", ("reason", "orders"), sorted(report.rejected_by_reason.items())
    )
    out += _table("DLQ by reason", ("reason", "records"), sorted(report.dlq_by_reason.items()))
    out += _format_fulfilment(report)
    if report.oversold:
        out += _table(
            "Oversold (reserved units above on-hand stock)",
            ("sku", "warehouse", "reserved", "on hand", "excess"),
            [(r.sku, r.warehouse, r.reserved_units, r.on_hand, r.excess) for r in report.oversold],
        )
    return "\n".join(out).rstrip() + "\n"


def _format_fulfilment(report: Report) -> list[str]:
    """The shop, time series, sell-through, latency and after-sales tables."""
    lat = report.fulfilment_latency
    out = _table(
        "GMV by shop (accepted orders, order totals)",
        ("channel", "shop", "currency", "orders", "gmv"),
        [(r.channel, r.shop_id, r.currency, r.orders, r.gmv) for r in report.gmv_by_shop],
    )
    out += _table(
        "GMV by ship-from warehouse (accepted orders; '-': shipped by the platform or nobody)",
        ("warehouse", "currency", "orders", "gmv"),
        [(r.warehouse or "-", r.currency, r.orders, r.gmv) for r in report.gmv_by_warehouse],
    )
    out += _table(
        f"Sales by {report.by} (accepted orders, lines' paid amount, UTC)",
        (report.by, "channel", "currency", "orders", "gmv"),
        [
            (r.bucket.strftime("%Y-%m-%d %H:%M"), r.channel, r.currency, r.orders, r.gmv)
            for r in report.sales_series
        ],
    )
    out += _table(
        "Sell-through of hot skus (units reserved, shipped, on hand now)",
        ("sku", "reserved", "shipped", "on hand", "sell-through"),
        [
            (
                r.sku,
                r.reserved_units,
                r.shipped_units,
                r.on_hand,
                "n/a" if r.sell_through is None else f"{r.sell_through:.1%}",
            )
            for r in report.sell_through
        ],
    )
    out += _table(
        "Fulfilment latency, paid -> shipped (seconds)",
        ("orders", "p50", "p95"),
        [(lat.shipped_orders, lat.p50_s, lat.p95_s)] if lat.shipped_orders else [],
    )
    out += _table(
        "After-sales per shipped order",
        ("kind", "orders", "rate"),
        [
            (name, report.aftersales_orders.get(name, 0), f"{rate:.1%}")
            for name, rate in report.aftersales_rates.items()
        ],
    )
    out += _table(
        "After-sales requests",
        ("kind", "requests", "orders", "amount"),
        [
            (k, r.requests, r.orders, "-" if r.amount is None else r.amount)
            for k, r in sorted(report.aftersales_requests.items())
        ],
    )
    out += _table(
        "Fulfilment commands and WMS events",
        ("source", "kind", "count"),
        [("command", k, n) for k, n in sorted(report.commands_by_kind.items())]
        + [("wms", k, n) for k, n in sorted(report.wms_events_by_kind.items())],
    )
    return out
