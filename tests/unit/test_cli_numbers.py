"""Every time, number and amount option of the CLI is bounded (issue 13, item 17): a value out
of range is one clear usage error with exit 2, never a traceback. None of these reach a
server: the value is refused while the arguments are parsed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import click
import pytest
from click.testing import CliRunner, Result

from ops import cli
from ops.cli_types import AMOUNT, EARLIEST_SINCE, SINCE, FiniteFloatRange
from ops.wms_sim import wms_sim_command
from streams.messages import MAX_REASON_CHARS, AfterSalesRequest


def run(command: click.Command, *args: str) -> Result:
    return CliRunner().invoke(command, list(args))


def refused(result: Result, fragment: str) -> None:
    """A usage error: exit 2, the message says why, no exception but click's own exit."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert fragment in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("since", "fragment"),
    [
        ("99999999999w", "out of range"),  # was OverflowError: Python int too large for C int
        ("5000000w", "out of range"),  # was OverflowError: date value out of range
        ("60000w", "out of range"),  # before 1970: no sales data can be that old
        ("0001-01-01T00:00:00+14:00", "out of range"),  # was OverflowError in astimezone
        ("9999-12-31T23:59:59-14:00", "out of range"),
        ("9999-12-31", "out of range"),
        ("1" * 5000 + "s", "longer than 64 characters"),  # was int()'s 4300-digit ValueError
        ("yesterday", "expected an ISO-8601 time"),
    ],
)
def test_report_since_out_of_range_is_a_usage_error(since: str, fragment: str) -> None:
    refused(run(cli.main, "report", "--since", since), fragment)


def test_since_accepts_spans_and_times_in_range() -> None:
    now = datetime.now(UTC)
    assert abs(SINCE.convert("2h", None, None) - (now - timedelta(hours=2))) < timedelta(minutes=1)
    assert SINCE.convert("2024-11-11T00:00:00+08:00", None, None) == datetime(
        2024, 11, 10, 16, tzinfo=UTC
    )
    weeks = (now - EARLIEST_SINCE).days // 7
    assert SINCE.convert(f"{weeks}w", None, None) >= EARLIEST_SINCE


@pytest.mark.parametrize(
    "args",
    [
        ("held", "list", "--limit", "-1"),
        ("held", "list", "--limit", "1" + "0" * 30),
        ("dlq", "list", "--limit", "-5"),
        ("dlq", "list", "--limit", "99999999999999999999"),
        ("stock", "adjust", "SKU", "WH", "1" + "0" * 30),
        ("stock", "adjust", "SKU", "WH", "--", "-10000000000"),
        ("access", "grant", "--user", "u", "--role", "admin", "--expires-in", "nan"),
        ("access", "grant", "--user", "u", "--role", "admin", "--expires-in", "inf"),
        ("access", "grant", "--user", "u", "--role", "admin", "--expires-in", "1e300"),
        ("chaos", "--outage-s", "nan"),
        ("bench", "--orders", "1" + "0" * 30),
    ],
)
def test_numbers_out_of_range_are_usage_errors(args: tuple[str, ...]) -> None:
    refused(run(cli.main, *args), "Invalid value")


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [
        ("1e999999", "is more than"),  # finite, and far beyond any amount a message holds
        ("NaN", "positive amount"),
        ("-Infinity", "positive amount"),
        ("-1", "positive amount"),
        ("0", "positive amount"),
        ("0.00001", "more than 4 decimal places"),
        ("12,5", "is not a number"),
        ("9" * 100, "longer than 64 characters"),
    ],
)
def test_refund_amount_is_checked_before_anything_is_sent(amount: str, fragment: str) -> None:
    refused(run(cli.main, "aftersales", "refund", "O1", "--amount", amount), fragment)


def test_refund_amount_in_range_is_a_decimal() -> None:
    assert AMOUNT.convert(" 12.50 ", None, None) == Decimal("12.50")


@pytest.mark.parametrize(
    "args",
    [
        ("--delay", "nan"),
        ("--delay", "1e300"),
        ("--duration", "inf"),
        ("--duration", "nan"),
        ("--short-pick-rate", "nan"),
        ("--exception-rate", "nan"),
    ],
)
def test_wms_sim_numbers_are_finite_and_bounded(args: tuple[str, ...]) -> None:
    refused(run(wms_sim_command, *args), "Invalid value")


def test_finite_float_range_refuses_what_click_lets_through() -> None:
    """click.FloatRange(0, 1) accepts 'nan': no comparison with it is true."""
    assert click.FloatRange(0, 1).convert("nan", None, None) != 0  # nan: click lets it in
    with pytest.raises(click.BadParameter, match="not a finite number"):
        FiniteFloatRange(0, 1).convert("nan", None, None)
    assert FiniteFloatRange(0, 1).convert("0.5", None, None) == 0.5


def test_an_invalid_request_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A --reason longer than the event it becomes holds is refused with the field's name."""

    async def submit() -> None:
        AfterSalesRequest(
            request_id="R1",
            order_id="O1",
            kind="return",
            reason="x" * (MAX_REASON_CHARS + 1),
            at=datetime.now(UTC),
        )

    with pytest.raises(SystemExit) as exited:
        cli._report_applied(submit, as_json=False)
    assert exited.value.code == 2
    assert "invalid request: reason: String should have at most 200" in capsys.readouterr().err


def test_an_address_over_the_limits_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    from streams.models import Address

    with pytest.raises(SystemExit) as exited:
        cli._validated(Address, {"street": "x" * 5000, "postcode": "1" * 40})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid address: street: String should have at most 2000" in err
    assert "postcode" in err and "x" * 100 not in err
