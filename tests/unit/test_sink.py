"""FactSink's retry loop against a fake ClickHouse client: pure logic, no server.

What the facts agent relies on while ClickHouse is away: a broken connection is dropped and a
new one opened, the backoff is capped at a few seconds with jitter, every attempt is counted
(and mirrored into the worker's heartbeat counters), the outage is timed, each attempt logs
one warning without a traceback or row values, and rows that already landed are never resent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from clickhouse_driver import errors as ch_errors

from analytics.facts import COLUMNS, DLQ, ORDER_EVENTS
from analytics.sink import FactSink, SinkUnavailable, describe_error
from core.settings import Settings

SETTINGS = Settings(clickhouse_database="oms_unit")


def row(table: str, n: int) -> tuple[Any, ...]:
    """A placeholder row of the table's width (the fake client only counts and records)."""
    return tuple(f"{table}-{n}-{i}" for i in range(len(COLUMNS[table])))


class FakeClient:
    """Records INSERTs; ``fail`` holds exceptions to raise on the next executes, in turn."""

    def __init__(self, store: dict[str, list[tuple[Any, ...]]], fail: list[BaseException]) -> None:
        self.store = store
        self.fail = fail
        self.disconnected = False

    def execute(self, query: str, params: Any = None, **_kw: Any) -> list[tuple[Any, ...]]:
        assert not self.disconnected, "a dropped client was used again"
        if self.fail:
            raise self.fail.pop(0)
        table = query.split(" INTO ", 1)[1].split(" ", 1)[0].split(".", 1)[1]
        self.store.setdefault(table, []).extend(params)
        return []

    def disconnect(self) -> None:
        self.disconnected = True


class FakeServer:
    """A ClickHouse that refuses ``down`` connections, then accepts; remembers every client."""

    def __init__(self, down: int = 0, execute_fail: list[BaseException] | None = None) -> None:
        self.down = down
        self.execute_fail = execute_fail or []
        self.store: dict[str, list[tuple[Any, ...]]] = {}
        self.clients: list[FakeClient] = []
        self.connects = 0

    def __call__(self, _settings: Settings) -> FakeClient:
        self.connects += 1
        if self.down > 0:
            self.down -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        client = FakeClient(self.store, self.execute_fail)
        self.clients.append(client)
        return client


