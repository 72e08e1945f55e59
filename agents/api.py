"""The order query HTTP API each worker serves to customer-service tools.

    GET /orders/{order_id}                an order's whole life (``ops.views.order_view``)
    GET /orders/{channel}/{external_id}   {"orders": [...]}: several shops may share a number
    GET /held?reason=R&limit=N&since=UNIX held orders oldest first, as `./oms held list --json`
    GET /health                           {"ok": true, "worker": NAME}

Reads go through the same read models as the CLI (``ops.views``) on the worker's long-lived
Redis client, so the API and `./oms orders show` cannot drift apart. Personal data is always
masked: there is no reveal over HTTP until requests are authenticated. That comes in a later
issue through the ``guard`` seam of ``create_api`` (a coroutine run before every route but
/health that raises ``web.HTTPUnauthorized``/``HTTPForbidden``).

Errors are JSON ``{"error": ...}``: 400 for bad parameters (saying which and why), 404 for
unknown orders and routes, 503 when Redis cannot be reached.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import faust
import orjson
import redis.asyncio as aioredis
from aiohttp import web
from mode import Service
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ops.settings import Settings
from ops.views import find_orders, list_held, order_view
from streams.models import Channel

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback until requests are authenticated
DEFAULT_HELD_LIMIT = 1000  # as `./oms held list`
MAX_HELD_LIMIT = 10_000
MAX_ID_LENGTH = 128
HELD_PARAMS = frozenset({"reason", "limit", "since"})
REASON_PATTERN = re.compile(r"[a-z0-9_]{1,64}")
CHANNELS = tuple(sorted(c.value for c in Channel))


class OrderReads(Protocol):
    """What the API reads; the worker passes ``RedisReads``, unit tests a stand-in."""

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        """Masked order views of the orders ``ref`` (OMS id or ``CHANNEL:EXTERNAL_ID``) names."""
        ...

    async def held(self, *, reason: str, limit: int, since: float) -> list[dict[str, Any]]:
        """Held-order rows, oldest hold first."""
        ...


@dataclass(frozen=True)
class RedisReads:
    """The read models of ``ops.views`` on one long-lived client, always masked."""

    settings: Settings
    client: aioredis.Redis

    async def orders(self, ref: str) -> list[dict[str, Any]]:
        found = await find_orders(self.settings, ref, client=self.client)
        return [order_view(f, reveal=False) for f in found]

    async def held(self, *, reason: str, limit: int, since: float) -> list[dict[str, Any]]:
        return await list_held(self.settings, limit, since, reason=reason, client=self.client)


Guard = Callable[[web.Request], Awaitable[None]]


async def allow_all(request: web.Request) -> None:
    """No authentication yet: the server binds loopback only and never reveals personal data."""


class BadParam(ValueError):
    """A request parameter the API refuses, with the message the caller sees (400)."""


READS = web.AppKey("reads", OrderReads)
GUARD = web.AppKey("guard", Guard)
WORKER = web.AppKey("worker", str)
OPEN_PATHS = frozenset({"/health"})
NOT_COPIED_HEADERS = frozenset({"Content-Type", "Content-Length"})


def create_api(reads: OrderReads, *, worker: str, guard: Guard = allow_all) -> web.Application:
    """The aiohttp application; ``reads`` is injected so routing and validation test pure."""
    app = web.Application(middlewares=[errors_as_json, guarded])
    app[READS], app[GUARD], app[WORKER] = reads, guard, worker
    app.router.add_get("/health", get_health)
    app.router.add_get("/held", get_held)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_get("/orders/{channel}/{external_id}", get_channel_orders)
    return app


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda d: orjson.dumps(d, default=str).decode()
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as ``{"error": ...}`` with the right status; nothing personal logged."""
    try:
        return await handler(request)
    except BadParam as exc:
        return error(400, str(exc))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        log.warning("order API: redis unavailable (%s)", type(exc).__name__)
        return error(503, "order records are unavailable: Redis cannot be reached, retry later")
    except web.HTTPException as exc:  # unknown route, wrong method, or the guard's refusal
        if exc.status < 400:
            raise
        response = error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        response.headers.extend(
            (k, v) for k, v in exc.headers.items() if k not in NOT_COPIED_HEADERS
        )
        return response
    except Exception:
        log.exception("order API: %s %s failed", request.method, request.path)
        return error(500, "internal error; the worker log has the details")


@web.middleware
async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The authentication seam: the app's guard sees every request but the health probe."""
    if request.path not in OPEN_PATHS:
        await request.app[GUARD](request)
    return await handler(request)


async def get_health(request: web.Request) -> web.Response:
    return json_response({"ok": True, "worker": request.app[WORKER]})


async def get_order(request: web.Request) -> web.Response:
    order_id = parse_order_id(request.match_info["order_id"])
    views = await request.app[READS].orders(order_id)
    if not views:
        return error(404, f"no order {order_id!r}")
    return json_response(views[0])


async def get_channel_orders(request: web.Request) -> web.Response:
    channel = parse_channel(request.match_info["channel"])
    external_id = parse_external_id(request.match_info["external_id"])
    views = await request.app[READS].orders(f"{channel}:{external_id}")
    if not views:
        return error(404, f"no {channel} order {external_id!r}")
    return json_response({"orders": views})


async def get_held(request: web.Request) -> web.Response:
    query = request.rel_url.query
    check_known_params(set(query), HELD_PARAMS)
    rows = await request.app[READS].held(
        reason=parse_reason(query.get("reason", "")),
        limit=parse_limit(query.get("limit")),
        since=parse_since(query.get("since")),
    )
    return json_response({"total": len(rows), "orders": rows})


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


def parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_HELD_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_HELD_LIMIT:
        raise BadParam(f"limit must be a whole number from 1 to {MAX_HELD_LIMIT}, got {value!r}")
    return limit


def parse_since(value: str | None) -> float:
    if value is None:
        return 0.0
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
    app: faust.App, settings: Settings, client: aioredis.Redis, worker: str
) -> ApiServer:
    """Serve the API from this worker (Faust's own web server stays disabled): started with the
    app's services, stopped when the worker shuts down. Returns the server for the heartbeat."""
    server = ApiServer(
        create_api(RedisReads(settings, client), worker=worker),
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
