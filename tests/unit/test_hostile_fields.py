"""Hostile field values cost bounded work (issue 13, items 5 and 6): a province name, a log
line, a validation error or a remark is clipped before anything super-linear could touch it,
and what is logged about bad input is bounded.

Work is measured, never time: spies record how many characters each pattern or lookup was
given, and counters how many items were mapped. A generous pytest-timeout is only a backstop
on the cases that took seconds to an hour before (the machines are shared and noisy)."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

import core.logs
import core.privacy
import streams.regions
from core.logs import MaskPersonalData, mask_personal, setup_logging
from core.privacy import MAX_MASKED_CHARS, mask_id, scrub_free_text
from order.record import HistoryEntry, OrderRecord
from streams.channels import adapt
from streams.channels.base import (
    MAX_ERRORS_READ,
    MAX_SCALAR_CHARS,
    AdapterError,
    bounded_extras,
    parse_time,
    to_decimal,
    to_int,
)
from streams.channels.taobao import adapter as taobao_adapter
from streams.messages import DlqReason, EventKind, OperatorAction, OrderState, WmsEvent
from streams.models import MAX_CODE_CHARS, MAX_ORDER_LINES, Address, Buyer
from streams.parse import parse_or_none
from streams.regions import MAX_NAME_CHARS, MAX_SUFFIXES, province_code
from web.views import order_view, render_order

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "payloads"
HOSTILE_STATE = "x" + "shi" * 300_000  # 900 kB: 9.2 s of the event loop before the fix


class Spy:
    """Stands in for a compiled pattern or a function: records the length of every text it
    is given and returns the text unchanged, so the old unbounded code fails fast."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def sub(self, _repl: Any, text: str, *_: Any) -> str:
        self.sizes.append(len(text))
        return text

    def __call__(self, text: str, *_: Any) -> str:
        self.sizes.append(len(text))
        return text


def taobao_with(**fields: Any) -> bytes:
    payload = orjson.loads((SAMPLES / "taobao.json").read_bytes())
    payload.update(fields)
    return orjson.dumps(payload)


# --- item 5: province names -----------------------------------------------------------------


def test_a_hostile_province_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    fold = Spy()
    monkeypatch.setattr(streams.regions, "_fold", fold)
    assert province_code(HOSTILE_STATE) == ""
    assert province_code("浙江省", "C" * 1_000_000) == ""  # an own-channel country as long
    assert all(size <= MAX_NAME_CHARS for size in fold.sizes), max(fold.sizes)


def test_suffixes_are_stripped_a_bounded_number_of_times() -> None:
    """One suffix per pass, at most MAX_SUFFIXES passes: the loop that ran 300,000 times."""
    value = "x" + "shi" * 20
    stripped = streams.regions._strip_suffix(value, streams.regions._EN_SUFFIXES)
    assert stripped == "x" + "shi" * (20 - MAX_SUFFIXES)
    assert province_code("Guangxi Zhuangzu Zizhiqu") == "GX"  # the two real suffixes still go
    assert province_code("Xinjiang Uyghur Autonomous Region") == "XJ"
    assert province_code("新疆维吾尔自治区") == "XJ" and province_code("Shanghai Shi") == "SH"


@pytest.mark.timeout(60)  # backstop only: this took 9.2 s before the fix
def test_taobao_payload_with_a_hostile_province_maps_with_bounded_lookups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookup = Spy()
    monkeypatch.setattr(streams.regions, "_lookup", lookup)
    order = adapt("taobao", taobao_with(receiver_state=HOSTILE_STATE))
    assert order.address.province_code == ""  # unknown, as any unrecognised province
    assert len(order.address.province) <= 2000
    assert all(size <= MAX_NAME_CHARS for size in lookup.sizes), max(lookup.sizes)


# --- item 5: the rest of its kind in the adapters ------------------------------------------


def test_too_many_lines_are_refused_before_any_line_is_mapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """9,000 sub-orders (837 kB) cost 0.9 s of mapping before the order's 500-line bound."""
    payload = orjson.loads((SAMPLES / "taobao.json").read_bytes())
    orders = payload["orders"]
    subs = orders["order"] if isinstance(orders, dict) else orders
    keep = ("oid", "num", "price", "outer_sku_id", "total_fee")
    many = [{**{k: subs[0][k] for k in keep if k in subs[0]}, "oid": str(i)} for i in range(9000)]
    if isinstance(orders, dict):
        orders["order"] = many
    else:
        payload["orders"] = many
    mapped = []
    real = taobao_adapter.quantity_at
    monkeypatch.setattr(
        taobao_adapter, "quantity_at", lambda *a, **k: mapped.append(1) or real(*a, **k)
    )
    data = orjson.dumps(payload)
    assert len(data) < 1_000_000  # under the payload limit: only the line bound refuses it
    with pytest.raises(AdapterError) as refused:
        adapt("taobao", data)
    assert refused.value.reason is DlqReason.INVALID_FIELD
    assert f"more than {MAX_ORDER_LINES} items" in refused.value.detail
    assert mapped == []


