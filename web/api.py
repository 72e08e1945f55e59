"""The order HTTP API each worker serves to customer-service, warehouse and back-office tools.

    GET  /health                           {"ok": true, "worker": NAME}           (open)
    GET  /health/live, /health/ready       liveness, readiness (core/health.py)  (open)
    GET  /metrics                          Prometheus text format (core/metrics.py): open
                                           unless OMS_METRICS_TOKEN is set
    GET  /orders/{order_id}                an order's whole life (``web.views.order_view``)
    GET  /orders/{channel}/{external_id}   {"orders": [...]}: several shops may share a number
    GET  /held?reason=R&limit=N&since=UNIX&after=CURSOR
                                           held orders oldest first, as `./oms held list
                                           --json`, a page at a time: ``next`` is the cursor
                                           of the next page (null at the end)
    GET  /orders?buyer=B&phone=P&tracking=T&sku=S&since=UNIX&until=UNIX&shop=CH/SHOP&limit=N
                                           orders found in the ClickHouse facts, newest first,
                                           as `./oms orders find --json` (analytics/search.py)
    GET  /orders/late?within=S&limit=N     orders still to ship past their ship-by deadline
                                           (or due within S seconds), earliest first, as
                                           `./oms orders late --json`
    GET  /rules                            the audit rules as `./oms rules check --json` shows;
                                           blacklist entries only for read_blacklists
    POST /access/tokens                    {"user", "role"[, "shops", "expires_in"]}: grant a
                                           token (admins; the bootstrap admin once, for the
                                           first admin)
    POST /orders/{order_id}/release        release a hold        {"reason": "..."} optional
    POST /orders/{order_id}/cancel         cancel the order      {"reason": "..."} optional
    POST /orders/{order_id}/tags           {"tags": [...][, "remove": true, "reason"]}: tag
                                           or untag the order (streams/tags.py)
    POST /orders/{order_id}/gift           {"sku"[, "quantity", "reason"]}: add a gift line
                                           before release (order/edits.py)
    POST /orders/{order_id}/lines/{line_id}
                                           {"sku" and/or "quantity"[, "reason"]}: change a
                                           line before release (order/edits.py)
    POST /stock/adjust                     {"sku", "warehouse", "delta", "reason"[, "field",
                                           "op_id"]}: add or remove units, once per op_id
                                           (409: the op_id was used for another change)

Every route but /health, /health/* and /metrics needs ``Authorization: Bearer <token>``
(``state/tokens.py``): 401 with ``WWW-Authenticate: Bearer`` without a valid one, 403 with the
reason when the token's role lacks the permission (``core/access.py``). An order of a shop
outside the token's scope is answered as unknown (404) and left out of lists, so scope never
tells which orders other shops have. Stock and rules are shared by every shop: adjusting stock
needs a token for every shop, and the blacklists' entries a token that may read them for every
shop (others see each blacklist as a count).

The API shares its worker's event loop with the order path, so no request may do unbounded
work on it: token hashes run in a small thread pool behind a cache and failure limits (429 with
``Retry-After``, ``state/tokens.py``); ``limit`` is at most ``MAX_HELD_LIMIT`` (400 above), a
held page looks at no more than ``HELD_SCAN_BUDGET`` index entries and parses them in a thread;
at most ``MAX_WRITES_IN_FLIGHT`` actions run at once (429 beyond).

Reads go through the same read models as the CLI (``web.views``) on the worker's long-lived
Redis client, so the API and `./oms orders show` cannot drift apart; personal data is always
masked. Actions go the CLI's way too: an ``OperatorAction`` on ``oms.operator`` with the token's
user as actor, applied by a worker, so it lands in the order's history with who did it. The
answer waits (bounded) for that: 200 applied, 409 refused in the order's state, 202 queued.

Errors are JSON ``{"error": ...}``: 400 for bad parameters (saying which and why), 404 for
unknown orders and routes, 503 with ``Retry-After`` during an outage (Redis unreachable or
refusing writes, the broker down: ``core.retry.is_outage``). Tokens never reach a log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from mode import Service
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from analytics.search import OrderSearch, SearchError, order_search
from core.access import (
    ALL_SHOPS,
    AccessError,
    Permission,
    Principal,
    Role,
    Shops,
    TokenRefused,
    TooManyAttempts,
    authorize,
    bearer_token,
    check_user,
    in_scope,
    mask_logs,
    parse_role,
    parse_shops,
)
from core.health import PROBE_PATHS, Probe, add_probe_routes, metrics_token
from core.retry import is_outage, redis_error_code
from core.settings import Settings
from order.record import OrderRecord
from state.keys import Keys
from state.tokens import Granted, token_store
from streams.edits import EditError, edit_fields
from streams.models import Channel
from streams.signing import API
from streams.tags import TagError, parse_tags
from web.views import (
    applied_summary,
    find_matching,
    find_orders,
    held_row,
    list_late,
    order_view,
    submit_action,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback unless OMS_WORKER_WEB_HOST says otherwise
DEFAULT_HELD_LIMIT = 100
MAX_HELD_LIMIT = 500  # rows per page; follow ``next`` for more
HELD_SCAN_BUDGET = 500  # held-index entries one request may load and parse
HELD_READ = 100  # of them per Redis round trip (and per parse in the thread)
MAX_WRITES_IN_FLIGHT = 8  # actions (each a Kafka produce and a wait) running at once
MAX_TOKEN_TTL_S = 366 * 86400
MAX_ID_LENGTH = 128
MAX_REASON_LENGTH = 200
MAX_BODY_BYTES = 16 * 1024
MAX_STOCK_DELTA = 10**9
MAX_NUMBER_CHARS = 32  # a number in the query (limit, since: "1700000000.123456" is 17)
MAX_CURSOR_CHARS = 1024  # base64 of [time, order id of at most MAX_ID_LENGTH characters]
ACTION_WAIT_S = 20.0  # how long an action request waits for a worker to apply it
OUTAGE_RETRY_AFTER_S = 5  # Retry-After of a 503: about one backoff step of the workers
HELD_PARAMS = frozenset({"reason", "limit", "since", "after"})
LATE_PARAMS = frozenset({"within", "limit"})
FIND_PARAMS = frozenset({"buyer", "phone", "tracking", "sku", "since", "until", "shop", "limit"})
MAX_WITHIN_S = 400 * 86_400  # as `./oms orders late --within`
MAX_UNIX_S = 4_102_444_800  # 2100-01-01: beyond, no time a fact holds
ACTION_FIELDS = frozenset({"reason"})
TAG_FIELDS = frozenset({"tags", "remove", "reason"})
EDIT_FIELDS = frozenset({"sku", "quantity", "reason"})
GRANT_FIELDS = frozenset({"user", "role", "shops", "expires_in"})
STOCK_FIELDS = frozenset({"sku", "warehouse", "delta", "reason", "field", "op_id"})
STOCK_FIELD_NAMES = ("on_hand", "inbound")
REASON_PATTERN = re.compile(r"[a-z0-9_]{1,64}")
CHANNELS = tuple(sorted(c.value for c in Channel))


class OrderReads(Protocol):
    """What the API reads; the worker passes ``RedisReads``, unit tests a stand-in."""

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        """Masked order views of the orders ``ref`` (OMS id or ``CHANNEL:EXTERNAL_ID``) names."""
        ...

    async def held(
        self, *, reason: str, limit: int, since: float, shops: Shops, after: HeldCursor | None
    ) -> HeldPage:
        """Held-order rows of ``shops`` (a principal's scope), oldest hold first, from just
        after ``after``: at most ``limit`` rows, and the cursor of the next page."""
        ...

    async def rules(self) -> dict[str, Any]:
        """The audit rules in force, personal data masked."""
        ...

    async def find(self, search: OrderSearch, *, shops: Shops) -> list[dict[str, Any]]:
        """Orders of ``shops`` that ``search`` finds, newest first (no personal data)."""
        ...


class TokenVerifier(Protocol):
    async def verify(self, token: str, client: str = "") -> Principal | None:
        """The principal a bearer token stands for, None when it stands for nobody; may raise
        ``TokenRefused`` (401 with its reason) or ``TooManyAttempts`` (429)."""
        ...


class TokenGrants(Protocol):
    async def grant(
        self,
        user: str,
        role: Role,
        shops: Shops = ALL_SHOPS,
        *,
        ttl_s: float | None = None,
        by: Principal | None = None,
    ) -> Granted:
        """A new token (``state.tokens.TokenStore.grant``)."""
        ...


HeldCursor = tuple[float, str]  # (hold time, order id) of the last index entry looked at


@dataclass(frozen=True)
class HeldPage:
    rows: list[dict[str, Any]]
    next: HeldCursor | None  # None: the index has nothing after this page


@dataclass(frozen=True)
class StockAdjustment:
    sku: str
    warehouse: str
    delta: int
    reason: str = ""
    field: str = "on_hand"
    op_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """What became of an action: the HTTP status that says it and the JSON body."""

    status: int
    body: dict[str, Any]


class OrderActions(Protocol):
    """What the API changes; each call names the user who acts, for the audit trail."""

    async def act(
        self,
        order_id: str,
        kind: str,
        *,
        actor: str,
        reason: str,
        tags: list[str] | None = None,
        **edit: Any,
    ) -> Outcome:
        """Send an operator action (``release_hold``, ``cancel``, ``tag``, ``untag`` with its
        ``tags``, ``add_gift``, ``change_line`` with its ``edit`` fields: streams/edits.py)
        and wait for it (bounded)."""
        ...

    async def late(self, *, within_s: float, limit: int, shops: Shops) -> list[dict[str, Any]]:
        """Orders of ``shops`` still to ship past their deadline or due within ``within_s``."""
        ...

    async def adjust_stock(self, change: StockAdjustment, *, actor: str) -> Outcome: ...


@dataclass(frozen=True)
class RedisReads:
    """The read models of ``web.views`` on one long-lived client, always masked."""

    settings: Settings
    client: aioredis.Redis

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        found = await find_orders(self.settings, ref, client=self.client)
        return [order_view(f, reveal=False) for f in found]

    async def held(
        self, *, reason: str, limit: int, since: float, shops: Shops, after: HeldCursor | None
    ) -> HeldPage:
        """Reads the held index from ``after`` in slices of ``HELD_READ``; stops at ``limit``
        rows, at the end of the index or after ``HELD_SCAN_BUDGET`` entries (a filter that
        matches little must not make one request walk every hold). Records are parsed in a
        thread: a slice of big records would otherwise hold the loop for tens of ms."""
        keys = Keys(self.settings.redis_prefix)
        rows: list[dict[str, Any]] = []
        cursor, scanned = after, 0
        while len(rows) < limit and scanned < HELD_SCAN_BUDGET:
            want = min(HELD_READ, HELD_SCAN_BUDGET - scanned)
            entries, more = await held_entries(self.client, keys.held, since, cursor, want)
            if not entries:
                return HeldPage(rows, None)
            pipe = self.client.pipeline(transaction=False)
            for order_id, _ in entries:
                pipe.hget(keys.order(order_id), "doc")
            docs = await pipe.execute()
            found = await asyncio.to_thread(held_rows, entries, docs)
            for (order_id, score), row in zip(entries, found, strict=True):
                scanned += 1
                cursor = (score, order_id)
                if row is None or (reason and row["reason"] != reason):
                    continue
                if in_scope(shops, str(row["shop_id"])):
                    rows.append(row)
                    if len(rows) == limit:
                        break
            if not more and len(rows) < limit:
                return HeldPage(rows, None)
        return HeldPage(rows, cursor)

    async def find(self, search: OrderSearch, *, shops: Shops) -> list[dict[str, Any]]:
        scope = None if shops == ALL_SHOPS else frozenset(shops)
        return await find_matching(self.settings, search, shops=scope, client=self.client)

    async def late(self, *, within_s: float, limit: int, shops: Shops) -> list[dict[str, Any]]:
        return await list_late(
            self.settings,
            within_s=within_s,
            limit=limit,
            keep=lambda row: in_scope(shops, str(row["shop_id"])),
            client=self.client,
            scan_budget=HELD_SCAN_BUDGET,
        )

    async def rules(self) -> dict[str, Any]:
        from order.audit import load_audit_rules
        from web.views import masked_rules

        path = self.settings.config_dir / "audit.toml"
        return masked_rules(await asyncio.to_thread(load_audit_rules, path))


@dataclass(frozen=True)
class KafkaActions:
    """Actions the way the CLI sends them: ``web.views.submit_action`` on ``oms.operator``,
    and stock changes through ``state.stock.adjust_stock`` (the movement names the actor)."""

    settings: Settings
    wait_s: float = ACTION_WAIT_S

    async def act(
        self,
        order_id: str,
        kind: str,
        *,
        actor: str,
        reason: str,
        tags: list[str] | None = None,
        **edit: Any,
    ) -> Outcome:
        try:
            applied = await submit_action(
                self.settings,
                order_id,
                kind,
                actor=actor,
                reason=reason,
                tags=tags,
                **edit,
                wait_s=self.wait_s,
                signer=API,  # signed as the API: the worker records api:<user> (streams/signing.py)
            )
        except LookupError as exc:
            return Outcome(404, {"error": str(exc)})
        summary = applied_summary(applied, actor)
        if applied.after is None:
            return Outcome(202, {**summary, "queued": True})
        return Outcome(409 if applied.refused else 200, summary)

    async def adjust_stock(self, change: StockAdjustment, *, actor: str) -> Outcome:
        return await asyncio.to_thread(adjust_stock_now, self.settings, change, actor)


async def held_entries(
    client: aioredis.Redis, key: str, since: float, after: HeldCursor | None, count: int
) -> tuple[list[tuple[str, float]], bool]:
    """Up to ``count`` (order id, hold time) entries of the held index after ``after`` (the
    index orders by time, then id), none older than ``since``; and whether more may follow."""
    low = max(since, after[0]) if after else since
    offset = 0
    while True:
        got = await client.zrangebyscore(
            key, low or "-inf", "+inf", start=offset, num=count, withscores=True
        )
        fresh = [(m, float(s)) for m, s in got if after is None or (float(s), m) > after]
        if fresh or len(got) < count:
            return fresh, len(got) == count
        offset += len(got)  # a run of holds at the cursor's very time: skip past it


def held_rows(
    entries: list[tuple[str, float]], docs: list[str | None]
) -> list[dict[str, Any] | None]:
    """The held rows of stored order documents (None for an order gone meanwhile)."""
    return [
        held_row(order_id, OrderRecord.model_validate_json(doc)) if doc else None
        for (order_id, _), doc in zip(entries, docs, strict=True)
    ]


def adjust_stock_now(settings: Settings, change: StockAdjustment, actor: str) -> Outcome:
    """`./oms stock adjust` for the API (blocking: run in a thread). The op id is the whole
    idempotency key, shared with the CLI; the acting user and the reason go on the movement.
    A repeat of an applied op id answers 200 with ``applied: false``; the same op id with
    another change is refused with 409."""
    from order.route import RoutingTable
    from state.keys import Keys
    from state.redis import connect
    from state.stock import StockError, StockRequestError, adjust_stock

    warehouses = RoutingTable.load(settings.config_dir / "warehouses.toml").warehouses
    client = connect(settings)
    try:
        done = adjust_stock(
            client,
            Keys(settings.redis_prefix),
            warehouses,
            change.sku,
            change.warehouse,
            change.delta,
            field=change.field,
            op_id=change.op_id,
            actor=actor,
            reason=change.reason,
        )
    except StockRequestError as exc:
        raise BadParam(str(exc)) from exc
    except StockError as exc:
        return Outcome(409, {"error": str(exc), "op_id": change.op_id})
    finally:
        client.close()
    body = {"ok": True, **change.__dict__, "op_id": done.op_id, "actor": actor}
    return Outcome(200, {**body, "applied": done.applied})


class BadParam(ValueError):
    """A request parameter the API refuses, with the message the caller sees (400)."""


class Unauthorized(Exception):
    """No valid bearer token (401)."""


class Forbidden(Exception):
    """A valid token whose role or scope does not allow the request (403)."""


class Busy(Exception):
    """Too many attempts or too much in flight (429 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


READS = web.AppKey("reads", OrderReads)
ACTIONS = web.AppKey("actions", OrderActions)
VERIFIER = web.AppKey("verifier", TokenVerifier)
GRANTS = web.AppKey("grants", TokenGrants)
WRITE_SLOTS = web.AppKey("write_slots", asyncio.Semaphore)
WORKER = web.AppKey("worker", str)
PRINCIPAL = web.RequestKey("principal", Principal)
OPEN_PATHS = frozenset({"/health"}) | PROBE_PATHS
NOT_COPIED_HEADERS = frozenset({"Content-Type", "Content-Length"})


def create_api(
    reads: OrderReads,
    *,
    worker: str,
    verifier: TokenVerifier,
    actions: OrderActions | None = None,
    grants: TokenGrants | None = None,
    probe: Probe | None = None,
    metrics_token: str | None = None,
) -> web.Application:
    """The aiohttp application; ``reads``, ``verifier``, ``actions`` and ``grants`` are injected
    so routing, access and validation test pure. Without ``actions`` (``grants``) the write
    (grant) routes answer 503; with a ``probe`` it also serves /health/live, /health/ready and
    /metrics."""
    app = web.Application(
        middlewares=[errors_as_json, authenticated, bounded_writes],
        client_max_size=MAX_BODY_BYTES,
    )
    app[READS], app[VERIFIER], app[WORKER] = reads, verifier, worker
    app[WRITE_SLOTS] = asyncio.Semaphore(MAX_WRITES_IN_FLIGHT)
    if actions is not None:
        app[ACTIONS] = actions
    if grants is not None:
        app[GRANTS] = grants
    app.router.add_get("/health", get_health)
    if probe is not None:
        add_probe_routes(app, probe, metrics_token)
    app.router.add_get("/held", get_held)
    app.router.add_get("/rules", get_rules)
    app.router.add_post("/orders/{order_id}/release", post_release)
    app.router.add_post("/orders/{order_id}/cancel", post_cancel)
    app.router.add_post("/orders/{order_id}/tags", post_tags)
    app.router.add_post("/orders/{order_id}/gift", post_gift)
    app.router.add_post("/orders/{order_id}/lines/{line_id}", post_line)
    app.router.add_post("/stock/adjust", post_stock_adjust)
    app.router.add_post("/access/tokens", post_grant)
    app.router.add_get("/orders", get_found)
    app.router.add_get("/orders/late", get_late)  # before /orders/{order_id}
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_get("/orders/{channel}/{external_id}", get_channel_orders)
    return app


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        data, status=status, headers=headers, dumps=lambda d: orjson.dumps(d, default=str).decode()
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{"error": ...}`` with the right status; nothing personal logged."""
    try:
        return await handler(request)
    except BadParam as exc:
        return error(400, str(exc))
    except Unauthorized as exc:
        return error(401, str(exc), {"WWW-Authenticate": "Bearer"})
    except Forbidden as exc:
        return error(403, str(exc))
    except Busy as exc:
        wait = str(max(1, math.ceil(exc.retry_after_s)))
        return error(429, str(exc), {"Retry-After": wait})
    except web.HTTPException as exc:  # unknown route, wrong method, body too large
        if exc.status < 400:
            raise
        response = error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        response.headers.extend(
            (k, v) for k, v in exc.headers.items() if k not in NOT_COPIED_HEADERS
        )
        return response
    except Exception as exc:
        if is_outage(exc):
            return unavailable(request, exc)
        log.exception("order API: %s %s failed", request.method, request.path)
        return error(500, "internal error; the worker log has the details")


def unavailable(request: web.Request, exc: Exception) -> web.Response:
    """503 with Retry-After for an outage (core/retry.py: Redis unreachable or refusing writes,
    a retriable broker error, a timeout): the request was fine, a retry later may well pass.
    Redis refusals (READONLY, OOM, MISCONF, LOADING...) come as ResponseErrors like a bug's,
    so the class alone would have made them 500s. Only the error's class and code are told."""
    code = redis_error_code(exc) if isinstance(exc, RedisError) else ""
    cause = f"{type(exc).__name__}{f' {code}' if code else ''}"
    log.warning("order API: %s %s: unavailable (%s)", request.method, request.path, cause)
    if isinstance(exc, RedisConnectionError | RedisTimeoutError) and not code:
        what = "Redis cannot be reached"
    elif isinstance(exc, RedisError):
        what = f"Redis refuses writes ({code or type(exc).__name__})"
    else:
        what = f"a service is unavailable ({cause})"
    wait = str(OUTAGE_RETRY_AFTER_S)
    return error(503, f"order records are unavailable: {what}, retry later", {"Retry-After": wait})


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request but the health probe carries a valid bearer token; its principal is
    kept on the request for the handlers' permission checks."""
    if request.path not in OPEN_PATHS:
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise Unauthorized("authentication required: Authorization: Bearer <token>")
        try:
            principal = await request.app[VERIFIER].verify(token, request.remote or "")
        except TokenRefused as exc:
            raise Unauthorized(str(exc)) from None
        except TooManyAttempts as exc:
            raise Busy(str(exc), exc.retry_after_s) from None
        if principal is None:
            raise Unauthorized("invalid, unknown, expired or revoked token")
        request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def bounded_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """At most MAX_WRITES_IN_FLIGHT write requests at once: each action opens a producer and
    waits up to ACTION_WAIT_S for a worker, so a burst of them must be refused, not queued on
    the loop the order path runs on."""
    if request.method != "POST":
        return await handler(request)
    slots = request.app[WRITE_SLOTS]
    if slots.locked():
        raise Busy(f"more than {MAX_WRITES_IN_FLIGHT} actions in flight: retry shortly", 1.0)
    async with slots:
        return await handler(request)


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def require(request: web.Request, permission: Permission, shop: str | None = None) -> Principal:
    """The request's principal if it may use ``permission`` (on ``shop``); else 403."""
    principal = principal_of(request)
    decision = authorize(principal, permission, shop)
    if not decision:
        raise Forbidden(f"forbidden: {decision.reason}")
    return principal


def visible(principal: Principal, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows (order views, held rows) of shops in the principal's scope."""
    return [r for r in rows if in_scope(principal.shops, str(r.get("shop_id", "")))]


async def get_health(request: web.Request) -> web.Response:
    return json_response({"ok": True, "worker": request.app[WORKER]})


async def get_order(request: web.Request) -> web.Response:
    principal = require(request, Permission.READ_ORDERS)
    order_id = parse_order_id(request.match_info["order_id"])
    views = visible(principal, await request.app[READS].orders(order_id))
    if not views:
        return error(404, f"no order {order_id!r}")
    return json_response(views[0])


async def get_channel_orders(request: web.Request) -> web.Response:
    principal = require(request, Permission.READ_ORDERS)
    channel = parse_channel(request.match_info["channel"])
    external_id = parse_external_id(request.match_info["external_id"])
    views = visible(principal, await request.app[READS].orders(f"{channel}:{external_id}"))
    if not views:
        return error(404, f"no {channel} order {external_id!r}")
    return json_response({"orders": views})


async def get_held(request: web.Request) -> web.Response:
    """Held orders of the token's shops: up to ``limit`` of them, the scope applied first."""
    principal = require(request, Permission.READ_ORDERS)
    query = request.rel_url.query
    check_known_params(set(query), HELD_PARAMS)
    page = await request.app[READS].held(
        reason=parse_reason(query.get("reason", "")),
        limit=parse_limit(query.get("limit")),
        since=parse_since(query.get("since")),
        shops=principal.shops,
        after=parse_cursor(query.get("after")),
    )
    shown = visible(principal, page.rows)  # the reads applied the scope; this guards them
    cursor = format_cursor(page.next) if page.next else None
    return json_response({"total": len(shown), "orders": shown, "next": cursor})


async def get_late(request: web.Request) -> web.Response:
    """Orders of the token's shops still to ship past (or near) their ship-by deadline."""
    principal = require(request, Permission.READ_ORDERS)
    query = request.rel_url.query
    check_known_params(set(query), LATE_PARAMS)
    within_s = parse_within(query.get("within"))
    rows = await request.app[READS].late(
        within_s=within_s, limit=parse_limit(query.get("limit")), shops=principal.shops
    )
    shown = visible(principal, rows)
    return json_response({"within_s": within_s, "total": len(shown), "orders": shown})


async def get_found(request: web.Request) -> web.Response:
    """Orders of the token's shops that the query's filters find (at least one filter)."""
    principal = require(request, Permission.READ_ORDERS)
    query = request.rel_url.query
    check_known_params(set(query), FIND_PARAMS)
    try:
        search = order_search(
            buyer=parse_term(query, "buyer"),
            phone=parse_term(query, "phone"),
            tracking=parse_term(query, "tracking"),
            sku=parse_term(query, "sku"),
            since=parse_time(query.get("since"), "since"),
            until=parse_time(query.get("until"), "until"),
            shop=parse_term(query, "shop"),
            limit=parse_limit(query.get("limit")),
        )
        rows = visible(principal, await request.app[READS].find(search, shops=principal.shops))
    except SearchError as exc:  # a bad filter, or over the read budget
        raise BadParam(str(exc)) from None
    return json_response({"total": len(rows), "orders": rows})


def parse_term(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    check_length(value, name, 2 * MAX_ID_LENGTH)
    return value


def parse_time(value: str | None, name: str) -> datetime | None:
    """Unix seconds, as ``since`` of /held."""
    if value is None:
        return None
    check_length(value, name, MAX_NUMBER_CHARS)
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 <= seconds < MAX_UNIX_S):
        raise BadParam(f"{name} must be unix seconds from 0 to {MAX_UNIX_S}, got {value!r}")
    return datetime.fromtimestamp(seconds, UTC)


def parse_within(value: str | None) -> float:
    if value is None:
        return 0.0
    check_length(value, "within", MAX_NUMBER_CHARS)
    try:
        within = float(value)
    except ValueError:
        within = math.nan
    if not (math.isfinite(within) and 0 <= within <= MAX_WITHIN_S):
        raise BadParam(f"within must be seconds from 0 to {MAX_WITHIN_S}, got {value!r}")
    return within


async def get_rules(request: web.Request) -> web.Response:
    """The rules for everyone who reads orders; blacklist entries only for a principal that
    may read them for every shop (``core/access.py``), others get each list's size."""
    principal = require(request, Permission.READ_ORDERS)
    rules = await request.app[READS].rules()
    shown = bool(authorize(principal, Permission.READ_BLACKLISTS, ALL_SHOPS))
    return json_response(
        {"rules": rules if shown else hide_blacklists(rules), "blacklist_entries": shown}
    )


def hide_blacklists(rules: dict[str, Any]) -> dict[str, Any]:
    """``rules`` with every list of a blacklist section replaced by ``{"hidden": size}``."""
    out = dict(rules)
    for name, section in rules.items():
        if "blacklist" in name and isinstance(section, dict):
            out[name] = {
                k: {"hidden": len(v)} if isinstance(v, list | tuple | set | frozenset) else v
                for k, v in section.items()
            }
    return out


async def post_grant(request: web.Request) -> web.Response:
    """Grant a token: admins any role; the bootstrap admin one admin of every shop, once. The
    token is in this answer only (never stored, never logged)."""
    principal = require(request, Permission.MANAGE_TOKENS, ALL_SHOPS)
    body = await json_body(request, GRANT_FIELDS)
    try:
        user = check_user(parse_text(body.get("user", ""), "user", required=True))
        role = parse_role(parse_text(body.get("role", ""), "role", required=True))
        shops = parse_shops(body.get("shops", ALL_SHOPS))
    except AccessError as exc:
        raise BadParam(str(exc)) from None
    ttl_s = parse_expires_in(body.get("expires_in"))
    grants = request.app.get(GRANTS)
    if grants is None:
        raise web.HTTPServiceUnavailable(reason="tokens are not granted by this API")
    try:
        granted = await grants.grant(user, role, shops, ttl_s=ttl_s, by=principal)
    except AccessError as exc:
        raise Forbidden(f"forbidden: {exc}") from None
    except TokenRefused as exc:
        raise Unauthorized(str(exc)) from None
    log.info("token %s granted to %s (%s) by %s", granted.info.token_id, user, role, principal.user)
    body = {**granted.info.to_dict(), "token": granted.token}
    return json_response(body, 201, {"Cache-Control": "no-store"})


def parse_expires_in(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParam(f"expires_in must be seconds (a number), got {value!r}")
    if not 60 <= value <= MAX_TOKEN_TTL_S:
        raise BadParam(f"expires_in must be from 60 to {MAX_TOKEN_TTL_S} seconds")
    return float(value)


async def post_release(request: web.Request) -> web.Response:
    return await order_action(request, Permission.RELEASE_HOLDS, "release_hold")


async def post_cancel(request: web.Request) -> web.Response:
    return await order_action(request, Permission.CANCEL_ORDERS, "cancel")


async def post_tags(request: web.Request) -> web.Response:
    """Tag (or with ``"remove": true`` untag) an order: the tags are checked here (400)."""
    return await order_action(request, Permission.EDIT_ORDERS, "tag", TAG_FIELDS)


async def post_gift(request: web.Request) -> web.Response:
    """Add a gift line before release: the sku and units are checked here (400)."""
    return await order_action(request, Permission.EDIT_ORDERS, "add_gift", EDIT_FIELDS)


async def post_line(request: web.Request) -> web.Response:
    """Change a line's sku and/or units before release: checked here (400)."""
    return await order_action(request, Permission.EDIT_ORDERS, "change_line", EDIT_FIELDS)


async def order_action(
    request: web.Request,
    permission: Permission,
    kind: str,
    fields: frozenset[str] = ACTION_FIELDS,
) -> web.Response:
    """Permission first (403 says so before anything is looked up), then the body, then the
    order in scope (404 otherwise), then the action as the token's user."""
    principal = require(request, permission)
    order_id = parse_order_id(request.match_info["order_id"])
    body = await json_body(request, fields)
    reason = parse_text(body.get("reason", ""), "reason")
    tags = None
    if "tags" in fields:
        tags = parse_tag_list(body.get("tags"))
        kind = "untag" if parse_flag(body.get("remove", False), "remove") else kind
    edit = parse_edit(request, kind, body) if fields is EDIT_FIELDS else {}
    views = visible(principal, await request.app[READS].orders(order_id))
    if not views:
        return error(404, f"no order {order_id!r}")
    require(request, permission, str(views[0]["shop_id"]))
    outcome = await actions_of(request).act(
        order_id, kind, actor=principal.user, reason=reason, tags=tags, **edit
    )
    return json_response(outcome.body, outcome.status)


def parse_edit(request: web.Request, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A gift's or a line change's fields (streams/edits.py ``edit_fields``), else a 400."""
    try:
        return edit_fields(
            kind,
            line_id=request.match_info.get("line_id", ""),
            sku=body.get("sku"),
            quantity=body.get("quantity"),
        )
    except EditError as exc:
        raise BadParam(str(exc)) from None


def parse_tag_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadParam('tags must be a list of strings, e.g. ["vip"]')
    try:
        return parse_tags(value)
    except TagError as exc:
        raise BadParam(str(exc)) from None


def parse_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadParam(f"{name} must be true or false, got {value!r}")
    return value


async def post_stock_adjust(request: web.Request) -> web.Response:
    principal = require(request, Permission.ADJUST_STOCK, ALL_SHOPS)  # stock is every shop's
    change = parse_stock_adjustment(await json_body(request, STOCK_FIELDS))
    outcome = await actions_of(request).adjust_stock(change, actor=principal.user)
    return json_response(outcome.body, outcome.status)


def actions_of(request: web.Request) -> OrderActions:
    actions = request.app.get(ACTIONS)
    if actions is None:
        raise web.HTTPServiceUnavailable(reason="actions are not served by this API")
    return actions


async def json_body(request: web.Request, known: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object ({} for an empty body); unknown fields are refused."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadParam("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadParam("the body must be a JSON object")
    check_known_params(set(data), known)
    return data


def parse_text(value: Any, name: str, *, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_REASON_LENGTH:
        raise BadParam(f"{name} must be a string of at most {MAX_REASON_LENGTH} characters")
    if required and not value.strip():
        raise BadParam(f"{name} is required")
    return value.strip()


def parse_stock_adjustment(body: dict[str, Any]) -> StockAdjustment:
    delta = body.get("delta")
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise BadParam(f"delta must be a whole number other than 0, got {delta!r}")
    if abs(delta) > MAX_STOCK_DELTA:
        raise BadParam(f"delta must be within +-{MAX_STOCK_DELTA}")
    field = body.get("field", "on_hand")
    if field not in STOCK_FIELD_NAMES:
        raise BadParam(f"field must be one of {', '.join(STOCK_FIELD_NAMES)}, got {field!r}")
    return StockAdjustment(
        sku=parse_text(body.get("sku", ""), "sku", required=True),
        warehouse=parse_text(body.get("warehouse", ""), "warehouse", required=True),
        delta=delta,
        reason=parse_text(body.get("reason", ""), "reason"),
        field=field,
        op_id=parse_text(body.get("op_id", ""), "op_id"),
    )


def check_known_params(given: set[str], known: frozenset[str]) -> None:
    """A misspelt filter must not silently return everything."""
    unknown = sorted(given - known)
    if unknown:
        raise BadParam(
            f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}"
        )


def parse_order_id(value: str) -> str:
    if ":" in value:
        raise BadParam(
            f"{value!r} is not an OMS order id; look channel orders up at "
            "/orders/{channel}/{external_id}"
        )
    if len(value) > MAX_ID_LENGTH:
        raise BadParam(f"order id longer than {MAX_ID_LENGTH} characters")
    return value


def parse_channel(value: str) -> str:
    channel = value.lower()
    if channel not in CHANNELS:
        raise BadParam(f"unknown channel {value!r}; one of {', '.join(CHANNELS)}")
    return channel


def parse_external_id(value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise BadParam(f"external id longer than {MAX_ID_LENGTH} characters")
    return value


def parse_reason(value: str) -> str:
    if value and not REASON_PATTERN.fullmatch(value):
        raise BadParam(f"reason {value!r} is not a hold reason code (e.g. unpaid, out_of_stock)")
    return value


def check_length(value: str, name: str, max_chars: int) -> None:
    """A query parameter refused unread past ``max_chars``, before int() or float() sees it:
    int() gives up on more than 4,300 digits with a ValueError, and a page of digits echoed
    back in the error helps nobody."""
    if len(value) > max_chars:
        raise BadParam(f"{name} must be at most {max_chars} characters, got {len(value)}")


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_HELD_LIMIT
    check_length(value, "limit", MAX_NUMBER_CHARS)
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_HELD_LIMIT:
        raise BadParam(
            f"limit must be a whole number from 1 to {MAX_HELD_LIMIT} (page on with "
            f"after=<next>), got {value!r}"
        )
    return limit


def format_cursor(cursor: HeldCursor) -> str:
    """An opaque page cursor for the URL."""
    raw = orjson.dumps([cursor[0], cursor[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(value: str | None) -> HeldCursor | None:
    if value is None:
        return None
    check_length(value, "after", MAX_CURSOR_CHARS)
    try:
        padded = value + "=" * (-len(value) % 4)
        score, order_id = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError("score")
        if not isinstance(order_id, str) or len(order_id) > MAX_ID_LENGTH:
            raise ValueError("order id")
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadParam("after must be the 'next' cursor of a previous /held answer") from None
    return float(score), order_id


def parse_since(value: str | None) -> float:
    if value is None:
        return 0.0
    check_length(value, "since", MAX_NUMBER_CHARS)
    try:
        since = float(value)
    except ValueError:
        since = math.nan
    if not (math.isfinite(since) and since >= 0):
        raise BadParam(f"since must be unix seconds (a number >= 0), got {value!r}")
    return since


# --- serving from a worker ---------------------------------------------------------------


def worker_index(worker: str) -> int:
    """``w3`` -> 3: workers are started as w0, w1, ...; a name without a number -> 0."""
    digits = re.search(r"(\d+)$", worker)
    return int(digits.group(1)) if digits else 0


def api_port(settings: Settings, worker: str = "w0") -> int:
    """Each worker on its own port, so several share one machine: base + the worker's index."""
    return settings.worker_web_port + worker_index(worker)


def api_url(settings: Settings, worker: str = "w0") -> str:
    """Where ``worker``'s API answers, for the CLI, the demo and tests."""
    return f"http://{DEFAULT_HOST}:{api_port(settings, worker)}"


class ApiServer:
    """The API bound to one port for a worker's lifetime: ``start`` on worker start-up,
    ``stop`` on shutdown."""

    def __init__(self, app: web.Application, port: int, host: str = DEFAULT_HOST) -> None:
        # No access log: request lines name the orders customer service looked at.
        self._runner = web.AppRunner(app, access_log=None)
        self.host, self.port = host, port
        self.serving = False

    async def start(self) -> bool:
        """Bind and serve; a port clash is logged and leaves the worker processing orders (the
        API is for people, the order flow must not stop for it). True when serving."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            log.error("order API not served on %s:%s: %s", self.host, self.port, exc)
            await self._runner.cleanup()
            return False
        self.serving = True
        log.info("order API on http://%s:%s", self.host, self.port)
        return True

    async def stop(self) -> None:
        if self.serving:
            self.serving = False
            await self._runner.cleanup()


def register_api(
    app: faust.App,
    settings: Settings,
    client: aioredis.Redis,
    worker: str,
    probe: Probe | None = None,
) -> ApiServer:
    """Serve the API from this worker (Faust's own web server stays disabled): started with the
    app's services, stopped when the worker shuts down. Returns the server for the heartbeat."""
    token = metrics_token(settings)
    mask_logs(__name__, "aiohttp.access", "aiohttp.server", "aiohttp.web")
    store = token_store(settings, client)
    server = ApiServer(
        create_api(
            RedisReads(settings, client),
            worker=worker,
            verifier=store,
            actions=KafkaActions(settings),
            grants=store,
            probe=probe,
            metrics_token=token,
        ),
        api_port(settings, worker),
        settings.worker_web_host,
    )

    class OrderApiService(Service):
        async def on_start(self) -> None:
            await server.start()

        async def on_stop(self) -> None:
            await server.stop()

    app.service(OrderApiService)
    return server
