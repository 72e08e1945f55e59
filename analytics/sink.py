"""Batched, replay-safe ClickHouse sink for every fact: order events, DLQ records, fulfilment
commands, WMS events, after-sales requests and stock movements.

Delivery contract with the caller (a Faust agent): ``write`` returns only once every row of
the batch is in ClickHouse; until then it retries the same rows with capped, jittered
exponential backoff (core/retry.py). The agent commits Kafka offsets only after ``write``
returns, so a crash anywhere means a replay, and replays are harmless (deterministic ids +
replay-safe queries).

Only transport and server errors are retried. Anything else (a TypeError from a malformed
value, say) is a bug that retrying cannot fix, so it propagates to the caller at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from clickhouse_driver import errors as ch_errors

from analytics.client import QueryClient, connect, quote_ident
from analytics.facts import (
    COLUMNS,
    STOCK_MOVEMENTS,
    Fact,
    StockMovement,
    analytics_salt,
    rows_for,
    stock_movement_rows,
)
from analytics.schema import ensure_schema
from core.retry import Backoff
from core.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (ch_errors.Error, OSError, EOFError)

Rows = dict[str, list[tuple[Any, ...]]]


class SinkUnavailable(RuntimeError):
    """Raised only when ``max_attempts`` is set and exhausted (tests, one-shot CLI commands)."""


class FactSink:
    """One ClickHouse connection, used by one batch at a time.

    Metrics: ``rows_written`` (per table), ``batches_written``, ``retries``,
    ``consecutive_failures`` (0 when healthy), ``last_error``, ``outages`` (how many times
    ClickHouse went away), ``outage_s`` (how long the current one has lasted) and
    ``last_outage_s`` (how long the last finished one lasted). With ``counters`` (the
    worker's heartbeat Counter) they are mirrored there under ``sink_*`` at every attempt, so
    ``./oms status`` and the heartbeat show an outage while ``write`` is still retrying.
    """

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[Settings], QueryClient] = connect,
        *,
        setup: Callable[[Settings], object] | None = ensure_schema,
        salt: str | None = None,
        base_delay_s: float = 0.2,
        max_delay_s: float = 5.0,
        max_attempts: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        counters: Counter[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self._setup = setup  # database + migrations, run before the first insert of a connection
        self.salt = salt or analytics_salt(settings)  # OMS_ANALYTICS_SALT
        # The cap is a few seconds, not minutes: once ClickHouse is back the backlog should
        # start draining at once; the jitter keeps sinks from reconnecting in lockstep.
        self.backoff = Backoff(base_delay_s, max_delay_s)
        self.max_attempts = max_attempts
        self._sleep = sleep
        self._db = quote_ident(settings.clickhouse_database)
        self._client: QueryClient | None = None
        self._lock = asyncio.Lock()
        self.rows_written: Counter[str] = Counter()
        self.batches_written = 0
        self.retries = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.outages = 0
        self.last_outage_s = 0.0
        self._outage_started: float | None = None  # clock() at the first failure of an outage
        self._counters = counters
        self._clock = clock

    @property
    def outage_s(self) -> float:
        """Seconds since the first failed attempt of the current outage; 0 when healthy."""
        if self._outage_started is None:
            return 0.0
        return max(0.0, self._clock() - self._outage_started)

    async def write(self, items: Sequence[Fact]) -> None:
        """Insert all facts of ``items`` (order events, DLQ records, fulfilment commands, WMS
        events, after-sales requests): one INSERT per table, retried until it lands."""
        if not items:
            return
        rows = await asyncio.to_thread(rows_for, items, salt=self.salt)
        await self._write_rows(rows)

    async def write_stock_movements(
        self, movements: Iterable[StockMovement | Mapping[str, Any]]
    ) -> None:
        """Same contract as ``write``, for the stock layer's ledger entries."""
        rows = stock_movement_rows(movements)
        if rows:
            await self._write_rows({STOCK_MOVEMENTS: rows})

    async def close(self) -> None:
        async with self._lock:
            self._drop_client()

    async def _write_rows(self, rows: Rows) -> None:
        pending = {table: r for table, r in rows.items() if r}
        if not pending:
            return
        async with self._lock:
            attempt = 0
            while pending:
                try:
                    await asyncio.to_thread(self._insert_pending, pending)
                except RETRYABLE as exc:
                    # The connection may be half-closed or mid-packet: never reuse it.
                    self._drop_client()
                    attempt += 1
                    self._on_failure(exc)
                    if self.max_attempts is not None and attempt >= self.max_attempts:
                        raise SinkUnavailable(
                            f"ClickHouse write failed {attempt} times: {self.last_error}"
                        ) from exc
                    delay = self.backoff.delay(attempt)
                    # One line per attempt, no traceback: an outage of minutes must not bury
                    # the log, and the error text is already redacted of values.
                    log.warning(
                        "ClickHouse write failed (attempt %d, down %.1fs, %s); "
                        "retrying %d tables in %.2fs",
                        attempt,
                        self.outage_s,
                        self.last_error,
                        len(pending),
                        delay,
                    )
                    await self._sleep(delay)
                except asyncio.CancelledError:
                    # The worker thread may still be using the client: abandon, don't share it.
                    self._client = None
                    raise
                except BaseException:
                    # A bug (not retried), but the connection may hold a half-sent INSERT.
                    self._drop_client()
                    raise
            self.batches_written += 1
            self._on_success()

    def _on_failure(self, exc: BaseException) -> None:
        """Count one failed attempt; the first of a run starts the outage clock."""
        if self._outage_started is None:
            self._outage_started = self._clock()
            self.outages += 1
        self.retries += 1
        self.consecutive_failures += 1
        self.last_error = describe_error(exc)
        self._publish()

    def _on_success(self) -> None:
        """End the outage (if any): remember how long it lasted and say so once."""
        if self._outage_started is not None:
            self.last_outage_s = self.outage_s
            log.info(
                "ClickHouse writes recovered after %d failed attempts over %.1fs",
                self.consecutive_failures,
                self.last_outage_s,
            )
            self._outage_started = None
        self.consecutive_failures = 0
        self._publish()

    def _publish(self) -> None:
        """Mirror the metrics into the heartbeat counters (JSON numbers, read by status)."""
        if self._counters is None:
            return
        c = self._counters
        c["sink_retries"] = self.retries
        c["sink_consecutive_failures"] = self.consecutive_failures
        c["sink_outages"] = self.outages
        c["sink_outage_s"] = round(self.outage_s)
        c["sink_last_outage_s"] = round(self.last_outage_s)

    def _insert_pending(self, pending: Rows) -> None:
        """Runs in a worker thread; removes each table from ``pending`` once it is inserted,
        so a retry after a partial failure does not resend what already landed."""
        client = self._get_client()
        for table in list(pending):
            rows = pending[table]
            cols = ", ".join(COLUMNS[table])
            client.execute(
                f"INSERT INTO {self._db}.{table} ({cols}) VALUES", rows, types_check=False
            )
            self.rows_written[table] += len(rows)
            del pending[table]

    def _get_client(self) -> QueryClient:
        """The open client, or a new one (schema ensured first: ClickHouse may have come back
        empty, or this is the first connection of the process)."""
        if self._client is None:
            if self._setup is not None:
                self._setup(self.settings)
            self._client = self._client_factory(self.settings)
        return self._client

    def _drop_client(self) -> None:
        """Forget the client first (the next attempt reconnects even if disconnect fails)."""
        client, self._client = self._client, None
        disconnect = getattr(client, "disconnect", None)
        if disconnect is not None:
            try:
                disconnect()
            except Exception:  # already broken; nothing to save
                log.debug("disconnect failed", exc_info=True)


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + "|" + r'"(?:[^"\\]|\\.)*"')


def describe_error(exc: BaseException) -> str:
    """One short line for logs and ``last_error``: the error class and its first line, with
    quoted literals blanked (a server error can echo a value of the row it choked on, and a
    row can carry a buyer's city or a DLQ payload excerpt)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _QUOTED.sub("'…'", text)[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
