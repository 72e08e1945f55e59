"""web/api.py during an outage and with oversized numbers: Redis refusing writes (READONLY,
MISCONF, ...) is a 503 with Retry-After, like Redis unreachable, while any other Redis error
stays a 500; a number in the query longer than any real one is a 400 that does not echo it."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from redis._parsers.base import BaseParser
from redis.exceptions import ReadOnlyError, ResponseError

from tests.unit.test_api import BrokenReads, FakeReads, FakeVerifier, client_for
from web.api import MAX_NUMBER_CHARS, Outcome, StockAdjustment, create_api


class BrokenActions:
    """Actions whose every call fails as the given error."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

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
        raise self.exc

    async def adjust_stock(self, change: StockAdjustment, *, actor: str) -> Outcome:
        raise self.exc


async def get(reads: Any, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    c = await client_for(create_api(reads, worker="w0", verifier=FakeVerifier()))
    try:
        resp = await c.get(path)
        return resp.status, dict(resp.headers), await resp.json()
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ReadOnlyError("You can't write against a read only replica."), "ReadOnlyError"),
        (
            BaseParser.parse_error("READONLY You can't write against a read only replica."),
            "READONLY",
        ),
        (
            ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
            "MISCONF",
        ),
        (BaseParser.parse_error("OOM command not allowed when used memory > 'maxmemory'."), "OOM"),
        (BaseParser.parse_error("LOADING Redis is loading the dataset in memory"), "LOADING"),
    ],
)
async def test_redis_refusing_writes_is_503_with_retry_after(exc: Exception, code: str) -> None:
    status, headers, body = await get(BrokenReads(exc), "/orders/O1")
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert f"Redis refuses writes ({code})" in body["error"]


async def test_another_redis_error_is_still_a_500() -> None:
    status, headers, body = await get(BrokenReads(ResponseError("ERR wrong")), "/orders/O1")
    assert status == 500 and "Retry-After" not in headers
    assert body == {"error": "internal error; the worker log has the details"}


async def test_an_action_during_a_broker_outage_is_503() -> None:
    reads = FakeReads({"O1": [{"order_id": "O1", "shop_id": "s"}]})
    app = create_api(
        reads,
        worker="w0",
        verifier=FakeVerifier(),
        actions=BrokenActions(KafkaConnectionError("no broker")),
    )
    c = await client_for(app)
    try:
        resp = await c.post("/orders/O1/cancel", json={})
        assert resp.status == 503 and "Retry-After" in resp.headers
        resp = await c.post("/stock/adjust", json={"sku": "S", "warehouse": "W", "delta": 1})
        assert resp.status == 503
    finally:
        await c.close()


@pytest.mark.parametrize("name", ["limit", "since"])
async def test_an_oversized_number_is_a_400_that_does_not_echo_it(name: str) -> None:
    reads = FakeReads()
    status, _, body = await get(reads, f"/held?{name}={'1' * 5000}")
    assert status == 400
    assert body["error"] == f"{name} must be at most {MAX_NUMBER_CHARS} characters, got 5000"
    assert reads.held_calls == []


async def test_an_oversized_cursor_is_a_400() -> None:
    reads = FakeReads()
    status, _, body = await get(reads, f"/held?after={'A' * 5000}")
    assert status == 400 and "after must be at most" in body["error"]
    assert reads.held_calls == []
