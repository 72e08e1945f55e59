"""Fixtures of the integration tests that drive the order pipeline without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.route import RoutingTable
from streams.channels.base import AdapterContext


@pytest.fixture
async def pipeline(
    redis_settings: Settings, base_settings: Settings
) -> AsyncIterator[OrderPipeline]:
    """The order pipeline on the test Redis under a prefix of its own, without promotions
    (gifts have their own tests; here every order is its own lines)."""
    client = aioredis.Redis.from_url(redis_settings.redis_url, decode_responses=True)
    routing = RoutingTable.load(base_settings.config_dir / "warehouses.toml")
    pipe = OrderPipeline(redis_settings, client, routing, AdapterContext())
    pipe.decisions.promotions = None
    yield pipe
    await client.aclose()
