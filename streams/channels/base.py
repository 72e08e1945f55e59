"""What every channel adapter shares: decoding, error reasons, sku mapping, money and time parsing.

An adapter is a pure function ``(payload dict, AdapterContext) -> Order``; it raises
``AdapterError`` with a machine-readable reason for anything it cannot accept, so the
normalise stage can turn it into a DLQ record instead of crashing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypeVar

import orjson
from pydantic import ValidationError

from core.privacy import is_ciphertext
from streams.messages import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES  # re-exported
from streams.messages import DlqReason
from streams.models import (
    MAX_CODE_CHARS,
    MAX_LINE_QUANTITY,
    MAX_MONEY,
    MAX_ORDER_LINES,
    MAX_TEXT_CHARS,
    Address,
    BundleRef,
    Buyer,
    Channel,
    ChannelStatus,
    Order,
    OrderLine,
    Payment,
    PaymentStatus,
    Presale,
    PresaleStage,
    ProtectedReceiver,
    make_order_id,
)
from streams.sku_map import Component, split_amount
from streams.sku_map import SkuMap as SkuMap  # re-exported: adapters' callers build one

MAX_PAYLOAD_BYTES = 1_000_000  # one order; a 10 MB "order" is an attack or a bug
MAX_DEPTH = 32
# Every output crosses Kafka, whose producers refuse a message above MAX_MESSAGE_BYTES
# (streams/messages.py). The received and updated events carry the whole order, so an accepted
# order must stay well below that: a payload under MAX_PAYLOAD_BYTES can still map to more
# (500 lines of canonical fields, raw extras).
MAX_ORDER_BYTES = 512 * 1024
# A channel field with no canonical home rides on the order (``raw``) into Redis and onto every
# event of its life. One bigger than this as JSON stays on the raw topic only and is named in
# ``raw["omitted"]``: a 200 KB blob would otherwise be copied into each of them.
MAX_EXTRA_BYTES = 8 * 1024
# A number or a time written as text is never longer than this ('2024-06-18T10:15:00.123456+08:00'
# is 32): a longer one is refused before Decimal, int() or fromisoformat() works through it.
MAX_SCALAR_CHARS = 64
# Objects in a list that is not the order's lines (coupons, discount allocations, shipping
# lines): the lines themselves stop at MAX_ORDER_LINES. Checked before any item is mapped, so
# 9,000 sub-orders are one length check, not 0.9 s of mapping an order refused at the end.
MAX_LIST_OBJECTS = 5_000
# Order times an OMS can act on. Before 2000 is an epoch-zero or year-1 default, more than a
# day ahead a wrong clock or milliseconds sent as seconds; ClickHouse's DateTime (1970-2105)
# could not even hold most of them, and timers, windows and reports would all misfire.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


class AdapterError(Exception):
    """An input that cannot become an Order; ``reason`` is the DLQ reason code."""

    def __init__(self, reason: DlqReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AdapterContext:
    """What an adapter may need besides the payload."""

    sku_map: SkuMap = field(default_factory=SkuMap)
    shop_id: str = ""  # from a message header or the CLI, for channels whose payload lacks it
    default_shop: Callable[[Channel], str] = lambda channel: f"{channel.value}-default"

    def shop_for(self, channel: Channel, from_payload: str | None = None) -> str:
        # Stripped like every id: 'acme.myshopify.com\n' must not become another shop.
        return (from_payload or "").strip() or self.shop_id.strip() or self.default_shop(channel)


class Adapter(Protocol):
    channel: Channel

    def to_order(self, payload: dict[str, Any], ctx: AdapterContext) -> Order: ...


def decode_payload(data: bytes) -> dict[str, Any]:
    """Bytes -> JSON object, with a specific reason for each way it can go wrong."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise AdapterError(
            DlqReason.PAYLOAD_TOO_LARGE, f"{len(data)} bytes > limit {MAX_PAYLOAD_BYTES}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdapterError(DlqReason.INVALID_UTF8, f"byte {exc.start}: {exc.reason}") from exc
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # well-formed, only deeper than orjson goes (1024)
            raise _too_deep() from None
        raise AdapterError(DlqReason.MALFORMED_JSON, str(exc)[:300]) from exc
    if not isinstance(value, dict):
        raise AdapterError(DlqReason.NOT_AN_OBJECT, f"top level is {type(value).__name__}")
    if _may_nest_deeply(data) and _depth(value) > MAX_DEPTH:
        raise _too_deep()
    return value


