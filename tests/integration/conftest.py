"""Fixtures of the integration tests that drive the order pipeline without a broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from agents.pipeline import OrderPipeline
from core.settings import Settings
from order.route import RoutingTable
from streams.channels.base import AdapterContext
from tests.clickhouse_db import own_database


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


@pytest.fixture
def facts_db(clickhouse_settings: Settings, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """A ClickHouse database of the test module's own (tests/clickhouse_db.py)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    yield from own_database(clickhouse_settings, f"oms_test_{name}_facts")