@pytest.mark.parametrize(
    "parse", [lambda v: to_decimal(v, "f"), lambda v: to_int(v, "f"), lambda v: parse_time(v, "f")]
)
def test_numbers_and_times_longer_than_any_real_one_are_refused_unread(parse: Any) -> None:
    for value in ("9" * 900_000, "2024-06-18T10:15:00" + "0" * 900_000):
        with pytest.raises(AdapterError, match=f"longer than {MAX_SCALAR_CHARS} characters"):
            parse(value)
    assert to_decimal("12.50", "f") == Decimal("12.50") and to_int(" 7 ", "f") == 7


def test_an_extra_field_with_a_huge_name_stays_on_the_raw_topic() -> None:
    name = "k" * 400_000
    kept = bounded_extras({name: 1, "status": "TRADE_FINISHED"})
    assert kept["status"] == "TRADE_FINISHED" and name not in kept
    (label,) = kept["omitted"]
    assert len(label) <= MAX_CODE_CHARS and label.startswith("kkk")
    order = adapt("taobao", taobao_with(**{name: 1}))
    assert all(len(key) <= MAX_CODE_CHARS for key in order.raw)
    assert all(len(key) <= MAX_CODE_CHARS for key in order.raw.get("omitted", {}))


# --- item 6: masking --------------------------------------------------------------------------


@pytest.fixture
def pattern_spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, Spy]:
    spies = {}
    for module, names in (
        (core.privacy, ("_QUOTED", "EMAIL_PATTERN", "_DIGITS")),
        (core.logs, ("MOBILE_PATTERN", "EMAIL_PATTERN", "KEY_VALUE_PATTERN", "mask_secrets")),
    ):
        for name in names:
            spy = spies[f"{module.__name__}.{name}"] = Spy()
            monkeypatch.setattr(module, name, spy)
    return spies


HOSTILE_TEXTS = [
    "a" * 1_000_000,  # one run without '@': quadratic in the old e-mail pattern
    "x." * 500_000,
    "name=" + "b" * 999_995,
    ("1-" * 300_000) + "@",
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=["run", "dots", "key", "digits"])
def test_every_mask_pattern_is_given_at_most_the_clip(
    pattern_spies: dict[str, Spy], text: str
) -> None:
    mask_personal(text)
    scrub_free_text(text)
    for name, spy in pattern_spies.items():
        assert spy.sizes, name
        assert max(spy.sizes) <= MAX_MASKED_CHARS + 64, (name, max(spy.sizes))


@pytest.mark.timeout(60)  # backstop only: 40 kB cost 6 s before the fix, 1 MB about an hour
@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=["run", "dots", "key", "digits"])
def test_masking_hostile_text_is_bounded_and_still_masks(text: str) -> None:
    masked = mask_personal(text + " mail lin.wei@example.com, phone 13812345678")
    assert len(masked) <= MAX_MASKED_CHARS + 64
    assert "lin.wei@example.com" not in masked and "13812345678" not in masked
    scrubbed = scrub_free_text("reach me at nana@example.org " + text)
    assert len(scrubbed) <= MAX_MASKED_CHARS + 64 and "nana@example.org" not in scrubbed


def test_email_pattern_matches_what_it_did() -> None:
    pattern = core.privacy.EMAIL_PATTERN
    found = [m.group(0) for m in pattern.finditer("to a.b@c.d, (x@y) <p+q@r.s> a@@b z@ @w")]
    assert found == ["a.b@c.d", "x@y", "p+q@r.s"]
    old = re.compile(r"[^\s@'\"<>()\[\],;:]+@[^\s@'\"<>()\[\],;:]+")
    for text in ("a@b@c", "@@x@y", "name=li@x.cn;", "'q@r' \"s@t\" u@v-w.x"):
        assert pattern.findall(text) == old.findall(text), text