def _too_deep() -> AdapterError:
    return AdapterError(DlqReason.INVALID_FIELD, f"nesting deeper than {MAX_DEPTH}")


def _may_nest_deeply(data: bytes) -> bool:
    """Nesting needs an opening bracket per level: with no more than MAX_DEPTH of them in the
    bytes (brackets inside strings included) the tree walk below cannot fail, and a byte count
    costs a fraction of it on the hot path."""
    return data.count(b"{") + data.count(b"[") > MAX_DEPTH


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def require(obj: Mapping[str, Any], key: str, where: str = "") -> Any:
    """A field the channel always sends; absent or null means the payload is not an order."""
    if not isinstance(obj, Mapping):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where or 'payload'} is not an object")
    value = obj.get(key)
    if value is None or value == "":
        raise AdapterError(DlqReason.MISSING_FIELD, f"{where + '.' if where else ''}{key}")
    return value


def to_decimal(value: Any, where: str) -> Decimal:
    """Channel money (string or number) -> Decimal, refusing NaN, infinities and floats' noise."""
    if isinstance(value, bool) or value is None:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: not a number")
    _short_scalar(value, where)
    try:
        # str() first: Decimal(0.1) would carry binary noise; str(0.1) is '0.1'.
        result = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not money") from exc
    if not result.is_finite():
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not finite")
    return result


def cents_to_decimal(value: Any, where: str) -> Decimal:
    """Integer minor units (fen, cents) -> Decimal major units."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not an integer amount")
    _short_scalar(value, where)
    try:
        minor = int(value)
    except ValueError as exc:
        raise AdapterError(
            DlqReason.INVALID_FIELD, f"{where}: {value!r} is not an integer"
        ) from exc
    return Decimal(minor).scaleb(-2)


def to_int(value: Any, where: str) -> int:
    """Quantities: integers or integral strings only; 1.5 pieces is a bad payload."""
    if isinstance(value, bool):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: boolean is not a quantity")
    if isinstance(value, int):
        return value
    _short_scalar(value, where)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        try:
            return int(value.strip())
        except ValueError:  # '--5', '²': isdigit() says yes, int() says no
            pass
    raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not an integer")


def _short_scalar(value: Any, where: str) -> None:
    """A number or time sent as text longer than MAX_SCALAR_CHARS is refused unread (and
    unquoted: it may be anything)."""
    if isinstance(value, str) and len(value) > MAX_SCALAR_CHARS:
        raise AdapterError(
            DlqReason.INVALID_FIELD, f"{where}: longer than {MAX_SCALAR_CHARS} characters"
        )


def parse_time(value: Any, where: str, *, naive_tz: timezone = CHINA_TZ) -> datetime:
    """ISO-8601 strings, 'YYYY-MM-DD HH:MM:SS' (channel-local) or unix seconds -> aware datetime.

    Chinese platforms send local Beijing time without an offset; that is what ``naive_tz`` says.
    """
    if isinstance(value, bool) or value is None or value == "":
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: missing time")
    _short_scalar(value, where)
    try:
        if isinstance(value, int | float):
            if not 0 < value < 32503680000:  # before year 3000
                raise ValueError("out of range")
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str):
            text = value.strip().replace("Z", "+00:00")
            if text.isdigit():
                return parse_time(int(text), where, naive_tz=naive_tz)
            parsed = datetime.fromisoformat(text)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=naive_tz)
    except (ValueError, OverflowError, OSError) as exc:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not a time") from exc
    raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: {value!r} is not a time")


def text(value: Any) -> str:
    """Optional text fields: None -> '', numbers -> str, anything else refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    raise AdapterError(DlqReason.INVALID_FIELD, f"expected text, got {type(value).__name__}")


