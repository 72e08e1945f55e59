"""Heartbeat keys: each long-running process refreshes one in Redis (TTL 10 s, every 2 s), and
`./oms status`, the launcher and the readiness checks read them."""

from __future__ import annotations

from core.settings import Settings


def worker_heartbeat_key(settings: Settings, name: str) -> str:
    """Redis key a worker refreshes (TTL 10 s, every 2 s) with {"pid","ready","partitions","ts"}."""
    return f"{settings.redis_prefix}:worker:{name}"


def wms_sim_heartbeat_key(settings: Settings) -> str:
    """Redis key the WMS simulator refreshes (TTL 10 s, every 2 s) with
    {"pid","ready","ts","pending","counters"}; outside ``worker:`` so it is not a worker."""
    return f"{settings.redis_prefix}:wms-sim"


def sink_heartbeat_key(settings: Settings) -> str:
    """Redis key the fact sink process refreshes (TTL 10 s, every 2 s) with
    {"pid","ready","partitions","ts","counters"}; outside ``worker:`` so it is not a worker."""
    return f"{settings.redis_prefix}:sink"
