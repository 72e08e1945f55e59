"""The CLI when Redis refuses writes, when a request is retried, and when OMS_OPERATOR names
no person (issue 13 follow-ups). Redis, Kafka and the workers are stubbed: what is checked is
what the operator sees and what would be sent.

* Redis refusing writes (READONLY, MISCONF, OOM...) is one line, exit 1, for the stock
  commands too; any other Redis error stays a traceback (a bug).
* ``--request-id`` / ``--action-id`` reach the message, so the worker's per-order dedupe
  (``aftersales:<id>``, ``action:<id>``) makes a retry apply once; without one, a new id is
  printed before anything is sent; an id the order applied before is not sent again.
* An actor the workers would refuse (``system...``, ``api:...``) fails at once with exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from ops import cli
from order.record import AfterSalesEntry, OrderRecord
from streams.messages import AfterSalesKind, AfterSalesRequest, OperatorAction, OrderState
from tests.unit.test_api import jd_record
from web import views
from web.views import Applied

REFUSALS = [
    ReadOnlyError("You can't write against a read only replica."),
    BaseParser.parse_error("MISCONF Errors writing to the AOF file: No space left on device"),
    BaseParser.parse_error("OOM command not allowed when used memory > 'maxmemory'."),
]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args))


def raiser(exc: Exception) -> Any:
    def fail(*_: Any, **__: Any) -> Any:
        raise exc

    return fail


@pytest.fixture(autouse=True)
def operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_OPERATOR", "alice")


# --- Redis refusing writes -------------------------------------------------------------------


@pytest.mark.parametrize("exc", REFUSALS, ids=lambda e: type(e).__name__)
def test_stock_adjust_when_redis_refuses_writes_is_one_line(
    monkeypatch: pytest.MonkeyPatch, exc: Exception
) -> None:
    monkeypatch.setattr("state.stock.adjust_stock", raiser(exc))
    result = run("stock", "adjust", "SKU-PHONE-X1", "WH-SH", "5")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "refuses writes: " in result.stderr and "Traceback" not in result.output
    assert str(exc) in result.stderr


def test_stock_load_and_show_go_through_the_same_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stock_file = tmp_path / "stock.csv"
    stock_file.write_text("sku,warehouse,qty\nSKU-PHONE-X1,WH-SH,10\n")
    monkeypatch.setattr("state.stock.load_stock", raiser(REFUSALS[1]))
    loaded = run("stock", "load", str(stock_file))
    assert loaded.exit_code == 1
    assert "refuses writes: MISCONF Errors writing to the AOF file" in loaded.stderr
    monkeypatch.setattr("state.stock.known_skus", raiser(REFUSALS[0]))
    shown = run("stock", "show", "SKU-PHONE-X1")
    assert shown.exit_code == 1 and "refuses writes: " in shown.stderr


def test_another_redis_error_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("state.stock.adjust_stock", raiser(ResponseError("ERR wrong")))
    result = run("stock", "adjust", "SKU-PHONE-X1", "WH-SH", "5")
    assert isinstance(result.exception, ResponseError)


def test_redis_unreachable_still_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("state.stock.adjust_stock", raiser(RedisConnectionError("refused")))
    result = run("stock", "adjust", "SKU-PHONE-X1", "WH-SH", "5")
    assert result.exit_code == 1 and "is not reachable (refused)" in result.stderr


# --- request and action ids ------------------------------------------------------------------


class Sent:
    """Stands in for the send to Kafka and the wait for a worker: records what was sent and
    answers with the order in its next state."""

    def __init__(self, record: OrderRecord) -> None:
        self.record = record
        self.messages: list[Any] = []
        self.input_ids: list[str] = []
        self.looked_up: list[str] = []

    async def find_one(self, settings: Any, ref: str) -> OrderRecord:
        self.looked_up.append(ref)
        return self.record

    async def send_and_wait(
        self, settings: Any, topic: str, before: OrderRecord, message: Any, input_id: str, *_: Any
    ) -> Applied:
        self.messages.append(message)
        self.input_ids.append(input_id)
        after = before.model_copy(update={"state": OrderState.REFUNDED})
        return Applied(before, after, [])


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    stub = Sent(jd_record())
    monkeypatch.setattr(views, "find_one", stub.find_one)
    monkeypatch.setattr(views, "send_and_wait", stub.send_and_wait)
    return stub


def test_a_given_request_id_reaches_the_message(sent: Sent) -> None:
    result = run("aftersales", "refund", "O1", "--amount", "5", "--request-id", "R-42", "--json")
    assert result.exit_code == 0, result.output
    (request,) = sent.messages
    assert isinstance(request, AfterSalesRequest) and request.request_id == "R-42"
    assert sent.input_ids == ["aftersales:R-42"]  # the pipeline's dedupe key
    assert '"request_id": "R-42"' in result.stdout
    assert "R-42" not in result.stderr  # given, so not announced


@pytest.mark.parametrize(
    "args",
    [
        ("aftersales", "refund", "O1", "--amount", "5"),
        ("aftersales", "cancel", "O1"),
        ("aftersales", "return", "O1", "--lines", "L1"),
        ("aftersales", "exchange", "O1"),
    ],
)
def test_a_new_request_id_is_printed_and_sent(sent: Sent, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 0, result.output
    printed = re.search(r"--request-id (\S+)", result.stderr)
    assert printed is not None, result.stderr
    assert sent.messages[0].request_id == printed.group(1)
    assert sent.input_ids == [f"aftersales:{printed.group(1)}"]


@pytest.mark.parametrize("command", ["release", "cancel"])
def test_action_ids_given_and_new(sent: Sent, command: str) -> None:
    given = run("held", command, "O1", "--action-id", "A.7", "--json")
    assert given.exit_code == 0, given.output
    assert isinstance(sent.messages[0], OperatorAction)
    assert sent.messages[0].action_id == "A.7" and sent.input_ids == ["action:A.7"]
    assert '"action_id": "A.7"' in given.stdout
    new = run("held", command, "O1")
    printed = re.search(r"--action-id (\S+)", new.stderr)
    assert printed is not None and sent.messages[1].action_id == printed.group(1)


@pytest.mark.parametrize("bad", ["a:b", "x" * 65, "-lead", "has space", "é"])
def test_a_malformed_id_is_a_usage_error(sent: Sent, bad: str) -> None:
    for args in (
        ("aftersales", "cancel", "O1", "--request-id", bad),
        ("held", "cancel", "O1", "--action-id", bad),
    ):
        result = run(*args)
        assert result.exit_code == 2 and "Invalid value for '--" in result.output
    assert sent.messages == [] and sent.looked_up == []


def test_a_retry_of_an_applied_request_is_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order applied aftersales:R-42 already: nothing goes to Kafka, the answer says so."""
    record = jd_record()
    record.aftersales.append(AfterSalesEntry(request_id="R-42", kind=AfterSalesKind.REFUND))
    record.remember_outputs("aftersales:R-42")

    async def find_one(settings: Any, ref: str) -> OrderRecord:
        return record

    async def events_of(store: Any, order_id: str, input_id: str) -> list[Any]:
        return []  # the outputs it kept are read from Redis; none here

    monkeypatch.setattr(views, "find_one", find_one)
    monkeypatch.setattr(views, "events_of", events_of)
    monkeypatch.setattr(views, "produce", raiser(AssertionError("sent again")))
    result = run("aftersales", "refund", "O1", "--amount", "5", "--request-id", "R-42")
    assert result.exit_code == 0, result.output
    assert "--request-id R-42 was applied before: nothing changed" in result.stdout