def extras(payload: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """Fields the canonical model has no place for, kept so nothing the channel said is lost."""
    return {k: v for k, v in payload.items() if k not in known}


def validation_error(exc: ValidationError) -> AdapterError:
    """Pydantic's error list -> one specific DLQ reason with the field paths."""
    errors = error_list(exc)
    missing = [e for e in errors if e["type"] == "missing"]
    reason = DlqReason.MISSING_FIELD if missing else DlqReason.INVALID_FIELD
    return AdapterError(reason, describe_validation(exc, "order", missing or errors))


# What one error of a message may say: a field path part is a key the sender chose (a 1 MB
# unknown field name is one part), and pydantic's message may quote a limit or a pattern.
MAX_LOC_PART_CHARS = 64
MAX_ERROR_MSG_CHARS = 200
MAX_ERRORS_SHOWN = 5
# Beyond this many errors only their count is reported: pydantic's error list alone then costs
# more than the parse (90,000 unknown fields in 1 MB: 0.3 s on the event loop).
MAX_ERRORS_READ = 100


def error_list(exc: ValidationError) -> list[Any]:
    """Pydantic's errors without input values, or [] when there are too many to read."""
    if exc.error_count() > MAX_ERRORS_READ:
        return []
    return exc.errors(include_url=False, include_input=False)


def describe_validation(exc: ValidationError, whole: str, errors: list[Any] | None = None) -> str:
    """A validation error in one bounded line (a DLQ detail, a log line): its first errors as
    ``path: message``, or only their count when there are too many to read."""
    errors = error_list(exc) if errors is None else errors
    if not errors:
        return f"{exc.error_count()} errors (too many to list)"
    return describe_errors(errors, whole)


def describe_errors(errors: list[Any], whole: str = "message") -> str:
    """Pydantic errors as ``path: message; ...``, bounded whatever the input: at most
    MAX_ERRORS_SHOWN errors, each path part and message clipped. ``whole`` names an error of
    the whole input (an empty path)."""
    return "; ".join(
        f"{'.'.join(_clipped(str(p), MAX_LOC_PART_CHARS) for p in e['loc']) or whole}: "
        f"{_clipped(str(e['msg']), MAX_ERROR_MSG_CHARS)}"
        for e in errors[:MAX_ERRORS_SHOWN]
    )


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, then with control characters escaped: a field name
    with a newline in it must not start a forged line of its own in a log."""
    cut = text if len(text) <= limit else f"{text[:limit]}...[{len(text)} chars]"
    return cut if cut.isprintable() else "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in cut
    )


# --- Shared mapping helpers ------------------------------------------------------------------
# Every adapter goes through these, so a rule (paths in errors, no personal data in messages,
# exact money, how discounts are spread) is written once and behaves the same on every channel.

MONEY_PLACES = Decimal("0.01")


def where_join(where: str, key: str | int) -> str:
    """Field path for error messages: 'orders.order[1].num'."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def unwrap(payload: Mapping[str, Any], *paths: tuple[str, ...]) -> Mapping[str, Any]:
    """The order object itself, also when it arrives in the API's response envelope."""
    for path in paths:
        node: Any = payload
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping):
            return node
    return payload


def obj_at(parent: Mapping[str, Any], key: str, where: str = "", *,
           required: bool = False) -> Mapping[str, Any]:
    """A nested object; absent means empty unless ``required``."""
    value = require(parent, key, where) if required else parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(where, key)}: not an object")
    return value


def objects_at(parent: Mapping[str, Any], key: str, where: str = "", *,
               required: bool = True, limit: int = MAX_LIST_OBJECTS) -> list[Mapping[str, Any]]:
    """A list of objects (coupons, allocations); an empty required list is a missing field,
    one of more than ``limit`` objects is refused before any is looked at."""
    path = where_join(where, key)
    value = parent.get(key)
    if value is None or value == [] or value == "":
        if required:
            raise AdapterError(DlqReason.MISSING_FIELD, path)
        return []
    if not isinstance(value, list):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{path}: not a list")
    if len(value) > limit:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{path}: more than {limit} items")
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(path, index)}: not an object")
    return value


def lines_at(parent: Mapping[str, Any], key: str, where: str = "") -> list[Mapping[str, Any]]:
    """The order's lines: required, and at most MAX_ORDER_LINES of them (what an Order holds)."""
    return objects_at(parent, key, where, limit=MAX_ORDER_LINES)


def text_at(parent: Mapping[str, Any], key: str, where: str = "") -> str:
    """Optional text with its path on error; the value itself is never echoed (it may be PII)."""
    value = parent.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(where, key)}: expected text, "
                                                f"got {type(value).__name__}")


def ident_at(parent: Mapping[str, Any], key: str, where: str = "") -> str:
    """A required identifier (order id, line id): non-empty text or a non-negative integer."""
    value = require(parent, key, where)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(where, key)}: not an id")
    result = str(value).strip()
    if not result or len(result) > MAX_CODE_CHARS or (isinstance(value, int) and value < 0):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(where, key)}: not an id")
    return result