def test_the_log_filter_clips_what_it_masks() -> None:
    buffer = io.StringIO()
    handler = setup_logging("text", "info", component="test", stream=buffer)
    try:
        log = logging.getLogger("oms.test.hostile")
        log.error("bad record: %s", "k" * 1_000_000 + " lin.wei@example.com")
    finally:
        logging.getLogger().removeHandler(handler)
    out = buffer.getvalue()
    assert len(out) <= MAX_MASKED_CHARS + 200
    assert "lin.wei@example.com" not in out and "chars cut" in out
    assert isinstance(handler.filters[0], MaskPersonalData)


# --- item 6: what is logged about an unparseable record ---------------------------------------

WMS = {
    "event_id": "W1",
    "command_id": "C1",
    "order_id": "O1",
    "kind": "shipped",
    "warehouse": "WH1",
    "at": "2026-11-11T00:00:00Z",
}


@pytest.mark.parametrize(
    "extra",
    [
        {"k" * 1_000_000: 1},  # a 1 MB unknown field name: quoted whole before the fix
        {f"k{i}": 1 for i in range(90_000)},  # 90,000 errors
        {"detail": "张三 13812345678 " * 50_000},  # a value: never quoted
    ],
    ids=["huge-name", "many-errors", "huge-value"],
)
def test_an_unparseable_record_is_logged_in_a_bounded_line(
    caplog: pytest.LogCaptureFixture, extra: dict[str, Any]
) -> None:
    with caplog.at_level(logging.ERROR, logger="streams.parse"):
        assert parse_or_none(WmsEvent, orjson.dumps({**WMS, **extra}), "oms.wms.events") is None
    (record,) = caplog.records
    message = record.getMessage()
    assert len(message) <= 1000, len(message)
    assert "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk" not in message
    assert "13812345678" not in message and "张三" not in message
    assert "unparseable record on oms.wms.events" in message


def test_many_errors_are_counted_not_listed(caplog: pytest.LogCaptureFixture) -> None:
    extra = {f"k{i}": 1 for i in range(MAX_ERRORS_READ + 1)}
    with caplog.at_level(logging.ERROR, logger="streams.parse"):
        parse_or_none(OperatorAction, orjson.dumps({**WMS, **extra}), "oms.operator")
    assert "too many to list" in caplog.records[0].getMessage()


# --- item 11: the order view ------------------------------------------------------------------

NICK, PHONE, EMAIL, NAME = "tb_nana_1988", "13912345678", "nana.private@example.org", "欧阳娜娜"


def held_record() -> OrderRecord:
    order = adapt("taobao", (SAMPLES / "taobao.json").read_bytes())
    order = order.model_copy(
        update={
            "buyer": Buyer(id=NICK, name=NICK, phone=PHONE),
            "address": order.address.model_copy(update={"name": NAME, "phone": PHONE}),
            "buyer_remark": f"please call {PHONE} or {EMAIL}, ask for {NAME}",
            "seller_remark": f"VIP {NICK}",
        }
    )
    at = datetime(2026, 11, 11, tzinfo=UTC)
    return OrderRecord(
        order_id=order.order_id,
        state=OrderState.HELD,
        order=order,
        fingerprint=order.fingerprint(),
        hold_reason="remark_review",
        ship_to=Address(province="浙江省", province_code="ZJ", street="文三路 9 号", name=NAME),
        history=[
            HistoryEntry(seq=0, event_id="E0", kind=EventKind.RECEIVED, at=at),
            HistoryEntry(
                seq=1,
                event_id="E1",
                kind=EventKind.RETURN_REQUESTED,
                reason=f"buyer {EMAIL} says broken, call {PHONE}",
                at=at,
            ),
        ],
    )


def test_the_order_view_shows_no_buyer_id_nick_remark_phone_or_email() -> None:
    """What every role sees through GET /orders/* and ./oms orders show."""
    view = order_view((held_record(), {"status": "none", "allocations": []}))
    shown = orjson.dumps(view).decode() + render_order(view)
    for secret in (NICK, PHONE, EMAIL, NAME, "文三路"):
        assert secret not in shown, secret
    assert view["order"]["buyer"]["id"] == mask_id(NICK)
    assert view["order"]["buyer_remark"] == "please call 1** or <email>, ask for 欧**"
    revealed = orjson.dumps(
        order_view((held_record(), {"status": "none", "allocations": []}), reveal=True)
    ).decode()
    assert NICK in revealed and PHONE in revealed  # --reveal still shows them