def test_a_request_id_reused_for_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    record = jd_record()  # has refund R1 in its after-sales
    record.remember_outputs("aftersales:R1")

    async def find_one(settings: Any, ref: str) -> OrderRecord:
        return record

    monkeypatch.setattr(views, "find_one", find_one)
    monkeypatch.setattr(views, "produce", raiser(AssertionError("sent")))
    result = run("aftersales", "return", "O1", "--request-id", "R1")
    assert result.exit_code == 1
    assert "request id R1 was used for a refund request" in result.stderr


# --- who acts --------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["system:close-timer", "system", "api:amy", "operator:bob"])
@pytest.mark.parametrize(
    "args",
    [
        ("held", "release", "O1"),
        ("aftersales", "refund", "O1", "--amount", "1"),
        ("stock", "adjust", "SKU-PHONE-X1", "WH-SH", "5"),
    ],
)
def test_an_actor_the_workers_refuse_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, sent: Sent, actor: str, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("OMS_OPERATOR", actor)
    monkeypatch.setattr("state.stock.adjust_stock", raiser(AssertionError("adjusted")))
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"OMS_OPERATOR={actor!r} is not a person's name" in result.stderr
    assert sent.messages == [] and sent.looked_up == []


def test_a_person_s_name_passes() -> None:
    assert cli._operator() == "alice"


def test_services_reachable_without_clickhouse_leaves_os_errors_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited, cli.services_reachable(clickhouse=False):
        raise BaseParser.parse_error("READONLY You can't write against a read only replica.")
    assert exited.value.code == 1
    assert "refuses writes: READONLY You can't write" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError), cli.services_reachable(clickhouse=False):
        raise FileNotFoundError("a config file, not ClickHouse")