def _quiet(reason: DlqReason, where: str, what: str) -> AdapterError:
    """Errors from the adapters name the field, never its value (it may be personal data)."""
    return AdapterError(reason, f"{where}: {what}")


def money(value: Any, where: str) -> Decimal:
    """Major-unit money (yuan, dollars) -> non-negative Decimal within the model's bounds."""
    amount = signed_money(value, where)
    if amount < 0:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: negative amount")
    return amount


def signed_money(value: Any, where: str) -> Decimal:
    """Major-unit money that may be negative (a platform's refund adjustment), within the
    model's bounds either way."""
    try:
        amount = to_decimal(value, where)
    except AdapterError:
        raise _quiet(DlqReason.INVALID_FIELD, where, "not a money amount") from None
    _bounded(abs(amount), where)
    return amount


def money_at(parent: Mapping[str, Any], key: str, where: str = "", *,
             default: Decimal | None = None) -> Decimal:
    """Money field; absent/empty gives ``default``, or MISSING_FIELD when there is none."""
    value = parent.get(key)
    if (value is None or value == "") and default is not None:
        return default
    return money(require(parent, key, where), where_join(where, key))


def cents_at(parent: Mapping[str, Any], key: str, where: str = "", *,
             default: Decimal | None = None) -> Decimal:
    """Minor-unit money (fen, cents) -> Decimal major units."""
    value = parent.get(key)
    if (value is None or value == "") and default is not None:
        return default
    path = where_join(where, key)
    try:
        amount = cents_to_decimal(require(parent, key, where), path)
    except AdapterError as exc:
        if exc.reason is DlqReason.MISSING_FIELD:
            raise
        raise _quiet(DlqReason.INVALID_FIELD, path, "not an integer amount") from None
    return _bounded(amount, path)


def _bounded(amount: Decimal, where: str) -> Decimal:
    # Checked here, not only by the model, so later arithmetic can never overflow or go negative.
    if amount < 0:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: negative amount")
    if amount > MAX_MONEY:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: amount out of range")
    if amount.as_tuple().exponent < -4:  # type: ignore[operator]
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: more than 4 decimal places")
    return amount


def quantity_at(parent: Mapping[str, Any], key: str, where: str = "") -> int:
    """Ordered units: a positive integer; zero or negative means a broken payload, not a sale."""
    path = where_join(where, key)
    qty = _int(require(parent, key, where), path)
    if qty <= 0:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{path}: quantity must be positive")
    if qty > MAX_LINE_QUANTITY:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{path}: quantity out of range")
    return qty


def int_at(
    parent: Mapping[str, Any], key: str, where: str = "", *, default: int | None = None
) -> int:
    """Enumerations sent as numbers or numeric strings (Douyin statuses, pay types)."""
    value = parent.get(key)
    if (value is None or value == "") and default is not None:
        return default
    return _int(require(parent, key, where), where_join(where, key))


def _int(value: Any, where: str) -> int:
    try:
        return to_int(value, where)
    except AdapterError:
        raise _quiet(DlqReason.INVALID_FIELD, where, "not an integer") from None


def utc_time(value: Any, where: str, *, naive_tz: timezone = CHINA_TZ) -> datetime:
    """Any channel time -> aware UTC, so every stage compares times without thinking of zones."""
    try:
        parsed = parse_time(value, where, naive_tz=naive_tz)
    except AdapterError:
        raise _quiet(DlqReason.INVALID_FIELD, where, "not a time") from None
    plausible_time(parsed, where)
    return parsed.astimezone(UTC)  # cannot overflow: 2000 to tomorrow, whatever the offset


def plausible_time(value: datetime, where: str) -> datetime:
    """An aware time between EARLIEST_TIME and MAX_FUTURE from now, else INVALID_FIELD."""
    if value < EARLIEST_TIME:
        raise _quiet(DlqReason.INVALID_FIELD, where, "implausible time (before 2000-01-01)")
    if value > datetime.now(UTC) + MAX_FUTURE:
        raise _quiet(DlqReason.INVALID_FIELD, where, "implausible time (more than 1 day ahead)")
    return value


