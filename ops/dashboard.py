"""Live dashboard of a flood (``./oms dashboard``): one page that redraws itself every 2 s.

What it shows and where each figure comes from:

* orders per second by channel, and GMV (running total by channel and currency) of accepted
  orders: ClickHouse, bucketed by the second an order was first seen (``order_status.first_at``);
* hot-sku stock burning down: available units (on hand - reserved) of the skus most ordered in
  the window, over time from the stock ledger in ClickHouse (``stock_movements``) and the live
  figure from Redis (the ledger shipper lags by about a second);
* holds by reason: Redis, the held index the operators work from (``./oms held list``);
* consumer lag of the workers' group on the raw topics: Kafka end offsets minus the group's
  committed offsets, sampled on every API call and kept in memory (Kafka keeps no history).

Every ClickHouse query is replay-safe without relying on merges, like ``analytics/reports.py``:
orders come from the deduplicating views (``order_status``, ``order_latest``,
``order_lines_latest``) and stock movements are collapsed by ``movement_id`` before summing.

The chart library (plotly.js) is the copy shipped in the ``plotly`` PyPI package and served from
``/static/plotly.min.js``: the page loads nothing from outside loopback. Only counts, amounts,
skus and hold reasons reach the page; never an order's buyer, phone or address.

Access: the data (``/api/...``) needs a token whose role has ``read_dashboard`` for every shop
(the figures sum over all shops; ``core/access.py``), as ``Authorization: Bearer <token>`` or as
a session. Opening any page with ``?token=<token>`` once trades the token for a session
(``state/tokens.py``): a random id, stored in Redis only as its hash, lasting at most 8 hours
and never beyond the token, ended when the token is revoked. The browser keeps only that id, in
a cookie that is HttpOnly, SameSite=Strict, Secure over TLS and scoped to ``/api/`` (cookies are
not scoped by port: every service on the host would otherwise receive it, and a token in it
would be a bearer token for the order API too). The redirect that follows goes to the same page
without the token, as a same-origin relative path (never ``//host`` or ``/\\host``, every
character escaped), so neither the token nor an attacker's URL can leave the dashboard. The
page shell (``/`` and ``/static/*``: the HTML, the script, plotly.js) holds no data and is open,
like ``/health``; it tells a visitor without a session how to open it.

Bounded work: the held-orders figure reads at most ``HELD_LIMIT`` records and is computed once
per ``HOLDS_TTL_S`` for every open page together, not once per page per refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from yarl import URL

from analytics.reports import ACCEPTED_STATES
from core.access import (
    ALL_SHOPS,
    Permission,
    Principal,
    TokenRefused,
    TooManyAttempts,
    authorize,
    bearer_token,
)
from core.logs import setup_logging
from core.settings import Settings, get_settings

log = logging.getLogger("oms.dashboard")

DEFAULT_PORT = 16070
HOST = "127.0.0.1"  # loopback only: the page is for an operator's own browser
COMPONENT = "dashboard"  # pid and log file names under settings.home (ops/stack.py layout)
DEFAULT_WINDOW_S = 900  # the page's window when its URL names no ?since=
MAX_WINDOW_S = 7 * 86400  # older windows would put days into one bucket: refuse instead
FUTURE_SLACK_S = 300  # clock skew between the browser and the server
MAX_SINCE_DIGITS = 12  # unix seconds until the year 33658: a longer ?since= is refused unread
MAX_POINTS = 600  # buckets per series: bounds the JSON and the drawing work
HOT_SKUS = 5
HELD_LIMIT = 2000  # held records read per refresh; the total always comes from the index
LATE_ROWS = 20  # the most overdue orders listed
HOLDS_TTL_S = 5.0  # the holds figure is shared by every open page this long
LAG_HISTORY = 1800  # lag samples kept in memory (one per second at most)
START_TIMEOUT_S = 30.0
STATIC_DIR = Path(__file__).resolve().parent / "dashboard_static"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PLOTLY_FILE = "plotly.min.js"

# --------------------------------------------------------------------------- queries

_ACCEPTED = "(" + ", ".join(f"'{s}'" for s in ACCEPTED_STATES) + ")"
_BUCKET = "intDiv(toUInt32(first_at), %(step)s) * %(step)s"

# One row per order (the view groups by order_id), so count() is a distinct-order count.
Q_ORDERS = f"""
SELECT {_BUCKET} AS t, channel, count() AS orders
FROM order_status
WHERE first_at >= toDateTime(%(since)s)
GROUP BY t, channel
ORDER BY t, channel
"""

# Accepted orders' totals, like the report's gmv_by_channel (same scope, same view).
Q_GMV = f"""
SELECT {_BUCKET} AS t, d_channel, d_currency, count() AS orders, sum(d_total) AS gmv
FROM
(
    SELECT order_id, first_at
    FROM order_status
    WHERE state IN {_ACCEPTED} AND first_at >= toDateTime(%(since)s)
) AS s
ANY INNER JOIN
(
    SELECT order_id, channel AS d_channel, currency AS d_currency, total AS d_total
    FROM order_latest
) AS o USING (order_id)
GROUP BY t, d_channel, d_currency
ORDER BY t, d_channel, d_currency
"""

Q_HOT_SKUS = """
SELECT sku, sum(quantity) AS hot_units
FROM order_lines_latest
WHERE order_id IN (SELECT order_id FROM order_status WHERE first_at >= toDateTime(%(since)s))
GROUP BY sku
ORDER BY hot_units DESC, sku
LIMIT %(limit)s
"""

# Available-units deltas per sku and bucket; everything before the window lands in bucket 0,
# the level the window starts from. One row per movement_id before summing (replays collapse).
Q_STOCK = """
SELECT m_sku, if(m_t < %(since)s, 0, intDiv(m_t, %(step)s) * %(step)s) AS t, sum(m_delta) AS delta
FROM
(
    SELECT movement_id, any(sku) AS m_sku, toUInt32(any(at)) AS m_t,
           any(on_hand_delta) - any(reserved_delta) AS m_delta
    FROM stock_movements
    WHERE sku IN %(skus)s
    GROUP BY movement_id
)
GROUP BY m_sku, t
ORDER BY m_sku, t
"""

QUERIES: dict[str, str] = {
    "orders": Q_ORDERS,
    "gmv": Q_GMV,
    "hot_skus": Q_HOT_SKUS,
    "stock": Q_STOCK,
}


# --------------------------------------------------------------------------- pure parts


class BadParameter(ValueError):
    """A request parameter the API refuses (HTTP 400); the message says which and why."""


def parse_since(raw: str | None, now: float) -> int:
    """The window start as unix seconds: an integer, at most MAX_WINDOW_S old, not in the
    future (beyond clock skew). Missing means the last DEFAULT_WINDOW_S."""
    if raw is None or raw == "":
        return int(now) - DEFAULT_WINDOW_S
    text = raw.strip()
    if len(text) > MAX_SINCE_DIGITS:  # before int(): past 4,300 digits it raises ValueError
        raise BadParameter(
            f"since must be unix seconds of at most {MAX_SINCE_DIGITS} digits, "
            f"got {len(text)} characters"
        )
    if not text.isascii() or not text.isdigit():
        raise BadParameter(f"since must be unix seconds (a whole number), got {raw!r}")
    since = int(text)
    if since > now + FUTURE_SLACK_S:
        raise BadParameter(f"since={since} is in the future")
    if now - since > MAX_WINDOW_S:
        raise BadParameter(f"since={since} is more than {MAX_WINDOW_S} s ago")
    return since


def bucket_step(since: int, now: float, max_points: int = MAX_POINTS) -> int:
    """Seconds per bucket: 1 while the window fits max_points buckets, else the smallest whole
    number of seconds that keeps it within them (so a long window stays one cheap JSON)."""
    span = max(1, int(now) - since + 1)
    return max(1, -(-span // max_points))


def bucket_axis(since: int, now: float, step: int) -> list[int]:
    """Bucket starts (unix seconds) covering since..now, aligned like the SQL's intDiv."""
    first = since // step * step
    last = max(first, int(now) // step * step)
    return list(range(first, last + step, step))


def _index(axis: Sequence[int], step: int, t: int) -> int:
    """Bucket of ``t``; rows just outside the axis (clock skew, a row landing after ``now``
    was taken) are clamped to its ends so no fact is lost from a running total."""
    return min(max((int(t) - axis[0]) // step, 0), len(axis) - 1)


def orders_series(
    rows: Iterable[Sequence[Any]], axis: Sequence[int], step: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Rows (t, channel, orders) -> per channel orders per second on the axis, and the count
    of orders per channel."""
    counts: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    for t, channel, n in rows:
        series = counts.setdefault(channel, [0] * len(axis))
        series[_index(axis, step, t)] += int(n)
        totals[channel] = totals.get(channel, 0) + int(n)
    rates = {ch: [n / step for n in series] for ch, series in sorted(counts.items())}
    return rates, dict(sorted(totals.items()))


def gmv_series(
    rows: Iterable[Sequence[Any]], axis: Sequence[int], step: int
) -> tuple[dict[str, list[float]], dict[str, Decimal], dict[str, int]]:
    """Rows (t, channel, currency, orders, gmv) -> running GMV per "channel currency" on the
    axis (floats, for drawing), exact totals per currency, and accepted orders per channel."""
    per_bucket: dict[str, list[Decimal]] = {}
    totals: dict[str, Decimal] = {}
    accepted: dict[str, int] = {}
    for t, channel, currency, n, gmv in rows:
        amount = Decimal(gmv)
        series = per_bucket.setdefault(f"{channel} {currency}", [Decimal(0)] * len(axis))
        series[_index(axis, step, t)] += amount
        totals[currency] = totals.get(currency, Decimal(0)) + amount
        accepted[channel] = accepted.get(channel, 0) + int(n)
    running: dict[str, list[float]] = {}
    for key, series in sorted(per_bucket.items()):
        acc = Decimal(0)
        out = []
        for amount in series:
            acc += amount
            out.append(float(acc))
        running[key] = out
    return running, dict(sorted(totals.items())), dict(sorted(accepted.items()))


def stock_series(
    rows: Iterable[Sequence[Any]], axis: Sequence[int], step: int, skus: Sequence[str]
) -> dict[str, list[int]]:
    """Rows (sku, t, delta), t = 0 meaning "before the window" -> available units per sku at
    the end of each bucket (the ledger's running sum)."""
    base: dict[str, int] = dict.fromkeys(skus, 0)
    deltas: dict[str, list[int]] = {sku: [0] * len(axis) for sku in skus}
    for sku, t, delta in rows:
        if sku not in deltas:
            continue
        if int(t) == 0:
            base[sku] += int(delta)
        else:
            deltas[sku][_index(axis, step, t)] += int(delta)
    out: dict[str, list[int]] = {}
    for sku in skus:
        level = base[sku]
        levels = []
        for delta in deltas[sku]:
            level += delta
            levels.append(level)
        out[sku] = levels
    return out


def holds_by_reason(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Held rows (web.views.held_row) -> count per reason, most frequent first. Only the
    reason is read: the rows' ids and totals never reach the page."""
    counts: dict[str, int] = {}
    for row in rows:
        reason = str(row.get("reason") or "unspecified")
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def lag_by_topic(ends: Mapping[Any, int], committed: Mapping[Any, Any]) -> dict[str, int]:
    """Per topic, the sum over partitions of end offset - committed offset. A partition the
    group never committed lags by its whole end offset (it starts from the earliest)."""
    lag: dict[str, int] = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        offset = getattr(meta, "offset", meta)
        done = int(offset) if offset is not None and int(offset) >= 0 else 0
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, int(end) - done)
    return dict(sorted(lag.items()))


@dataclass
class LagHistory:
    """Lag samples kept by this process, at most one per second (the API is polled every
    2 s by each open page; several pages must not multiply the samples)."""

    limit: int = LAG_HISTORY
    samples: deque[tuple[int, dict[str, int]]] = field(default_factory=deque)

    def add(self, t: int, lag: dict[str, int]) -> None:
        if self.samples and self.samples[-1][0] == t:
            self.samples[-1] = (t, lag)
        else:
            self.samples.append((t, lag))
        while len(self.samples) > self.limit:
            self.samples.popleft()

    def series(self, since: int) -> dict[str, Any]:
        kept = [(t, lag) for t, lag in self.samples if t >= since]
        topics = sorted({topic for _, lag in kept for topic in lag})
        return {
            "t": [t for t, _ in kept],
            "series": {topic: [lag.get(topic, 0) for _, lag in kept] for topic in topics},
        }


# --------------------------------------------------------------------------- data sources


def _clickhouse_figures(settings: Settings, since: int, now: float, step: int) -> dict[str, Any]:
    """Every ClickHouse query of one refresh, plus the live Redis stock of the hot skus (one
    thread: clickhouse-driver and redis-py are blocking)."""
    from analytics.client import connect as ch_connect
    from state.keys import Keys
    from state.redis import connect as redis_connect
    from state.stock import stock_levels

    axis = bucket_axis(since, now, step)
    params = {"since": since, "step": step}
    client = ch_connect(settings)
    try:
        rates, orders_by_channel = orders_series(client.execute(Q_ORDERS, params), axis, step)
        running, gmv_totals, accepted = gmv_series(client.execute(Q_GMV, params), axis, step)
        hot = [sku for sku, _ in client.execute(Q_HOT_SKUS, {**params, "limit": HOT_SKUS})]
        stock_rows = client.execute(Q_STOCK, {**params, "skus": tuple(hot)}) if hot else []
    finally:
        client.disconnect()
    live: dict[str, int] = {}
    if hot:
        redis_client = redis_connect(settings)
        try:
            keys = Keys(settings.redis_prefix)
            for sku in hot:
                live[sku] = sum(level.available for level in stock_levels(redis_client, keys, sku))
        finally:
            redis_client.close()
    return {
        "axis": axis,
        "orders": {"t": axis, "series": rates, "by_channel": orders_by_channel},
        "gmv": {
            "t": axis,
            "series": running,
            "totals": {cur: str(v) for cur, v in gmv_totals.items()},
            "accepted_by_channel": accepted,
        },
        "totals": {
            "orders": sum(orders_by_channel.values()),
            "accepted": sum(accepted.values()),
            "gmv": {cur: str(v) for cur, v in gmv_totals.items()},
        },
        "stock": {"skus": hot, "t": axis, "series": stock_series(stock_rows, axis, step, hot)},
        "stock_live": live,
    }


class LagProbe:
    """End offsets and the workers' group's committed offsets of the raw topics, with clients
    kept between refreshes (dropped after an error, so a restarted broker is picked up)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: Any = None
        self._admin: Any = None

    @property
    def group(self) -> str:
        return self._settings.app_id  # Faust's consumer group id is the app id

    def topics(self) -> list[str]:
        from streams import topics

        return [spec.name(self._settings.topic_prefix) for spec in topics.RAW_TOPICS]

    async def _clients(self) -> tuple[Any, Any]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from core.kafka import client_kwargs  # the project's one way to build Kafka clients

        if self._consumer is None:
            # No group_id: reading end offsets must never join (and rebalance) the workers.
            consumer = AIOKafkaConsumer(**client_kwargs(self._settings), enable_auto_commit=False)
            await consumer.start()
            self._consumer = consumer
        if self._admin is None:
            admin = AIOKafkaAdminClient(**client_kwargs(self._settings), request_timeout_ms=5000)
            await admin.start()
            self._admin = admin
        return self._consumer, self._admin

    async def sample(self) -> dict[str, int]:
        from aiokafka import TopicPartition

        try:
            consumer, admin = await self._clients()
            names = self.topics()
            if any(consumer.partitions_for_topic(t) is None for t in names):
                await consumer.topics()  # refresh metadata: topics created after start
            tps = [
                TopicPartition(t, p)
                for t in names
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            if not tps:
                return {}
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(self.group, partitions=tps)
        except Exception:
            await self.close()
            raise
        return lag_by_topic(ends, committed)

    async def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await (client.stop() if hasattr(client, "stop") else client.close())
        self._consumer = self._admin = None


# --------------------------------------------------------------------------- the app

SETTINGS_KEY = web.AppKey("settings", Settings)
VERIFIER_KEY = web.AppKey("verifier", Any)
COOKIE = "oms_dashboard_session"
COOKIE_PATH = "/api/"  # the only paths that need it (see the module doc)
TOKEN_PARAM = "token"
LAG_KEY = web.AppKey("lag_probe", LagProbe)
HISTORY_KEY = web.AppKey("lag_history", LagHistory)
CH_LOCK_KEY = web.AppKey("clickhouse_lock", asyncio.Lock)


class SharedFigure:
    """One figure computed at most once per ``ttl_s`` however many pages ask, one computation
    at a time (several open pages must not multiply the reads)."""

    def __init__(self, compute: Callable[[], Awaitable[dict[str, Any]]], ttl_s: float) -> None:
        self._compute, self._ttl_s = compute, ttl_s
        self._value: dict[str, Any] | None = None
        self._at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at >= self._ttl_s:
                self._value = await self._compute()
                self._at = time.monotonic()
            return self._value


HOLDS_KEY = web.AppKey("holds", SharedFigure)
PRINCIPAL_KEY = web.RequestKey("principal", Principal)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _holds(settings: Settings) -> dict[str, Any]:
    """Holds by reason, and the deadline queues: orders late, due within 4 h, backordered,
    with the LATE_ROWS most overdue (order ids and channel numbers only, no personal data)."""
    from state.keys import Keys
    from state.orders import OrderStore
    from web.views import list_held, list_late, redis_for

    async with redis_for(settings) as client:
        queues = await OrderStore(client, Keys(settings.redis_prefix)).queue_figures(time.time())
        rows = await list_held(settings, HELD_LIMIT, client=client)
        late = await list_late(settings, limit=LATE_ROWS, client=client)
    by_reason = holds_by_reason(rows)
    return {
        "total": queues["held"],
        "by_reason": by_reason,
        "counted": sum(by_reason.values()),
        "late": queues["late"],
        "due_soon": queues["due_soon"],
        "backorders": queues["backorders"],
        "late_orders": [
            {k: r[k] for k in ("order_id", "channel", "external_id", "state", "ship_by")}
            | {"overdue_h": round(r["overdue_s"] / 3600, 1)}
            for r in late
        ],
    }


async def dashboard_data(app: web.Application, since: int, now: float) -> dict[str, Any]:
    """The one JSON object the page draws; each source fails on its own (its section is
    missing and ``errors`` says why) so a dashboard during an outage still shows the rest."""
    settings = app[SETTINGS_KEY]
    step = bucket_step(since, now)
    out: dict[str, Any] = {
        "since": since,
        "now": int(now),
        "step_s": step,
        "group": app[LAG_KEY].group,
        "errors": {},
    }

    async def clickhouse() -> None:
        async with app[CH_LOCK_KEY]:
            figures = await asyncio.to_thread(_clickhouse_figures, settings, since, now, step)
        figures.pop("axis")
        out.update(figures)

    async def holds() -> None:
        out["holds"] = await app[HOLDS_KEY].get()

    async def lag() -> None:
        history = app[HISTORY_KEY]
        history.add(int(now), await asyncio.wait_for(app[LAG_KEY].sample(), 10.0))
        latest = history.samples[-1][1]
        out["lag"] = {**history.series(since), "current": latest, "total": sum(latest.values())}

    names = ("clickhouse", "holds", "lag")
    results = await asyncio.gather(clickhouse(), holds(), lag(), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("dashboard: %s unavailable: %s", name, result)
            out["errors"][name] = f"{type(result).__name__}: {result}"
    return out


async def handle_api(request: web.Request) -> web.Response:
    now = time.time()
    try:
        since = parse_since(request.query.get("since"), now)
    except BadParameter as exc:
        return _error(400, str(exc))
    data = await dashboard_data(request.app, since, now)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


async def handle_session(request: web.Request) -> web.Response:
    """Who the page is signed in as (the page shows it; a test asks it cheaply)."""
    principal: Principal = request[PRINCIPAL_KEY]
    body = {"user": principal.user, "role": principal.role, "shops": principal.shops_text()}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def handle_index(request: web.Request) -> web.Response:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


def plotly_js() -> Path:
    """plotly.min.js as the plotly wheel ships it (no CDN, no copy in the repo)."""
    path = Path(str(resources.files("plotly").joinpath("package_data", PLOTLY_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: reinstall the project (pip install -e .)")
    return path


async def handle_static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == PLOTLY_FILE:
        return web.FileResponse(plotly_js(), headers={"Content-Type": "text/javascript"})
    if name in STATIC_FILES:  # a fixed list: no path from the URL ever reaches the disk
        return web.FileResponse(STATIC_DIR / name, headers={"Content-Type": STATIC_FILES[name]})
    return _error(404, f"no static file {name!r}")


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _close_probe(app: web.Application) -> None:
    await app[LAG_KEY].close()


def without_token(url: URL) -> str:
    """Where the login redirect goes: the request's path and query minus ``token=``, as a
    same-origin relative reference. A path a browser could read as another origin (``//host``,
    ``/\\host``) or holding control characters becomes ``/``; everything is percent-encoded."""
    path = url.path
    bad = (
        not path.startswith("/")
        or path[1:2] in ("/", "\\")
        or "\\" in path
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
    )
    query = [(k, v) for k, v in url.query.items() if k != TOKEN_PARAM]
    location = str(URL.build(path="/" if bad else path, query=query))
    if not location.startswith("/") or location[1:2] in ("/", "\\"):
        return "/"
    return location


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


def _is_api(path: str) -> bool:
    return path.startswith(COOKIE_PATH)


async def _principal(request: web.Request, login_token: str = "") -> Principal | web.Response:
    """The principal of ``login_token``, else of the bearer header, else of the session cookie,
    allowed read_dashboard for every shop; else the response that refuses the request (401,
    403, or 429 with Retry-After)."""
    verifier = request.app[VERIFIER_KEY]
    token = login_token or bearer_token(request.headers.get("Authorization", ""))
    try:
        if token:
            principal = await verifier.verify(token, request.remote or "")
        elif request.cookies.get(COOKIE):
            principal = await verifier.session(request.cookies[COOKIE])
        else:
            return _unauthorized(
                "not signed in: open the dashboard once as /?token=<a finance or admin token>"
            )
    except TokenRefused as exc:
        return _unauthorized(str(exc))
    except TooManyAttempts as exc:
        wait = str(max(1, math.ceil(exc.retry_after_s)))
        return web.json_response({"error": str(exc)}, status=429, headers={"Retry-After": wait})
    if principal is None:
        return _unauthorized("invalid, unknown, expired or revoked token or session")
    decision = authorize(principal, Permission.READ_DASHBOARD, ALL_SHOPS)
    if not decision:
        return _error(403, f"forbidden: {decision.reason}")
    return principal


async def _login(request: web.Request) -> web.StreamResponse:
    """``?token=``: verify it, open a session for it and redirect to the same page without
    the token; the cookie carries the session id only."""
    principal = await _principal(request, request.query[TOKEN_PARAM])
    if isinstance(principal, web.Response):
        return principal
    try:
        session_id, ttl = await request.app[VERIFIER_KEY].open_session(principal)
    except TokenRefused as exc:
        return _unauthorized(str(exc))
    response = web.Response(
        status=303,
        headers={"Location": without_token(request.rel_url), "Cache-Control": "no-store"},
    )
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=ttl,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


@web.middleware
async def authenticated(request: web.Request, handler: Any) -> web.StreamResponse:
    """``?token=`` anywhere is traded for a session; ``/api/*`` needs read_dashboard for every
    shop; the page shell and /health are open (they hold no data)."""
    if TOKEN_PARAM in request.query:
        return await _login(request)
    if not _is_api(request.path):
        return await handler(request)
    principal = await _principal(request)
    if isinstance(principal, web.Response):
        return principal
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


async def _open_verifier(app: web.Application) -> None:
    from state.redis import connect_async
    from state.tokens import token_store

    client = connect_async(app[SETTINGS_KEY])
    app[REDIS_KEY] = client
    app[VERIFIER_KEY] = token_store(app[SETTINGS_KEY], client)


async def _close_verifier(app: web.Application) -> None:
    client = app.get(REDIS_KEY)
    if client is not None:
        await client.aclose()


REDIS_KEY = web.AppKey("verifier_redis", Any)


def create_app(settings: Settings, *, verifier: Any = None) -> web.Application:
    """The dashboard app; ``verifier`` (``verify``, ``open_session``, ``session`` as
    ``state.tokens.TokenStore`` has them) defaults to the token store on the settings' Redis,
    opened with the app."""
    app = web.Application(middlewares=[authenticated])
    app[SETTINGS_KEY] = settings
    if verifier is not None:
        app[VERIFIER_KEY] = verifier
    else:
        app.on_startup.append(_open_verifier)
        app.on_cleanup.append(_close_verifier)
    app[LAG_KEY] = LagProbe(settings)
    app[HISTORY_KEY] = LagHistory()
    app[CH_LOCK_KEY] = asyncio.Lock()
    app[HOLDS_KEY] = SharedFigure(lambda: _holds(settings), HOLDS_TTL_S)
    app.router.add_get("/", handle_index)
    app.router.add_get("/api/dashboard", handle_api)
    app.router.add_get("/api/session", handle_session)
    app.router.add_get("/static/{name}", handle_static)
    app.router.add_get("/health", handle_health)
    app.on_cleanup.append(_close_probe)
    return app


def dashboard_url(port: int = DEFAULT_PORT) -> str:
    return f"http://{HOST}:{port}/"


# --------------------------------------------------------------------------- processes


def dashboard_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "ops.dashboard", "--port", str(port)]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"{dashboard_url(port)}health", timeout=1.0) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_dashboard(
    settings: Settings, port: int = DEFAULT_PORT, *, timeout_s: float = START_TIMEOUT_S
) -> int:
    """Run the dashboard in the background like a stack component (pid in
    home/run/dashboard.pid, log in home/log/dashboard.log) and wait until /health answers;
    returns its pid. A dashboard this stack already runs is left as it is."""
    from ops import stack

    settings = stack._absolute(settings)
    pid = stack.read_pid(settings, COMPONENT)
    if pid is None:
        pid = stack._spawn(
            settings,
            COMPONENT,
            dashboard_argv(port),
            env=stack.child_env(settings),
            cwd=stack._child_cwd(settings),
        )
    stack._await(
        settings,
        COMPONENT,
        pid,
        lambda: (_healthy(port), f"no answer on {dashboard_url(port)}health"),
        timeout_s,
    )
    return pid


def stop_dashboard(settings: Settings) -> bool:
    """Stop the dashboard this stack started; False when there was none."""
    from ops import stack

    settings = stack._absolute(settings)
    pid = stack.read_pid(settings, COMPONENT)
    if pid is None:
        return False
    stack._terminate({COMPONENT: pid}, 10.0)
    stack.pid_file(settings, COMPONENT).unlink(missing_ok=True)
    return True


@click.command("dashboard")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="port on 127.0.0.1",
)
def dashboard_command(port: int) -> None:
    """Serve the live dashboard (orders/s, GMV, hot-sku stock, holds, lag) on loopback."""
    settings = get_settings()
    setup_logging(settings.log_format, logging.INFO, component="dashboard")  # masks tokens too
    click.echo(f"dashboard on {dashboard_url(port)}", err=True)
    web.run_app(create_app(settings), host=HOST, port=port, print=None, access_log=None)


if __name__ == "__main__":
    dashboard_command()
