"""Customer service finds orders (``./oms orders find``, ``GET /orders?...``) in the ClickHouse
facts, which hold every order's history, not only the live ones Redis keeps: by buyer id, by
phone, by tracking number, by sku, by creation time and shop.

Personal data is never in ClickHouse in clear, so buyer and phone are looked up by the keyed
hashes the sink stores (``buyer_hash``; ``phone_hash`` / ``phone_key`` of migration 0008, keyed
by OMS_ANALYTICS_SALT: analytics/facts.py). A plain phone finds the orders that carry it plain,
and those whose channel sent it masked with the same 3 + 4 digits; a masked phone
(``138****8000``) finds both by those digits, so it may find another buyer's order that
shares them; an encrypted phone cannot be matched at all (only the platform reads it).
Tracking numbers come from the WMS events (a merged parcel's number finds the order whose id
the WMS answered about). Every query is bounded: ``limit`` rows, and ClickHouse stops it past
``SCAN_ROWS`` rows read or ``SCAN_SECONDS`` (an error, never a silently partial answer).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analytics.client import QueryClient, quote_ident
from analytics.facts import buyer_id_hash, phone_keys
from core.privacy import MAX_PHONE_CHARS, is_ciphertext, phone_parts
from streams.models import ShopKey, ShopKeyError

MAX_SEARCH_LIMIT = 500
DEFAULT_SEARCH_LIMIT = 100
MAX_TERM_CHARS = 128  # a buyer id, a tracking number or a sku
SCAN_ROWS = 20_000_000  # rows one search may read, subqueries included
SCAN_SECONDS = 10
OVER_BUDGET = frozenset({158, 159})  # ClickHouse TOO_MANY_ROWS, TIMEOUT_EXCEEDED


class SearchError(ValueError):
    """A search that cannot be run as asked, with the reason people see (CLI exit 2, API 400)."""


@dataclass(frozen=True)
class OrderSearch:
    """What to look for; every given part must match. Checked by ``order_search``."""

    buyer: str = ""  # the channel's buyer id (Taobao nick, JD pin, open id)
    phone: str = ""  # plain or masked (138****8000)
    tracking: str = ""
    sku: str = ""
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    shop: str = ""  # CHANNEL/SHOP
    limit: int = DEFAULT_SEARCH_LIMIT


def order_search(
    *,
    buyer: str = "",
    phone: str = "",
    tracking: str = "",
    sku: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    shop: str = "",
    limit: int = DEFAULT_SEARCH_LIMIT,
) -> OrderSearch:
    """A checked search: at least one filter, each bounded and of its form, times tz-aware
    and in order, 1 <= limit <= MAX_SEARCH_LIMIT."""
    found = OrderSearch(
        buyer=check_term(buyer, "buyer"),
        phone=check_phone(phone),
        tracking=check_term(tracking, "tracking"),
        sku=check_term(sku, "sku"),
        since=check_time(since, "since"),
        until=check_time(until, "until"),
        shop=check_shop(shop),
        limit=limit,
    )
    if not any((found.buyer, found.phone, found.tracking, found.sku, found.shop)) and not (
        found.since or found.until
    ):
        raise SearchError("give at least one of buyer, phone, tracking, sku, since, until, shop")
    if found.since and found.until and found.since >= found.until:
        raise SearchError("since must be before until")
    if not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise SearchError(f"limit must be from 1 to {MAX_SEARCH_LIMIT}, got {limit}")
    return found


def check_term(value: str, name: str) -> str:
    """An id-like term: trimmed, 1 to MAX_TERM_CHARS printable characters without spaces."""
    value = value.strip()
    if len(value) > MAX_TERM_CHARS:
        raise SearchError(f"{name} has at most {MAX_TERM_CHARS} characters")
    if any(c.isspace() or unicodedata.category(c)[0] == "C" for c in value):
        raise SearchError(f"{name} must have no spaces or control characters")
    return value


def check_phone(value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_PHONE_CHARS:
        raise SearchError(f"phone has at most {MAX_PHONE_CHARS} characters")
    if is_ciphertext(value):
        raise SearchError("an encrypted phone cannot be matched: only the platform can read it")
    if phone_parts(value) is None:
        raise SearchError(
            "phone must be a number of 7 digits or more, or masked keeping its first 3 and "
            "last 4 digits (138****8000)"
        )
    return value


def check_time(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise SearchError(f"{name} must carry a time zone")
    return value


def check_shop(value: str) -> str:
    if not value:
        return ""
    if len(value) > 2 * MAX_TERM_CHARS:
        raise SearchError("shop must be CHANNEL/SHOP (a shop id has at most 128 characters)")
    try:
        return str(ShopKey.parse(value))
    except ShopKeyError as exc:
        raise SearchError(f"shop: {exc}") from None


def search_query(
    search: OrderSearch, database: str, salt: str, shops: frozenset[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """The SQL and its parameters: one row per order (its latest snapshot), newest first.
    ``shops``: only orders of these shop ids (a token's scope; None: every shop)."""
    db = quote_ident(database)
    where: list[str] = []
    params: dict[str, Any] = {"limit": search.limit}
    if search.buyer:
        where.append("buyer_hash = %(buyer)s")
        params["buyer"] = buyer_id_hash(search.buyer, salt)
    if search.phone:
        full, partial = phone_keys(search.phone, salt)
        params["phone_key"] = partial
        if full:  # plain: the same number plain, or masked with the same digits kept
            where.append(
                "(phone_hash = %(phone)s OR (phone_hash = '' AND phone_key = %(phone_key)s))"
            )
            params["phone"] = full
        else:
            where.append("phone_key = %(phone_key)s")
    if search.sku:
        where.append(f"order_id IN (SELECT order_id FROM {db}.order_lines WHERE sku = %(sku)s)")
        params["sku"] = search.sku
    if search.tracking:
        where.append(
            f"order_id IN (SELECT order_id FROM {db}.wms_events "
            "WHERE tracking_number = %(tracking)s)"
        )
        params["tracking"] = search.tracking
    if search.since:
        where.append("created_at >= toDateTime(%(since)s)")
        params["since"] = epoch(search.since)
    if search.until:
        where.append("created_at < toDateTime(%(until)s)")
        params["until"] = epoch(search.until)
    if search.shop:
        key = ShopKey.parse(search.shop)
        where.append("channel = %(channel)s AND shop_id = %(shop_id)s")
        params.update(channel=key.channel.value, shop_id=key.shop)
    if shops is not None:
        where.append("has(%(shops)s, shop_id)")
        params["shops"] = sorted(shops)
    sql = f"""
SELECT order_id, argMax(channel, rev) AS ch, argMax(shop_id, rev) AS shop,
    argMax(external_id, rev) AS ext, min(created_at) AS created,
    argMax(total, rev) AS order_total, argMax(currency, rev) AS cur
FROM {db}.orders
WHERE {" AND ".join(where) or "1"}
GROUP BY order_id
ORDER BY created DESC, order_id
LIMIT %(limit)s
"""
    return sql, params


def search_orders(
    client: QueryClient,
    database: str,
    search: OrderSearch,
    salt: str,
    shops: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """The orders ``search`` finds, newest first, as rows with no personal data (ids, shop,
    creation time, total); ClickHouse refuses a search that would read past the scan budget."""
    sql, params = search_query(search, database, salt, shops)
    try:
        rows = client.execute(
            sql,
            params,
            settings={
                "max_rows_to_read": SCAN_ROWS,
                "read_overflow_mode": "throw",
                "max_execution_time": SCAN_SECONDS,
            },
        )
    except Exception as exc:
        if getattr(exc, "code", None) in OVER_BUDGET:
            raise SearchError(
                "the search would read too much: narrow it (since/until, shop, another filter)"
            ) from None
        raise
    return [
        {
            "order_id": order_id,
            "channel": channel,
            "shop_id": shop_id,
            "external_id": external_id,
            "created_at": as_utc(created).isoformat(),
            "total": str(total),
            "currency": currency,
        }
        for order_id, channel, shop_id, external_id, created, total, currency in rows
    ]


def epoch(value: datetime) -> int:
    return int(value.timestamp())


def as_utc(value: datetime) -> datetime:
    """clickhouse-driver gives naive UTC for DateTime('UTC') on some versions: say so."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