def fits_a_message(order: Order) -> Order:
    """An order its events can carry through Kafka (see MAX_ORDER_BYTES)."""
    size = order.json_size()
    if size > MAX_ORDER_BYTES:
        raise AdapterError(
            DlqReason.PAYLOAD_TOO_LARGE, f"order is {size} bytes as JSON > limit {MAX_ORDER_BYTES}"
        )
    return order


def time_at(parent: Mapping[str, Any], key: str, where: str = "", *,
            naive_tz: timezone = CHINA_TZ) -> datetime:
    """A time the channel always sends (creation)."""
    value = parent.get(key)
    if value is None or value == "" or value == 0:
        raise AdapterError(DlqReason.MISSING_FIELD, where_join(where, key))
    return utc_time(value, where_join(where, key), naive_tz=naive_tz)


def opt_time_at(parent: Mapping[str, Any], key: str, where: str = "", *,
                naive_tz: timezone = CHINA_TZ) -> datetime | None:
    """A time that may not exist yet (pay time of an unpaid order): absent, '' or 0 -> None."""
    value = parent.get(key)
    if value is None or value == "" or value == 0:
        return None
    return utc_time(value, where_join(where, key), naive_tz=naive_tz)


# A date an order may not ship before (a pre-sale's ship date) lies ahead, but not by years:
# further than this is a wrong unit or a typo, and would park the order's stock indefinitely.
MAX_SHIP_AHEAD = timedelta(days=400)


def ship_after_at(parent: Mapping[str, Any], key: str, where: str = "", *,
                  naive_tz: timezone = CHINA_TZ) -> datetime | None:
    """A ship-not-before time (absent, '' or 0 -> None): from 2000 to MAX_SHIP_AHEAD ahead."""
    value = parent.get(key)
    if value is None or value == "" or value == 0:
        return None
    path = where_join(where, key)
    try:
        parsed = parse_time(value, path, naive_tz=naive_tz)
    except AdapterError:
        raise _quiet(DlqReason.INVALID_FIELD, path, "not a time") from None
    return plausible_ship_after(parsed, path).astimezone(UTC)


def plausible_ship_after(value: datetime, where: str) -> datetime:
    """A ship-not-before time from 2000 to MAX_SHIP_AHEAD ahead, else INVALID_FIELD."""
    if value < EARLIEST_TIME or value > datetime.now(UTC) + MAX_SHIP_AHEAD:
        raise _quiet(DlqReason.INVALID_FIELD, where, "implausible ship date")
    return value


def currency_at(parent: Mapping[str, Any], key: str, where: str = "") -> str:
    """ISO 4217 code the channel sends with its amounts."""
    currency = text_at(parent, key, where)
    if not currency:
        raise AdapterError(DlqReason.MISSING_FIELD, where_join(where, key))
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where_join(where, key)}: not a currency")
    return currency.upper()


def pick_code(where: str, *candidates: Any) -> str:
    """First non-empty merchant code: the fallback chain when a shop left its outer code blank."""
    for candidate in candidates:
        if isinstance(candidate, bool) or candidate is None:
            continue
        if isinstance(candidate, str | int):
            code = str(candidate).strip()
            if code:
                if len(code) > MAX_CODE_CHARS:
                    raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: sku code too long")
                return code
        else:
            raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: sku code is not text")
    raise AdapterError(DlqReason.MISSING_FIELD, where)


def unique_ids(ids: list[str]) -> list[str]:
    """Line ids for channels without one (JD keys lines by sku): repeat -> 'id#2', 'id#3'."""
    seen: dict[str, int] = {}
    result = []
    for line_id in ids:
        seen[line_id] = seen.get(line_id, 0) + 1
        result.append(line_id if seen[line_id] == 1 else f"{line_id}#{seen[line_id]}")
    return result


def spread_discount(amounts: list[Decimal], goods_paid: Decimal, where: str) -> list[Decimal]:
    """Share an order-level discount over lines in proportion to their amounts, exactly.

    ``goods_paid`` is what the buyer paid for all goods; when it is less than the lines' sum
    the difference is an order-level discount (shop coupon, 满减) the platform did not allocate.
    Largest-remainder rounding in the smallest unit present keeps the sum exact to the cent.
    A ``goods_paid`` above the sum (fees the lines do not carry) leaves the lines unchanged.
    """
    total = sum(amounts, Decimal(0))
    if goods_paid < 0:
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: paid amount below zero")
    if goods_paid >= total or not amounts:
        return list(amounts)
    places = max(2, *(-int(a.as_tuple().exponent) for a in [*amounts, goods_paid]))
    scale = Decimal(10) ** places
    weights = [int(a * scale) for a in amounts]
    target = int(goods_paid * scale)
    weight_sum = sum(weights)
    if weight_sum == 0:
        return list(amounts)
    shares = [target * w // weight_sum for w in weights]
    remainders = [target * w % weight_sum for w in weights]
    leftover = target - sum(shares)
    for index in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:leftover]:
        shares[index] += 1
    return [Decimal(s) / scale for s in shares]


