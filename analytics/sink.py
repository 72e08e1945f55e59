"""Batched, replay-safe ClickHouse sink for order events, DLQ records and stock movements.

Delivery contract with the caller (a Faust agent): ``write`` returns only once every row of
the batch is in ClickHouse; until then it retries the same rows with bounded exponential
backoff. The agent commits Kafka offsets only after ``write`` returns, so a crash anywhere
means a replay, and replays are harmless (deterministic ids + replay-safe queries).

Only transport and server errors are retried. Anything else (a TypeError from a malformed
value, say) is a bug that retrying cannot fix, so it propagates to the caller at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from clickhouse_driver import errors as ch_errors

from analytics.client import QueryClient, connect, ensure_schema, quote_ident
from analytics.facts import (
    COLUMNS,
    DEFAULT_BUYER_SALT,
    STOCK_MOVEMENTS,
    StockMovement,
    rows_for,
    stock_movement_rows,
)
from ops.settings import Settings
from streams.messages import DlqRecord, OrderEvent

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (ch_errors.Error, OSError, EOFError)

Rows = dict[str, list[tuple[Any, ...]]]


class SinkUnavailable(RuntimeError):
    """Raised only when ``max_attempts`` is set and exhausted (tests, one-shot CLI commands)."""


class FactSink:
    """One ClickHouse connection, used by one batch at a time.

    Metrics: ``rows_written`` (per table), ``batches_written``, ``retries``,
    ``consecutive_failures`` (0 when healthy) and ``last_error``.
    """

    def __init__(
        self,
        settings: Settings,
        client_factory: Callable[[Settings], QueryClient] = connect,
        *,
        setup: Callable[[Settings], object] | None = ensure_schema,
        salt: str | None = None,
        base_delay_s: float = 0.2,
        max_delay_s: float = 30.0,
        max_attempts: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self._setup = setup  # database + migrations, run before the first insert of a connection
        self.salt = salt or getattr(settings, "analytics_salt", None) or DEFAULT_BUYER_SALT
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
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

    async def write(self, items: Sequence[OrderEvent | DlqRecord]) -> None:
        """Insert all facts of ``items``: one INSERT per table, retried until it lands."""
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

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): exponential, capped, with jitter."""
        delay = min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt - 1, 30)))
        return delay * random.uniform(0.5, 1.0)

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
                    attempt += 1
                    self.retries += 1
                    self.consecutive_failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                    self._drop_client()
                    if self.max_attempts is not None and attempt >= self.max_attempts:
                        raise SinkUnavailable(
                            f"ClickHouse write failed {attempt} times: {self.last_error}"
                        ) from exc
                    delay = self.backoff(attempt)
                    log.warning(
                        "ClickHouse write failed (attempt %d, %s); retrying %d tables in %.2fs",
                        attempt,
                        self.last_error,
                        len(pending),
                        delay,
                    )
                    await self._sleep(delay)
                except asyncio.CancelledError:
                    # The worker thread may still be using the client: abandon, don't share it.
                    self._client = None
                    raise
            self.batches_written += 1
            self.consecutive_failures = 0

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
        if self._client is None:
            if self._setup is not None:
                self._setup(self.settings)
            self._client = self._client_factory(self.settings)
        return self._client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        disconnect = getattr(client, "disconnect", None)
        if disconnect is not None:
            try:
                disconnect()
            except Exception:  # already broken; nothing to save
                log.debug("disconnect failed", exc_info=True)
