"""Liveness, readiness and /metrics routes, shared by the worker's API and the fact sink.

    GET /health/live    200 {"ok": true, ...}: the process is up and its event loop answers
                        (the answer itself is the proof: the loop that serves it is the one
                        that runs the agents).
    GET /health/ready   200 {"ready": true, "checks": {...}} when the process can do its job;
                        503 {"ready": false, "reason": "...", "checks": {...}} otherwise.
    GET /metrics        Prometheus text format (core/metrics.py); open unless
                        OMS_METRICS_TOKEN is set, then ``Authorization: Bearer <it>``.

A worker is ready when its Kafka consumer runs, it is a member of its group (partitions
assigned, or none because the group has more members than partitions: a legitimately idle
member, ready to take over on the next rebalance), no rebalance is in progress, no agent has
crashed, and Redis answers PING within OMS_HEALTH_TIMEOUT_S (every order's state is there).
The fact sink is ready when its consumer runs with partitions and ClickHouse takes its writes.

Why /metrics has no token by default: Prometheus scrapes over a private network, metrics hold
no personal data and no order ids (only counts, reason codes, topics and partitions), and most
scrape setups have no secret to send; a deployment that must can set one
(docs/decisions/0011-metrics-and-health.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from core.access import bearer_token, same_secret
from core.settings import Settings

LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"
PROBE_PATHS = frozenset({LIVE_PATH, READY_PATH, METRICS_PATH})


@dataclass(frozen=True)
class Readiness:
    """Whether the process can do its job, and each check's finding."""

    ready: bool
    checks: dict[str, Any]
    reasons: Sequence[str] = field(default_factory=tuple)

    def body(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = {"ready": self.ready, "name": name, "checks": self.checks}
        if self.reasons:
            body["reason"] = "; ".join(self.reasons)
        return body


class Probe(Protocol):
    """What a process tells its probes; the worker and the sink each have one."""

    name: str

    async def readiness(self) -> Readiness: ...

    async def metrics(self) -> bytes: ...


def worker_readiness(
    *,
    member: bool,
    partitions: int,
    rebalancing: bool,
    consumer_state: str,
    crashed_agents: Sequence[str],
    redis_error: str | None,
) -> Readiness:
    """The worker's verdict from its checks (pure, so every case is unit tested)."""
    reasons = []
    if consumer_state != "running":
        reasons.append(f"kafka consumer is {consumer_state}")
    if not member:
        reasons.append("no partitions assigned yet (joining the consumer group)")
    elif rebalancing:
        reasons.append("consumer group rebalancing")
    if crashed_agents:
        reasons.append(f"agents crashed: {', '.join(crashed_agents)}")
    if redis_error is not None:
        reasons.append(f"redis: {redis_error}")
    checks = {
        "consumer": consumer_state,
        "member": member,
        "partitions": partitions,
        "idle_member": member and partitions == 0,
        "rebalancing": rebalancing,
        "crashed_agents": list(crashed_agents),
        "redis": redis_error is None,
    }
    return Readiness(not reasons, checks, tuple(reasons))


def sink_readiness(
    *, running: bool, partitions: int, clickhouse_failures: int, redis_error: str | None
) -> Readiness:
    """The fact sink's verdict: its consumer has partitions and ClickHouse takes writes.
    Redis only carries its heartbeat, so Redis down is reported but does not stop it."""
    reasons = []
    if not running:
        reasons.append("fact sink loop is not running")
    if partitions <= 0:
        reasons.append("no partitions assigned yet (joining the consumer group)")
    if clickhouse_failures > 0:
        reasons.append(f"clickhouse writes failing ({clickhouse_failures} attempts in a row)")
    checks = {
        "running": running,
        "partitions": partitions,
        "clickhouse": clickhouse_failures == 0,
        "redis": redis_error is None,
    }
    return Readiness(not reasons, checks, tuple(reasons))


async def redis_error(client: Any, timeout_s: float) -> str | None:
    """None when Redis answers PING within ``timeout_s``; else what went wrong (no URL: it may
    hold a password)."""
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except TimeoutError:
        return f"no answer to PING within {timeout_s:g} s"
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return None


def metrics_token(settings: Settings) -> str | None:
    """OMS_METRICS_TOKEN, or None: /metrics is then open."""
    token = settings.metrics_bearer_token
    return token.get_secret_value() if token is not None else None


PROBE = web.AppKey("probe", Probe)
METRICS_TOKEN = web.AppKey("metrics_token", str)
STARTED = web.AppKey("started", float)


def add_probe_routes(app: web.Application, probe: Probe, metrics_token: str | None) -> None:
    """Mount /health/live, /health/ready and /metrics on ``app`` (no other auth applies to
    them: callers list PROBE_PATHS as open paths)."""
    app[PROBE], app[STARTED] = probe, time.time()
    if metrics_token:
        app[METRICS_TOKEN] = metrics_token
    app.router.add_get(LIVE_PATH, get_live)
    app.router.add_get(READY_PATH, get_ready)
    app.router.add_get(METRICS_PATH, get_metrics)


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, default=str), status=status, content_type="application/json"
    )


async def get_live(request: web.Request) -> web.Response:
    started = request.app[STARTED]
    return json_response(
        {"ok": True, "name": request.app[PROBE].name, "uptime_s": round(time.time() - started, 1)}
    )


async def get_ready(request: web.Request) -> web.Response:
    probe = request.app[PROBE]
    readiness = await probe.readiness()
    return json_response(readiness.body(probe.name), 200 if readiness.ready else 503)


async def get_metrics(request: web.Request) -> web.Response:
    expected = request.app.get(METRICS_TOKEN)
    if expected is not None:
        given = bearer_token(request.headers.get("Authorization", ""))
        if not given or not same_secret(given, expected):
            return web.Response(
                body=orjson.dumps({"error": "metrics need Authorization: Bearer <token>"}),
                status=401,
                content_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = await request.app[PROBE].metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