class FakeTime:
    """A clock that only the fake sleep moves, so outage durations are exact."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def make_sink(server: FakeServer, t: FakeTime, **kw: Any) -> FactSink:
    return FactSink(
        SETTINGS,
        server,
        setup=None,
        sleep=t.sleep,
        clock=t.clock,
        **kw,  # type: ignore[arg-type]
    )


async def test_broken_connection_is_dropped_and_reopened() -> None:
    server = FakeServer(execute_fail=[EOFError("Unexpected EOF while reading bytes")])
    sink = make_sink(server, FakeTime())
    await sink._write_rows({ORDER_EVENTS: [row(ORDER_EVENTS, 1), row(ORDER_EVENTS, 2)]})
    assert server.connects == 2
    assert server.clients[0].disconnected and not server.clients[1].disconnected
    assert server.store[ORDER_EVENTS] == [row(ORDER_EVENTS, 1), row(ORDER_EVENTS, 2)]
    assert sink.retries == 1 and sink.consecutive_failures == 0 and sink.batches_written == 1


async def test_outage_is_counted_timed_and_mirrored_into_heartbeat_counters() -> None:
    server = FakeServer(down=7)
    t = FakeTime()
    counters: Counter[str] = Counter()
    sink = make_sink(server, t, counters=counters)
    seen: list[tuple[int, int, int]] = []  # during the outage, as the heartbeat would see it

    async def watching_sleep(delay: float) -> None:
        seen.append(
            (
                sink.consecutive_failures,
                counters["sink_consecutive_failures"],
                counters["sink_retries"],
            )
        )
        await t.sleep(delay)

    sink._sleep = watching_sleep
    await sink._write_rows({DLQ: [row(DLQ, 1)]})

    assert seen == [(n, n, n) for n in range(1, 8)]
    assert sink.retries == 7 and sink.consecutive_failures == 0 and sink.outages == 1
    assert sink.outage_s == 0.0
    assert sink.last_outage_s == pytest.approx(sum(t.sleeps))
    assert counters["sink_retries"] == 7 and counters["sink_consecutive_failures"] == 0
    assert counters["sink_outages"] == 1
    assert counters["sink_last_outage_s"] == round(sum(t.sleeps))
    assert "ConnectionRefusedError" in (sink.last_error or "")
    assert server.store[DLQ] == [row(DLQ, 1)]

    # A second outage is a new one: counted again, retries keep adding up.
    server.down = 2
    server.execute_fail.append(OSError("broken pipe"))
    await sink._write_rows({DLQ: [row(DLQ, 2)]})
    assert sink.outages == 2 and sink.retries == 10 and counters["sink_retries"] == 10
    assert server.store[DLQ] == [row(DLQ, 1), row(DLQ, 2)]


def test_backoff_is_capped_at_a_few_seconds() -> None:
    """The schedule itself is core/retry.py's (tests/unit/test_retry.py); the sink's default cap
    is a few seconds, so a backlog drains soon after recovery."""
    assert 1.0 <= FactSink(SETTINGS, setup=None).backoff.cap_s <= 5.0


@pytest.mark.parametrize(
    "refusal",
    [
        ch_errors.ServerException("Too many parts (300)", code=ch_errors.ErrorCodes.TOO_MANY_PARTS),
        ch_errors.ServerException(
            "Memory limit (total) exceeded", code=ch_errors.ErrorCodes.MEMORY_LIMIT_EXCEEDED
        ),
        ch_errors.NetworkError("Connection reset by peer"),
        ch_errors.SocketTimeoutError("timed out"),
    ],
    ids=["too_many_parts", "memory_limit", "network", "socket_timeout"],
)
async def test_clickhouse_refusing_inserts_is_waited_out(refusal: Exception) -> None:
    """A server refusing inserts for a while (merges behind, memory full) or a cut connection
    is an outage like a refused connection: retried until the rows land, never raised."""
    server = FakeServer(execute_fail=[refusal] * 5)
    sink = make_sink(server, FakeTime())
    await sink._write_rows({DLQ: [row(DLQ, 1)]})
    assert server.store[DLQ] == [row(DLQ, 1)] and sink.retries == 5


async def test_sleeps_follow_backoff_and_never_exceed_the_cap() -> None:
    t = FakeTime()
    sink = make_sink(FakeServer(down=12), t, base_delay_s=0.1, max_delay_s=2.0)
    await sink._write_rows({ORDER_EVENTS: [row(ORDER_EVENTS, 1)]})
    assert len(t.sleeps) == 12
    for attempt, delay in enumerate(t.sleeps, start=1):
        assert 0 <= delay <= min(2.0, 0.1 * 2 ** (attempt - 1))


async def test_one_warning_per_attempt_without_traceback_or_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Zhang San, 13800138000"
    server = FakeServer(
        execute_fail=[OSError(f"Cannot parse '{secret}' in row 3") for _ in range(3)]
    )
    sink = make_sink(server, FakeTime())
    with caplog.at_level(logging.INFO, logger="analytics.sink"):
        await sink._write_rows({ORDER_EVENTS: [row(ORDER_EVENTS, 1)]})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in (sink.last_error or "")
    assert "Cannot parse" in (sink.last_error or "")
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_describe_error_is_one_short_line() -> None:
    text = describe_error(ConnectionError("line one 'buyer@example.com'\nline two"))
    assert text == "ConnectionError: line one '…'"
    assert describe_error(EOFError()) == "EOFError"
    assert len(describe_error(OSError("x" * 5000))) < 400


async def test_partial_failure_resends_only_the_tables_not_yet_written() -> None:
    server = FakeServer()
    sink = make_sink(server, FakeTime())
    rows = {ORDER_EVENTS: [row(ORDER_EVENTS, 1)], DLQ: [row(DLQ, 1)]}
    # The first INSERT lands, the second fails on a reset connection.
    original = FakeClient.execute
    calls = {"n": 0}

    def flaky(self: FakeClient, query: str, params: Any = None, **kw: Any) -> list[tuple[Any, ...]]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionResetError(104, "Connection reset by peer")
        return original(self, query, params, **kw)

    FakeClient.execute = flaky  # type: ignore[method-assign]
    try:
        await sink._write_rows(rows)
    finally:
        FakeClient.execute = original  # type: ignore[method-assign]
    assert server.store == {ORDER_EVENTS: [row(ORDER_EVENTS, 1)], DLQ: [row(DLQ, 1)]}
    assert sink.rows_written == Counter({ORDER_EVENTS: 1, DLQ: 1})
    assert sink.retries == 1 and server.connects == 2


async def test_bounded_attempts_give_up_and_keep_counting() -> None:
    sink = make_sink(FakeServer(down=99), FakeTime(), max_attempts=4)
    with pytest.raises(SinkUnavailable):
        await sink._write_rows({DLQ: [row(DLQ, 1)]})
    assert sink.retries == 4 and sink.consecutive_failures == 4 and sink.outage_s > 0


async def test_a_bug_is_not_retried_and_its_connection_is_dropped() -> None:
    server = FakeServer(execute_fail=[TypeError("bad value")])
    sink = make_sink(server, FakeTime())
    with pytest.raises(TypeError):
        await sink._write_rows({DLQ: [row(DLQ, 1)]})
    assert sink.retries == 0 and server.clients[0].disconnected
    await sink._write_rows({DLQ: [row(DLQ, 1)]})  # the next batch reconnects
    assert server.connects == 2 and server.store[DLQ] == [row(DLQ, 1)]


async def test_cancel_while_backing_off_leaves_the_sink_usable() -> None:
    server = FakeServer(down=1000)

    async def real_short_sleep(_delay: float) -> None:
        await asyncio.sleep(0.01)

    sink = FactSink(SETTINGS, server, setup=None, sleep=real_short_sleep)  # type: ignore[arg-type]
    task = asyncio.create_task(sink._write_rows({DLQ: [row(DLQ, 1)]}))

    async def three_retries() -> None:
        while sink.retries < 3:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(three_retries(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.down = 0
    await asyncio.wait_for(sink._write_rows({DLQ: [row(DLQ, 1)]}), timeout=10)
    assert server.store[DLQ] == [row(DLQ, 1)]
