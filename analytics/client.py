"""ClickHouse connections (native protocol via clickhouse-driver).

No per-session settings are sent: Decimal is generally available on 18.16 (the setting
``allow_experimental_decimal_type`` does not even exist there), and an unknown setting would
make every query fail on one of the two server versions we support.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from clickhouse_driver import Client

from core.security import clickhouse_kwargs
from core.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class QueryClient(Protocol):
    """The slice of ``clickhouse_driver.Client`` the analytics code uses (a chdb shim fits too)."""

    def execute(self, query: str, params: Any = None, **kwargs: Any) -> Any: ...


def quote_ident(name: str) -> str:
    """Backquoted identifier; only plain names are allowed so nothing needs escaping."""
    if not _IDENT.match(name):
        raise ValueError(f"invalid ClickHouse identifier: {name!r}")
    return f"`{name}`"


def connect(settings: Settings, *, database: str | None = None) -> Client:
    """A lazily connecting client; the database must exist (see ``ensure_database``)."""
    return Client(
        **clickhouse_kwargs(settings),  # host, port, user, password, TLS
        database=database or settings.clickhouse_database,
        client_name="oms-analytics",
        connect_timeout=5,
        send_receive_timeout=60,
        sync_request_timeout=5,
    )


def ensure_database(settings: Settings) -> None:
    """Create the configured database."""
    _on_default(settings, "CREATE DATABASE IF NOT EXISTS")


def drop_database(settings: Settings) -> None:
    """Drop the configured database (a bench namespace's, a test module's own)."""
    _on_default(settings, "DROP DATABASE IF EXISTS")


def _on_default(settings: Settings, statement: str) -> None:
    """``statement`` on the configured database, connected to ``default`` (it may not exist)."""
    client = connect(settings, database="default")
    try:
        client.execute(f"{statement} {quote_ident(settings.clickhouse_database)}")
    finally:
        client.disconnect()