def payment_status_for(status: ChannelStatus, *, cod: bool, paid: bool) -> PaymentStatus:
    """Fold a channel status plus 'is it COD' and 'was it paid' into the payment status."""
    if status is ChannelStatus.CANCELLED:
        return PaymentStatus.REFUNDED if paid and not cod else PaymentStatus.UNPAID
    if cod:
        return PaymentStatus.PAID if status is ChannelStatus.COMPLETED else PaymentStatus.COD
    if status is ChannelStatus.PENDING_PAYMENT:
        return PaymentStatus.UNPAID
    return PaymentStatus.PAID


_Status = TypeVar("_Status")


def status_from(
    table: Mapping[Any, _Status], value: Any, where: str, what: str = "status"
) -> _Status:
    """Channel status -> ChannelStatus (or PaymentStatus, as Shopify's ``financial_status``,
    or what an after-sale status or type means); an unknown one is refused, not guessed."""
    if value is None or value == "":
        raise AdapterError(DlqReason.MISSING_FIELD, where)
    try:
        return table[value]
    except (KeyError, TypeError):
        raise AdapterError(DlqReason.INVALID_FIELD, f"{where}: unknown {what}") from None


@dataclass(frozen=True)
class LineDraft:
    """One order line as the adapter read it, before sku mapping and model validation."""

    line_id: str
    channel_sku: str
    quantity: int
    unit_price: Decimal
    paid_amount: Decimal
    title: str = ""
    is_gift: bool = False


@dataclass(frozen=True)
class AddressDraft:
    """Ship-to as read; ``province_hint`` is a code the channel sent (Shopify 'ZJ', a GB id),
    used when the name alone does not resolve."""

    country: str = "CN"
    province: str = ""
    province_hint: str = ""
    city: str = ""
    district: str = ""
    street: str = ""
    postcode: str = ""
    name: str = ""
    phone: str = ""
    # The platform's protected receiver (streams/models.py ProtectedReceiver): ciphertexts,
    # the OAID handle and the platform's receiver-matching key (the OAID when not given).
    name_cipher: str = ""
    phone_cipher: str = ""
    street_cipher: str = ""
    oaid: str = ""
    match_key: str = ""


def presale_of(stage: PresaleStage | None, paid: Decimal) -> Presale | None:
    """The canonical pre-sale, or None for an order that is not one."""
    return None if stage is None else Presale(stage=stage, paid=_money2(paid))


def cipher_of(*values: str) -> str:
    """The first of ``values`` that is platform ciphertext, '' if none is: a channel that
    encrypts sends it in the plain field's place or in a field of its own."""
    return next((v for v in values if v and is_ciphertext(v)), "")


def with_paid(drafts: list[LineDraft], amounts: list[Decimal]) -> list[LineDraft]:
    """Lines read first, paid amounts decided once all are known (discount spreading)."""
    return [replace(d, paid_amount=a) for d, a in zip(drafts, amounts, strict=True)]


PAID_STATES = frozenset(
    {PaymentStatus.PAID, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
)


def _money2(value: Decimal) -> Decimal:
    """'59', '59.0' and '59.00' -> '59.00': one form, so fingerprints and sinks agree."""
    rounded = value.quantize(MONEY_PLACES)
    return rounded if rounded == value else value


def _clip(value: str, limit: int) -> str:
    return value[:limit]


def json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, default=str))
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: the model judges it
        return len(str(value))


