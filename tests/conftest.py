"""Fixtures: the isolated test stack (own ports, data under .oms/test), started once per session
by the first integration test that needs it and stopped at the end."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator

import pytest

from ops.cli import test_environment

# Plain `pytest` must never touch a developer's demo stack: default to the test stack's ports.
for _key, _value in test_environment().items():
    os.environ.setdefault(_key, _value)
# The bootstrap admin of the test stack (core/access.py): random per run, never in the repository;
# the workers and the dashboard the tests start inherit it.
os.environ.setdefault("OMS_ADMIN_TOKEN", secrets.token_urlsafe(32))

from core.settings import Settings, get_settings, reset_settings  # noqa: E402

reset_settings()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def infra(base_settings: Settings) -> Iterator[Settings]:
    """Broker, Redis and ClickHouse, without workers."""
    from ops import stack
    from ops.prepare import prepare_infra

    stack.up(base_settings, with_workers=False)
    reset_test_data(base_settings)
    prepare_infra(base_settings)
    yield base_settings
    stack.down(base_settings)


def reset_test_data(settings: Settings) -> None:
    """The test stack's data dir survives runs (Redis AOF, ClickHouse files): start clean."""
    from analytics.client import drop_database
    from state.redis import connect

    assert "test" in str(settings.home), "refusing to wipe a non-test stack"
    connect(settings).flushall()
    drop_database(settings)  # with the configured user, password and TLS


@pytest.fixture(scope="session")
def running_stack(infra: Settings) -> Iterator[Settings]:
    """The infra plus the Faust workers and the fact sink process (or workers that run the
    sink, with OMS_SINK_IN_WORKER=true), for end-to-end tests."""
    from ops import stack

    stack.up(infra)
    yield infra
    stack.stop_workers(infra)


@pytest.fixture
def redis_settings(infra: Settings) -> Settings:
    """The test Redis with a key prefix of its own, so tests never see each other's stock."""
    return infra.model_copy(update={"redis_prefix": f"t{uuid.uuid4().hex[:8]}"})


@pytest.fixture(scope="module")
def clickhouse_settings(infra: Settings) -> Settings:
    return infra
