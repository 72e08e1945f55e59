"""Parameter types of the CLI: every time, number and amount an operator types is checked at
the door, with a message that says what is allowed and a non-zero exit (click's usage error,
2), before command code, ``datetime`` arithmetic or a Redis script sees it. Without them
``./oms report --since 99999999999w`` ended in an OverflowError traceback, and click's own
FloatRange let ``nan`` through every bound (no comparison is true of it)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import click

MAX_TEXT_NUMBER_CHARS: Final = 64  # a time, span or amount typed on a command line
# Sales data cannot be older than ClickHouse's DateTime (1970 on); a time past 2100 is a typo.
EARLIEST_SINCE: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_SINCE: Final = datetime(2100, 1, 1, tzinfo=UTC)
MAX_LIST_LIMIT: Final = 1_000_000  # rows a list command prints
MAX_STOCK_DELTA: Final = 10**9  # as state/stock.py MAX_QTY: no sku/warehouse holds more
MAX_TOKEN_TTL_S: Final = 10 * 366 * 86_400  # ten years: longer is "until revoked"
MAX_SIM_DELAY_S: Final = 86_400.0
MAX_SIM_DURATION_S: Final = 366 * 86_400.0
MAX_SPAN_S: Final = 400 * 86_400  # a ship date lies at most this far ahead (streams.channels)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses ``nan`` (it passes every bound) and infinities."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class SinceType(click.ParamType):
    """``--since``: an ISO-8601 time or a span back from now (``analytics.reports.parse_since``),
    between EARLIEST_SINCE and LATEST_SINCE."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        from analytics.reports import parse_since

        text = str(value)
        if len(text) > MAX_TEXT_NUMBER_CHARS:
            self.fail(f"longer than {MAX_TEXT_NUMBER_CHARS} characters", param, ctx)
        try:
            since = parse_since(text)
        except OverflowError:  # a span back beyond the year 1, or an offset past year 1 or 9999
            self.fail(f"{text!r} is out of range: {self._range()}", param, ctx)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if not EARLIEST_SINCE <= since < LATEST_SINCE:
            self.fail(f"{text!r} is out of range: {self._range()}", param, ctx)
        return since

    @staticmethod
    def _range() -> str:
        weeks = (datetime.now(UTC) - EARLIEST_SINCE).days // 7
        return (
            f"the time must be from {EARLIEST_SINCE:%Y-%m-%d} to before {LATEST_SINCE:%Y-%m-%d} "
            f"(a span back of at most {weeks}w)"
        )


class AmountType(click.ParamType):
    """A money amount: positive, finite, at most 4 decimal places and at most MAX_MONEY, as
    the message carrying it must be (streams/models.py Money)."""

    name = "amount"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        from streams.models import MAX_MONEY

        text = str(value).strip()
        if len(text) > MAX_TEXT_NUMBER_CHARS:
            self.fail(f"longer than {MAX_TEXT_NUMBER_CHARS} characters", param, ctx)
        try:
            amount = Decimal(text)
        except InvalidOperation:
            self.fail(f"{text!r} is not a number", param, ctx)
        if not amount.is_finite() or amount <= 0:
            self.fail(f"must be a positive amount, got {text!r}", param, ctx)
        if amount > MAX_MONEY:
            self.fail(f"{text!r} is more than {MAX_MONEY}", param, ctx)
        if amount.as_tuple().exponent < -4:  # type: ignore[operator]
            self.fail(f"{text!r} has more than 4 decimal places", param, ctx)
        return amount


class SpanType(click.ParamType):
    """A span ahead such as ``4h`` or ``30m`` (``analytics.reports.parse_span``), at most
    MAX_SPAN_S, in seconds."""

    name = "span"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        from analytics.reports import parse_span

        text = str(value)
        span = parse_span(text) if len(text) <= MAX_TEXT_NUMBER_CHARS else None
        if span is None:
            self.fail(
                f"{text[:MAX_TEXT_NUMBER_CHARS]!r} is not a span such as 30m, 4h, 2d", param, ctx
            )
        if span > MAX_SPAN_S:
            self.fail(f"{text!r} is more than {MAX_SPAN_S // 86_400} days", param, ctx)
        return float(span)


SINCE: Final = SinceType()
SPAN: Final = SpanType()
AMOUNT: Final = AmountType()
LIST_LIMIT: Final = click.IntRange(0, MAX_LIST_LIMIT)
STOCK_DELTA: Final = click.IntRange(-MAX_STOCK_DELTA, MAX_STOCK_DELTA)
TOKEN_TTL_S: Final = FiniteFloatRange(60, MAX_TOKEN_TTL_S)