def bounded_extras(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """``raw`` without the fields too big to carry on every event (see MAX_EXTRA_BYTES) or
    named longer than a field name can be (MAX_CODE_CHARS: the name rides along too); the names
    (clipped) and sizes of those left out are kept under ``omitted``."""
    if not raw:
        return {}
    if json_size(raw) <= MAX_EXTRA_BYTES and all(len(k) <= MAX_CODE_CHARS for k in raw):
        return dict(raw)  # the usual case: one dump, nothing to leave out
    kept: dict[str, Any] = {}
    omitted: dict[str, int] = {}
    for name, value in raw.items():
        size = json_size(value)
        if size > MAX_EXTRA_BYTES or len(name) > MAX_CODE_CHARS:
            label = name if len(name) <= MAX_CODE_CHARS else f"{name[:MAX_CODE_CHARS - 3]}..."
            omitted[label] = omitted.get(label, 0) + size
        else:
            kept[name] = value
    if omitted:
        kept["omitted"] = omitted
    return kept


def _fit(value: str, limit: int) -> str:
    """Fields that are useless when cut (phones, postcodes): too long -> dropped, kept in raw."""
    return value if len(value) <= limit else ""


def build_address(draft: AddressDraft) -> Address:
    from streams.countries import GREATER_CHINA  # local, as regions below
    from streams.regions import province_code  # local: regions imports nothing from here

    country = (draft.country or "CN").strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise AdapterError(DlqReason.INVALID_FIELD, "address.country: not an ISO country code")
    code = province_code(draft.province, country) or province_code(draft.province_hint, country)
    # Outside China the province field is the state as sent (routing reads US states from it,
    # streams/countries.py): the channel's code stands in when it sent no name.
    province = draft.province or ("" if country in GREATER_CHINA else draft.province_hint)
    return Address(
        country=country,
        province=_clip(province, MAX_TEXT_CHARS),
        province_code=code,
        city=_clip(draft.city, MAX_TEXT_CHARS),
        district=_clip(draft.district, MAX_TEXT_CHARS),
        street=_clip(draft.street, MAX_TEXT_CHARS),
        postcode=_fit(draft.postcode, 32),
        name=_clip(draft.name, MAX_TEXT_CHARS),
        phone=_fit(draft.phone, 256),
        protected=_protected(draft),
    )


MAX_CIPHER_CHARS = 1024  # ProtectedReceiver's bound: a cut ciphertext decrypts to nothing
MAX_HANDLE_CHARS = 256


def _protected(draft: AddressDraft) -> ProtectedReceiver | None:
    """None unless the channel protected the receiver: most orders (and every order before
    the field existed) carry none, so their JSON and fingerprint stay as they were."""
    parts = (draft.name_cipher, draft.phone_cipher, draft.street_cipher, draft.oaid,
             draft.match_key)
    if not any(parts):
        return None
    return ProtectedReceiver(
        name=_fit(draft.name_cipher, MAX_CIPHER_CHARS),
        phone=_fit(draft.phone_cipher, MAX_CIPHER_CHARS),
        street=_fit(draft.street_cipher, MAX_CIPHER_CHARS),
        oaid=_fit(draft.oaid, MAX_HANDLE_CHARS),
        # Taobao's and JD's OAID names the receiver (name, phone, address): it is their key
        match_key=_fit(draft.match_key or draft.oaid, MAX_HANDLE_CHARS),
    )


def build_buyer(fields: Mapping[str, str]) -> Buyer:
    """Buyer from id/name/email/phone text; an over-long email or phone is dropped, not cut."""
    return Buyer(
        id=_clip(fields.get("id", ""), 256),
        name=_clip(fields.get("name", ""), MAX_TEXT_CHARS),
        email=_fit(fields.get("email", ""), 320),
        phone=_fit(fields.get("phone", ""), 64),
    )


def map_line(line: LineDraft, sku_map: SkuMap, channel: str, shop_id: str) -> list[OrderLine]:
    """One channel line as order lines: one line of its mapped sku, or a bundle's component
    lines (``expand_bundle``)."""
    components = sku_map.components(channel, shop_id, line.channel_sku)
    if components is not None:
        return expand_bundle(line, components)
    return [
        OrderLine(
            line_id=line.line_id,
            sku=sku_map.resolve(channel, shop_id, line.channel_sku),
            channel_sku=line.channel_sku,
            title=_clip(line.title, MAX_TEXT_CHARS),
            quantity=line.quantity,
            unit_price=_money2(line.unit_price),
            discount=_money2(max(Decimal(0), line.unit_price * line.quantity - line.paid_amount)),
            paid_amount=_money2(line.paid_amount),
            is_gift=line.is_gift,
        )
    ]


def expand_bundle(line: LineDraft, components: tuple[Component, ...]) -> list[OrderLine]:
    """A bundle line -> one line per component, ids ``<line id>/<n>`` (n from 1, in the map's
    order: deterministic, so a re-push is the same order; '/' because JD's repeated ids already
    use '#'). The paid and the list amounts are split by share (split_amount: the parts add up
    exactly); each line names the bundle it came from."""
    paid = split_amount(line.paid_amount, components)
    listed = split_amount(line.unit_price * line.quantity, components)
    ref = BundleRef(code=line.channel_sku, line_id=line.line_id, quantity=line.quantity)
    out = []
    for n, (component, paid_part, list_part) in enumerate(
        zip(components, paid, listed, strict=True), start=1
    ):
        units = line.quantity * component.qty
        out.append(
            OrderLine(
                line_id=f"{line.line_id}/{n}",
                sku=component.sku,
                channel_sku=line.channel_sku,
                title=_clip(line.title, MAX_TEXT_CHARS),
                quantity=units,
                unit_price=_money2((list_part / units).quantize(UNIT_PRICE_PLACES)),
                discount=_money2(max(Decimal(0), list_part - paid_part)),
                paid_amount=_money2(paid_part),
                is_gift=line.is_gift,
                bundle=ref,
            )
        )
    return out


UNIT_PRICE_PLACES = Decimal("0.0001")  # a component's unit price: its list share per unit


def assemble(
    channel: Channel,
    ctx: AdapterContext,
    *,
    shop_id: str,
    external_id: str,
    channel_status: ChannelStatus,
    payment_status: PaymentStatus,
    created_at: datetime,
    updated_at: datetime | None,
    currency: str,
    lines: list[LineDraft],
    total: Decimal,
    shipping_fee: Decimal = Decimal(0),
    paid_at: datetime | None = None,
    payment_method: str = "",
    transaction_id: str = "",
    buyer: Mapping[str, str] | None = None,
    address: AddressDraft | None = None,
    buyer_remark: str = "",
    seller_remark: str = "",
    raw: Mapping[str, Any] | None = None,
    presale: Presale | None = None,
    ship_after: datetime | None = None,
    ship_hold: str = "",
    fulfilled_by: Literal["", "platform", "virtual"] = "",
    ship_by: datetime | None = None,
    expedited: bool = False,
) -> Order:
    """The one place an Order is built: sku mapping, discounts, paid total, id and validation.

    ``paid_total`` is what has been paid: the order total once the channel says it is paid
    (also when later refunded, the refund being a separate fact), 0 while unpaid or COD.
    A line's discount is its list amount minus what was paid for it (never below 0).
    """
    if not shop_id or len(shop_id) > MAX_CODE_CHARS:
        raise AdapterError(DlqReason.INVALID_FIELD, "shop_id: missing or too long")
    try:
        order_lines = [
            order_line
            for line in lines
            for order_line in map_line(line, ctx.sku_map, channel.value, shop_id)
        ]
        paid_total = total if payment_status in PAID_STATES else Decimal(0)
        return Order(
            order_id=make_order_id(channel.value, shop_id, external_id),
            channel=channel,
            shop_id=shop_id,
            external_id=external_id,
            channel_status=channel_status,
            created_at=created_at,
            updated_at=updated_at or created_at,
            currency=currency.upper(),
            buyer=build_buyer(buyer or {}),
            address=build_address(address or AddressDraft()),
            lines=order_lines,
            payment=Payment(
                status=payment_status,
                method=_clip(payment_method, 64),
                paid_total=_money2(paid_total),
                paid_at=paid_at if payment_status in PAID_STATES else None,
                transaction_id=_clip(transaction_id, 256),
            ),
            shipping_fee=_money2(shipping_fee),
            discount_total=_money2(sum((line.discount for line in order_lines), Decimal(0))),
            total=_money2(total),
            buyer_remark=_clip(buyer_remark, MAX_TEXT_CHARS),
            seller_remark=_clip(seller_remark, MAX_TEXT_CHARS),
            raw=bounded_extras(raw),
            presale=presale,
            ship_after=ship_after,
            ship_hold=_clip(ship_hold, 64),
            fulfilled_by=fulfilled_by,
            ship_by=ship_by,
            expedited=expedited,
        )
    except ValidationError as exc:
        raise validation_error(exc) from None
